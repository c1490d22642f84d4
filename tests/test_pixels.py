"""The tensor image path: decoding, the batched pipeline against CLIP's image processor, seeded augmentation,
the collator and trainer wiring, the builder's training-resolution images, and an exact resume after SIGKILL."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessorPil

from slip_hf.graph_batching import NodeGraph, SlipDataCollator
from slip_hf.pixels import PixelPipeline, decode_image, draw_crop_box
from slip_hf.processing import NodeTransform, RandomResizedCropFlip

ROOT = Path(__file__).resolve().parents[1]


def _photo(height: int, width: int, seed: int = 0) -> Image.Image:
    """A smooth random picture (what product photos are like at the pixel level), plus a little noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 255, (height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8))
    pixels = np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.int16) + rng.integers(-6, 7, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


ODD_IMAGES = [
    _photo(256, 256), _photo(300, 201, 1), _photo(37, 50, 2).convert("L"), _photo(120, 90, 3).convert("RGBA"),
    _photo(64, 64, 4).convert("P"), _photo(7, 5, 5), _photo(333, 500, 6), _photo(224, 224, 7).convert("CMYK"),
]


@pytest.mark.parametrize("processor", [
    CLIPImageProcessorPil(),  # openai/clip-vit-base-patch16's settings
    CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3),
    CLIPImageProcessorPil(size={"height": 48, "width": 64}, do_center_crop=False),
], ids=["vit-b-16", "small-crop", "fixed-size"])
def test_pipeline_matches_the_clip_image_processor_on_odd_images(processor):
    pipeline = PixelPipeline.from_image_processor(processor)
    for image in ODD_IMAGES:
        expected = processor(images=[image], return_tensors="pt")["pixel_values"][0]
        got = pipeline([decode_image(image)])[0]
        assert got.shape == expected.shape, (image.mode, image.size)
        difference = (got - expected).abs()
        # PIL rounds the resized image to uint8, torch keeps floats: ~1/255 on average, a few steps at sharp edges
        step = 1 / 255 / min(processor.image_std)
        assert difference.mean() < 0.5 * step and difference.max() < 8 * step, (image.mode, image.size)


def test_both_image_paths_draw_one_kind_of_crop_and_flip():
    """One augmentation definition: the processor path's `RandomResizedCropFlip` crops and flips the box that
    `draw_crop_box` draws for the tensor path from the same generator, and the two paths then give the same
    pixels to resize rounding."""
    import random

    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipeline = PixelPipeline.from_image_processor(processor)
    image = _photo(48, 64, 9)
    flips, sides = 0, set()
    for seed in range(12):
        random.seed(seed)
        box = draw_crop_box(np.random.default_rng(random.getrandbits(64)), 48, 64)
        random.seed(seed)
        cropped = RandomResizedCropFlip()(image)
        expected = image.crop((box.left, box.top, box.left + box.side, box.top + box.side))
        expected = expected.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if box.flip else expected
        assert np.array_equal(np.asarray(cropped), np.asarray(expected)), seed
        by_processor = processor(images=[cropped], return_tensors="pt")["pixel_values"][0]
        by_tensor = pipeline._normalize(pipeline._crop_one(decode_image(image), box)[None].float())[0]
        step = 1 / 255 / min(processor.image_std)
        assert (by_processor - by_tensor).abs().mean() < 0.5 * step, seed
        flips += box.flip
        sides.add(box.side)
    assert 0 < flips < 12 and len(sides) > 3  # random flips and crops of several sizes


def test_mixed_sizes_are_grouped_and_keep_their_order():
    pipeline = PixelPipeline.from_image_processor(CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    images = [decode_image(image) for image in ODD_IMAGES[:4]]
    together = pipeline(images)
    one_by_one = torch.cat([pipeline([image]) for image in images])
    assert together.shape == (4, 3, 32, 32) and torch.allclose(together, one_by_one, atol=1e-5)
    stacked = pipeline(torch.stack([decode_image(_photo(40, 40, s)) for s in range(3)]))
    assert stacked.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="uint8"):
        pipeline([torch.zeros(3, 8, 8)])


