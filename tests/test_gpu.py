"""What only a GPU can check: training on CUDA with bf16, data workers and the tensor image path; the GPU's loss
of a fixed batch against the CPU's; the pixel pipeline (and its batched augmentation) on CUDA against the CPU.

    python -m pytest -m gpu                               # on a machine with a GPU
    SLIP_HF_REQUIRE_GPU=1 python -m pytest -m gpu         # fail, not skip, where no GPU is found

Without CUDA they are skipped (the default test run), unless SLIP_HF_REQUIRE_GPU=1 asks for them: a GPU run that
finds no GPU then fails instead of passing on skips.
"""

import dataclasses
import json
import os

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def cuda():
    if not torch.cuda.is_available():
        if os.environ.get("SLIP_HF_REQUIRE_GPU", "") not in ("", "0"):
            pytest.fail("SLIP_HF_REQUIRE_GPU is set but torch sees no CUDA device.")
        pytest.skip("no CUDA device (python -m pytest -m gpu runs these on a GPU)")
    return torch.device("cuda")


def test_training_on_cuda_with_bf16_workers_and_the_tensor_path(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.experiment import parse_arguments, run_experiment

    args = parse_arguments([
        "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir), "--output_dir", str(tmp_path),
        "--max_steps", "4", "--per_device_train_batch_size", "32", "--graph_hidden_size", "32", "--max_text_length", "24",
        "--bf16", "True", "--dataloader_num_workers", "2", "--image_pipeline", "tensor", "--few_shot", "1",
        "--logging_steps", "1", "--report_to", "none", "--disable_tqdm", "True", "--plots", "False",
    ])
    results = run_experiment(*args)
    logged = [entry for entry in results["log_history"] if "loss" in entry]
    assert len(logged) == 4
    for entry in logged:
        for part in ("loss", "loss_clip", "loss_graph", "loss_aux"):
            assert torch.isfinite(torch.tensor(entry[part])), (part, entry)
    assert 0 < results["test"]["retrieval"]["mrr"] <= 1
    assert json.loads((tmp_path / "run_config.json").read_text())["training"]["bf16"] is True


def test_slip_on_siglip_trains_on_cuda_with_bf16(graph_dataset_dir, recipe_siglip, tmp_path):
    from slip_hf.experiment import parse_arguments, run_experiment

    args = parse_arguments([
        "--model_name_or_path", recipe_siglip, "--dataset_name", str(graph_dataset_dir), "--output_dir", str(tmp_path),
        "--max_steps", "4", "--per_device_train_batch_size", "32", "--graph_hidden_size", "32", "--bf16", "True",
        "--dataloader_num_workers", "2", "--few_shot", "1", "--logging_steps", "1", "--report_to", "none",
        "--disable_tqdm", "True", "--plots", "False",
    ])
    results = run_experiment(*args)
    logged = [entry for entry in results["log_history"] if "loss" in entry]
    assert len(logged) == 4 and all(torch.isfinite(torch.tensor(entry["loss_clip"])) for entry in logged)
    assert 0 < results["test"]["retrieval"]["mrr"] <= 1

def test_gpu_loss_of_a_fixed_batch_equals_the_cpus_to_bf16_tolerance(slip_config, model_inputs, cuda):
    from slip_hf import SlipModel

    torch.manual_seed(0)
    model = SlipModel(slip_config).eval()
    batch = {**model_inputs, "edge_index": torch.tensor([[0, 1, 3], [1, 2, 4]]), "labels": torch.tensor([0, 1, 2, 3, 0])}
    with torch.no_grad():
        cpu = model(**batch, return_loss=True)
        model.to(cuda)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            gpu = model(**{k: v.to(cuda) for k, v in batch.items()}, return_loss=True)
    for part in ("loss", "loss_clip", "loss_graph", "loss_aux"):
        value = getattr(gpu, part)
        assert value.dtype == torch.float32  # the losses compute in float32 under autocast
        torch.testing.assert_close(value.cpu(), getattr(cpu, part), rtol=2e-2, atol=2e-2)


def test_pixel_pipeline_on_cuda_matches_the_cpu(cuda):
    from slip_hf.pixels import PixelPipeline

    generator = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8, generator=generator)
    images = torch.nn.functional.interpolate(coarse.float(), size=(256, 256), mode="bilinear").round().to(torch.uint8)
    plain = PixelPipeline()
    step = 1 / 255 / min(plain.image_std)
    assert (plain(images, device=cuda).cpu() - plain(images)).abs().max() < 2 * step
    augmented = dataclasses.replace(plain, augment=True, seed=1)
    keys = list(range(16))
    on_gpu = augmented(images, keys=keys, epoch=2, device=cuda)  # batched: one pair of matrix products
    per_sample_gpu = dataclasses.replace(augmented, batched=False)(images, keys=keys, epoch=2, device=cuda)
    on_cpu = augmented(images, keys=keys, epoch=2)  # per sample, uint8
    assert (on_gpu - per_sample_gpu).abs().max() < 0.02 * step
    assert (on_gpu.cpu() - on_cpu).abs().mean() < 0.5 * step and (on_gpu.cpu() - on_cpu).abs().max() < 8 * step


def test_a_slip_training_step_makes_no_host_sync(slip_config, model_inputs, cuda):
    """With the collator's edges (`simple_edges`), forward, backward and the optimizer step never wait for the
    GPU: torch's sync debug mode turns any synchronising call (`.item()`, a data-dependent shape) into an error."""
    from slip_hf import SlipModel

    torch.manual_seed(0)
    model = SlipModel(slip_config).to(cuda)
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    batch = {**{k: v.to(cuda) for k, v in model_inputs.items()}, "edge_index": torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]], device=cuda),
             "labels": torch.tensor([0, 1, 2, 3, 0], device=cuda), "simple_edges": True}
    model(**batch, return_loss=True).loss.backward()  # warm-up: lazy initialisations may synchronise once
    optimizer.step()
    optimizer.zero_grad()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch, return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    finally:
        torch.cuda.set_sync_debug_mode("default")