def test_augmentation_is_a_function_of_seed_epoch_and_key_only():
    pipeline = PixelPipeline.from_image_processor(CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}), augment=True, seed=7)
    images = torch.stack([decode_image(_photo(48, 48, s)) for s in range(6)])
    keys = [10, 11, 12, 13, 14, 15]
    first = pipeline(images, keys=keys, epoch=3)
    # the same sample gets the same crop whatever the batch around it, its position or the process
    reordered = pipeline(images[[5, 0, 3]], keys=[15, 10, 13], epoch=3)
    assert torch.equal(reordered, first[[5, 0, 3]])
    assert not torch.equal(pipeline(images, keys=keys, epoch=4), first)  # another epoch, other crops
    plain = PixelPipeline.from_image_processor(CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}))
    assert not torch.allclose(first, plain(images), atol=1e-3)
    # the flip is drawn after the crop: always flipping gives the mirror image of never flipping
    always, never = (dataclasses.replace(pipeline, flip_probability=p) for p in (1.0, 0.0))
    assert torch.equal(always(images, keys=keys, epoch=3), never(images, keys=keys, epoch=3).flip(-1))
    flips = [bool(torch.equal(first[i], always(images[i : i + 1], keys=[k], epoch=3)[0])) for i, k in enumerate(keys)]
    assert any(flips) and not all(flips)  # probability 0.5: some of the six are flipped, some not
    with pytest.raises(ValueError, match="one key per image"):
        pipeline(images)


@pytest.mark.parametrize("size, crop", [(256, 224), (64, 32), (40, 48)], ids=["vit-b-16", "down", "up"])
def test_batched_augmentation_equals_the_per_sample_crops(size, crop):
    """The whole batch's crops as one pair of matrix products give the per-sample path's pixels within float
    rounding (against the float per-sample resize) and within PIL-style uint8 rounding (the CPU's path)."""
    from slip_hf.pixels import resampling_matrices

    pipeline = PixelPipeline(shortest_edge=crop, crop_size=(crop, crop), augment=True, seed=5)
    images = torch.stack([decode_image(_photo(size, size, s)) for s in range(12)])
    keys = list(range(100, 112))
    batched = dataclasses.replace(pipeline, batched=True)(images, keys=keys, epoch=3)
    per_sample = dataclasses.replace(pipeline, batched=False)(images, keys=keys, epoch=3)
    boxes = [pipeline.draw_crop(key, 3, size, size) for key in keys]
    assert any(box.flip for box in boxes) and not all(box.flip for box in boxes) and len({box.side for box in boxes}) > 1
    float_per_sample = pipeline._normalize(torch.stack([pipeline._crop_one(image.float(), box) for image, box in zip(images, boxes)]))
    step = 1 / 255 / min(pipeline.image_std)
    assert (batched - float_per_sample).abs().max() < 0.02 * step
    difference = (batched - per_sample).abs()
    assert difference.mean() < 0.5 * step and difference.max() < 8 * step
    # one matrix is one crop: the identity window gives the identity, a flip reverses it
    eye = resampling_matrices(torch.tensor([0, 0]), torch.tensor([8, 8]), 8, 8, flip=torch.tensor([False, True]))
    assert torch.allclose(eye[0], torch.eye(8), atol=1e-6) and torch.allclose(eye[1], torch.eye(8).flip(0), atol=1e-6)


def test_node_transform_decodes_only_and_names_a_corrupt_row(tokenizer):
    transform = NodeTransform(None, tokenizer, max_length=16, label_column=None, decode_only=True)
    out = transform({"node_id": [4, 5], "title": ["red mouse", "blue case"], "image": [_photo(20, 30), _photo(30, 20).convert("L")]})
    assert [tuple(image.shape) for image in out["images"]] == [(3, 20, 30), (3, 30, 20)]
    assert all(image.dtype == torch.uint8 for image in out["images"]) and "pixel_values" not in out
    with pytest.raises(ValueError, match="node 9: image cannot be decoded"):
        transform({"node_id": [9], "title": ["x"], "image": [Path("/nonexistent/image.jpg")]})
    with pytest.raises(ValueError, match="decode_only"):
        NodeTransform(None, tokenizer, decode_only=True, image_augmentation=lambda image: image)


def test_collator_stacks_equal_sizes_and_defers_pixel_preparers():
    class NeedsPixels:
        needs_pixels = True

        def __call__(self, batch, rows):
            raise AssertionError("must run after the pixel pipeline")

    class TextOnly:
        needs_pixels = False

        def __call__(self, batch, rows):
            batch["text_lengths"] = torch.tensor([len(row["text"]) for row in rows])

    def row(node, size):
        return {"node_id": node, "images": torch.zeros(3, *size, dtype=torch.uint8), "input_ids": [0, 1], "text": f"item {node}"}

    collate = SlipDataCollator(NodeGraph.from_edges([0], [1], 3), preparers=[NeedsPixels(), TextOnly()])
    batch = collate([row(0, (8, 8)), row(1, (8, 8))])
    assert batch["images"].shape == (2, 3, 8, 8) and batch["text"] == ["item 0", "item 1"]
    assert batch["text_lengths"].tolist() == [6, 6] and "pixel_values" not in batch
    mixed = collate([row(0, (8, 8)), row(2, (6, 9))])
    assert isinstance(mixed["images"], list) and [tuple(i.shape) for i in mixed["images"]] == [(3, 8, 8), (3, 6, 9)]


def test_trained_model_scores_the_same_through_either_path(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.data.hub import load_copurchase_graph
    from slip_hf.embedding import load_dual_encoder
    from slip_hf.evaluation import EvaluationConfig, evaluate_checkpoint
    from slip_hf.experiment import parse_arguments, run_experiment

    model_args, data_args, training_args = parse_arguments([
        "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir), "--output_dir", str(tmp_path),
        "--per_device_train_batch_size", "32", "--max_steps", "8", "--eval_strategy", "no", "--save_strategy", "no",
        "--learning_rate", "1e-3", "--graph_hidden_size", "32", "--max_text_length", "24", "--test_split", "",
        "--report_to", "none", "--disable_tqdm", "True", "--image_pipeline", "tensor",
    ])
    run_experiment(model_args, data_args, training_args)
    model, processor, tokenizer = load_dual_encoder(str(tmp_path))
    test = load_copurchase_graph(graph_dataset_dir, "electronics").nodes["test"]
    results = {}
    for path in ("processor", "tensor"):
        config = EvaluationConfig(few_shot=(), zero_shot=False, max_text_length=24, image_pipeline=path)
        results[path], _ = evaluate_checkpoint(model.eval(), processor, tokenizer, test, config)
    assert results["tensor"]["retrieval"]["mrr"] == pytest.approx(results["processor"]["retrieval"]["mrr"], abs=0.01)


def test_builder_can_store_images_at_the_training_resolution(tmp_path):
    from slip_hf.data.images import ImageDownloader

    source = tmp_path / "wide.png"
    _photo(90, 160).save(source)
    downloader = ImageDownloader(tmp_path / "square", image_size=64, center_crop=True, num_workers=1, local_roots=[tmp_path])
    result = downloader.download([("wide", source.resolve().as_uri())])["wide"]
    with Image.open(result.path) as stored:
        assert stored.size == (64, 64)
    # a rebuild without the crop stores the image again (the crop is part of the resume key)
    again = ImageDownloader(tmp_path / "square", image_size=64, num_workers=1, local_roots=[tmp_path])
    plain = again.download([("wide", source.resolve().as_uri())])["wide"]
    with Image.open(plain.path) as stored:
        assert stored.size == (114, 64)


_KILLABLE_RUN = """
import os, signal, sys
from slip_hf.checkpoints import AtomicCheckpoints as Trainer  # the whole save, rename included
save = Trainer._save_checkpoint
def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if self.state.global_step == int(os.environ.get("KILL_AT_STEP", "-1")):
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no flush: as a pre-empted job dies
Trainer._save_checkpoint = save_then_die
from slip_hf.experiment import parse_arguments, run_experiment
model_args, data_args, training_args = parse_arguments(sys.argv[1:])
run_experiment(model_args, data_args, training_args)
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_sigkill_replays_the_same_augmented_batches(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, workers):
    def run(output_dir: Path, *extra: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
        flags = [
            "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir), "--output_dir",
            str(output_dir), "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64",
            "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy", "no",
            "--learning_rate", "1e-3", "--graph_hidden_size", "32", "--max_text_length", "24", "--few_shot", "1",
            "--report_to", "none", "--disable_tqdm", "True", "--plots", "False", "--image_pipeline", "tensor",
            "--augment", "True", "--seed", "3", "--dataloader_num_workers", str(workers), *extra,
        ]
        env = {**os.environ, "KILL_AT_STEP": str(kill_at or -1)}
        return subprocess.run([sys.executable, "-c", _KILLABLE_RUN, *flags], env=env, capture_output=True, text=True, timeout=600)

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert run(straight).returncode == 0
    killed = run(interrupted, kill_at=2)  # mid-epoch: the train split (102 nodes) makes 4 batches of <= 32
    assert killed.returncode == -9 and (interrupted / "checkpoint-2").is_dir() and not (interrupted / "test_results.json").exists()
    resumed = run(interrupted, "--resume_from_checkpoint", "True")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    first = json.loads((straight / "test_results.json").read_text())["SLIP"][0]["retrieval"]
    second = json.loads((interrupted / "test_results.json").read_text())["SLIP"][0]["retrieval"]
    assert first == second  # every metric, to the last digit
    from safetensors.torch import load_file

    weights, resumed_weights = load_file(straight / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert all(torch.equal(weights[name], resumed_weights[name]) for name in weights)
