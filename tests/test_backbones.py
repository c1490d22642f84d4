"""SLIP on every supported dual encoder (`slip_hf.backbones`), on tiny random models built from configs: SigLIP (and
fixed-resolution SigLIP 2, which is `SiglipModel`), MetaCLIP 2, and the refusals of what is not supported.

The properties pinned: SLIP with zero graph and category weights is the backbone's own loss; SigLIP's text is padded
as it was trained (and the wrong padding gives other vectors); training, resume, evaluation, export (features bit-equal
to SLIP's towers), the zero-shot pipeline, sentence-transformers, remote code and the Space work on SigLIP."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    CLIPConfig,
    MetaClip2Config,
    MetaClip2Model,
    SiglipConfig,
    SiglipModel,
)

from slip_hf import SlipConfig, SlipModel
from slip_hf.backbones import BACKBONES, backbone_for_model_type, text_tokenizer_kwargs
from slip_hf.cli import main as cli_main
from slip_hf.embedding import encode_texts
from slip_hf.experiment import parse_arguments, run_experiment
from slip_hf.interop import export_clip

LABELS = ["phone case", "usb charger", "headphones"]
TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


@pytest.fixture(scope="module")
def siglip_dir(recipe_siglip):
    """A tiny random SigLIP saved like a hub checkpoint, with SigLIP's 64 text positions and conventions."""
    return recipe_siglip


def _flags(dataset, model, output_dir, *extra):
    return ["--model_name_or_path", str(model), "--dataset_name", str(dataset), "--output_dir", str(output_dir),
            "--per_device_train_batch_size", "32", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
            "--graph_hidden_size", "32", "--few_shot", "1", "--report_to", "none", "--disable_tqdm", "True",
            "--plots", "False", "--learning_rate", "1e-3", "--logging_steps", "2", *extra]


@pytest.fixture(scope="module")
def siglip_run(graph_dataset_dir, siglip_dir, tmp_path_factory):
    """SLIP on the tiny SigLIP, 4 steps by run_experiment (checkpoints every 2), evaluated on the test split."""
    out = tmp_path_factory.mktemp("siglip_run")
    results = run_experiment(*parse_arguments(_flags(graph_dataset_dir, siglip_dir, out, "--dataloader_num_workers", "2")))
    return out, results


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((24, 20, 3)) * 255).astype("uint8")) for _ in range(4)]


def _pairs(tokenizer, config, n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    texts = [f"item {i} wireless charger pad" if i % 2 else f"red phone case {i}" for i in range(n)]
    tokens = tokenizer(texts, return_tensors="pt", **text_tokenizer_kwargs(config))
    return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"],
            "pixel_values": torch.randn(n, 3, 16, 16, generator=generator)}


# ---- which dual encoders -----------------------------------------------------------------------------------------

def test_an_unsupported_model_type_is_one_line_that_names_the_supported_ones(tmp_path):
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError) as error:
        SlipModel.from_dual_encoder(str(tmp_path / "bert"))
    message = str(error.value)
    assert "\n" not in message and "'bert' is not a dual encoder" in message
    assert all(name in message for name in ("clip", "metaclip_2", "siglip", "CLIPModel", "SiglipModel", "MetaClip2Model"))


def test_naflex_siglip2_is_refused_in_one_line_naming_the_fixed_resolution_checkpoints(tmp_path):
    from transformers import Siglip2Config, Siglip2Model

    Siglip2Model(Siglip2Config(text_config=TOWER, vision_config={**TOWER, "num_patches": 16, "patch_size": 4})).save_pretrained(tmp_path / "naflex")
    with pytest.raises(ValueError) as error:
        SlipModel.from_dual_encoder(str(tmp_path / "naflex"))
    message = str(error.value)
    assert "\n" not in message and "NaFlex" in message and "google/siglip2-base-patch16-224" in message


def test_a_slip_checkpoint_given_as_dual_encoder_says_to_use_from_pretrained(slip_model, tmp_path):
    slip_model.save_pretrained(tmp_path / "slip")
    with pytest.raises(ValueError, match="SLIP model already: load it with SlipModel.from_pretrained"):
        SlipModel.from_dual_encoder(str(tmp_path / "slip"))


def test_a_dual_encoder_folder_given_to_from_pretrained_says_to_use_from_dual_encoder(siglip_dir):
    with pytest.raises(ValueError, match="holds a `siglip` model, not a SLIP model: start SLIP from it with") as error:
        SlipModel.from_pretrained(siglip_dir)
    assert "\n" not in str(error.value)


def test_every_family_names_its_classes_and_its_padding_rule():
    assert backbone_for_model_type("siglip") is BACKBONES["siglip"] and backbone_for_model_type("metaclip_2") is BACKBONES["clip"]
    siglip = SiglipConfig(text_config=TOWER, vision_config=TOWER)
    assert BACKBONES["siglip"].tokenizer_kwargs(siglip) == {"padding": "max_length", "truncation": True, "max_length": 64}
    assert BACKBONES["clip"].tokenizer_kwargs(CLIPConfig())["padding"] == "longest"
    assert SlipConfig(clip_config=siglip).projection_dim == 32 and SlipConfig(clip_config=siglip).backbone.base_loss == "sigmoid"
    # the structural loss takes the backbone's form unless told otherwise
    assert SlipConfig(clip_config=siglip).resolved_graph_loss_form == "sigmoid"
    assert SlipConfig().resolved_graph_loss_form == "infonce"
    assert SlipConfig(clip_config=siglip, graph_loss_form="infonce").resolved_graph_loss_form == "infonce"


# ---- the base loss follows the backbone --------------------------------------------------------------------------

def test_slip_on_siglip_with_zero_graph_and_aux_weights_is_siglips_own_loss(siglip_dir):
    tokenizer = AutoTokenizer.from_pretrained(siglip_dir)
    siglip = SiglipModel.from_pretrained(siglip_dir)
    slip = SlipModel.from_dual_encoder(siglip_dir, lambda_graph=0.0, lambda_aux=0.0)
    inputs = _pairs(tokenizer, slip.config)
    expected = siglip(**inputs, return_loss=True).loss
    output = slip(**inputs, edge_index=torch.tensor([[0, 2], [1, 3]]), return_loss=True)
    torch.testing.assert_close(output.loss, expected, rtol=1e-6, atol=1e-6)  # the same math, reductions ordered alike
    torch.testing.assert_close(output.logits_per_text, siglip(**inputs).logits_per_text, rtol=1e-6, atol=1e-5)
    expected.backward()
    output.loss.backward()
    for (name, theirs), ours in zip(siglip.named_parameters(), slip.clip.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_metaclip2_is_wrapped_in_its_own_class_with_clips_loss(tmp_path):
    text = {**TOWER, "vocab_size": 64, "max_position_embeddings": 8, "bos_token_id": 0, "eos_token_id": 1}
    torch.manual_seed(0)
    MetaClip2Model(MetaClip2Config(text_config=text, vision_config={**TOWER, "image_size": 16, "patch_size": 4},
                                   projection_dim=16)).save_pretrained(tmp_path / "metaclip2")
    reference = MetaClip2Model.from_pretrained(tmp_path / "metaclip2")
    slip = SlipModel.from_dual_encoder(str(tmp_path / "metaclip2"), lambda_graph=0.0, lambda_aux=0.0)
    assert type(slip.clip) is MetaClip2Model and slip.config.backbone.family == "clip"
    input_ids = torch.randint(2, 64, (5, 7))
    input_ids[:, -1] = 1
    inputs = {"input_ids": input_ids, "pixel_values": torch.randn(5, 3, 16, 16)}
    torch.testing.assert_close(slip(**inputs, return_loss=True).loss, reference(**inputs, return_loss=True).loss)


def test_the_sigmoid_structural_loss_has_a_loss_without_edges_and_learns_its_bias(siglip_dir):
    slip = SlipModel.from_dual_encoder(siglip_dir, graph_loss_form="sigmoid", lambda_aux=0.0)
    inputs = _pairs(AutoTokenizer.from_pretrained(siglip_dir), slip.config)
    without_edges = slip(**inputs, return_loss=True)
    assert torch.isfinite(without_edges.loss_graph) and without_edges.loss_graph > 0  # every pair a negative
    with_edges = slip(**inputs, edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), return_loss=True)
    assert with_edges.loss_graph > without_edges.loss_graph  # neighbours, far apart at random init, now cost
    with_edges.loss.backward()
    assert slip.graph_logit_bias.grad is not None and slip.graph_logit_bias.grad != 0


# ---- text as the backbone was trained ----------------------------------------------------------------------------

def test_a_siglip_title_padded_to_the_longest_text_gives_another_vector(siglip_dir):
    model = SiglipModel.from_pretrained(siglip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(siglip_dir)
    titles = ["usb-c charger", "braided usb-c to lightning cable, 2 m, fast charging"]
    ours = encode_texts(model, tokenizer, titles)  # padded to 64, as SigLIP was trained
    with torch.no_grad():
        longest = tokenizer(titles, padding=True, truncation=True, max_length=64, return_tensors="pt")
        assert longest["input_ids"].size(1) < 64
        longest = model.get_text_features(**longest).pooler_output
        full = tokenizer(titles, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
        full = model.get_text_features(**full).pooler_output
    torch.testing.assert_close(ours, torch.nn.functional.normalize(full, dim=-1))
    cosine = torch.nn.functional.cosine_similarity(longest[0], full[0], dim=0)
    assert cosine < 0.99, cosine  # the short title, padded to the longer one's length, is another vector


def test_a_clip_title_gives_the_same_vector_whatever_the_padding(recipe_clip):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(recipe_clip).eval()
    tokenizer = AutoTokenizer.from_pretrained(recipe_clip)
    titles = ["usb-c charger", "braided usb-c to lightning cable, 2 m, fast charging"]
    with torch.no_grad():
        longest = model.get_text_features(**tokenizer(titles, padding=True, return_tensors="pt")).pooler_output
        full = model.get_text_features(**tokenizer(titles, padding="max_length", max_length=77, return_tensors="pt")).pooler_output
    torch.testing.assert_close(longest, full, rtol=1e-5, atol=1e-6)  # end-token pooling, causal mask


def test_a_siglip_text_length_other_than_its_positions_is_refused(graph_dataset_dir, siglip_dir, tmp_path):
    args = parse_arguments(_flags(graph_dataset_dir, siglip_dir, tmp_path, "--max_text_length", "32"))
    with pytest.raises(ValueError, match="trained on texts padded to its 64 positions") as error:
        run_experiment(*args)
    assert "\n" not in str(error.value)


def test_a_tokenizer_with_another_vocabulary_is_refused(siglip_dir, recipe_clip):
    clip_tokenizer = AutoTokenizer.from_pretrained(recipe_clip)
    config = SiglipConfig(text_config={**TOWER, "vocab_size": 100}, vision_config=TOWER)
    with pytest.raises(ValueError, match="do not belong together"):
        BACKBONES["siglip"].check_tokenizer(clip_tokenizer, config)


# ---- objectives on every family ----------------------------------------------------------------------------------

def test_structxlip_local_is_refused_on_siglip_and_its_other_losses_run(siglip_dir):
    siglip = SiglipConfig(text_config=TOWER, vision_config=TOWER)
    with pytest.raises(Exception, match="a siglip backbone cannot do: set it to 0"):
        SlipConfig(clip_config=siglip, lambda_structxlip_local=0.1)
    slip = SlipModel.from_dual_encoder(siglip_dir, lambda_structxlip_global=0.5, lambda_structxlip_consistency=0.05)
    inputs = _pairs(AutoTokenizer.from_pretrained(siglip_dir), slip.config, n=4)
    structure = {"edge_pixel_values": torch.randn(4, 3, 16, 16), "edge_mask": torch.ones(4, dtype=torch.bool),
                 "edge_region_mask": torch.ones(4, 4, dtype=torch.bool), "structure_input_ids": inputs["input_ids"],
                 "structure_attention_mask": inputs["attention_mask"],
                 "structure_chunk_mask": torch.zeros(4, 1, 64, dtype=torch.bool), "structure_text_mask": torch.ones(4, dtype=torch.bool)}
    output = slip(**inputs, **structure, return_loss=True)
    assert output.loss_structxlip_global > 0 and output.loss_structxlip_consistency > 0


# ---- everything downstream on SigLIP -----------------------------------------------------------------------------

def test_slip_on_siglip_trains_with_data_workers_saves_and_evaluates(siglip_run):
    out, results = siglip_run
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "slip" and config["clip_config"]["model_type"] == "siglip"
    model = SlipModel.from_pretrained(out)
    assert type(model.clip) is SiglipModel
    assert 0 < results["test"]["retrieval"]["mrr"] <= 1 and "related_items" in results["test"]
    losses = [entry for entry in results["log_history"] if "loss_clip" in entry]
    assert losses and all(entry["loss_graph"] > 0 for entry in losses)
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()


def test_slip_on_siglip_resumes_to_the_uninterrupted_weights(graph_dataset_dir, siglip_dir, siglip_run, tmp_path):
    import shutil

    from safetensors.torch import load_file

    uninterrupted, _ = siglip_run
    # a run stopped after its step-2 checkpoint: the same schedule (4 steps) resumes from it with two data workers
    shutil.copytree(uninterrupted / "checkpoint-2", tmp_path / "checkpoint-2")
    resume = parse_arguments(_flags(graph_dataset_dir, siglip_dir, tmp_path, "--resume_from_checkpoint", "True",
                                    "--dataloader_num_workers", "2"))
    resume[1].test_split = ""
    results = run_experiment(*resume)
    assert [entry["step"] for entry in results["log_history"] if "loss" in entry] == [2, 4]
    resumed, whole = load_file(str(tmp_path / "model.safetensors")), load_file(str(uninterrupted / "model.safetensors"))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_the_siglip_export_is_a_siglip_model_with_slips_features_bit_for_bit(siglip_run, images, tmp_path):
    from transformers import AutoImageProcessor, SiglipProcessor

    out, _ = siglip_run
    export = export_clip(out, tmp_path / "slip-siglip")
    assert json.loads((export.out_dir / "config.json").read_text())["model_type"] == "siglip"
    siglip, processor = SiglipModel.from_pretrained(export.out_dir).eval(), SiglipProcessor.from_pretrained(export.out_dir)
    slip = SlipModel.from_pretrained(out).eval()
    tokens = AutoTokenizer.from_pretrained(out)(LABELS, return_tensors="pt", **text_tokenizer_kwargs(slip.config))
    pixels = AutoImageProcessor.from_pretrained(out)(images=images, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(siglip.get_text_features(**tokens).pooler_output, slip.get_text_features(**tokens).pooler_output)
        assert torch.equal(siglip.get_image_features(**pixels).pooler_output, slip.get_image_features(**pixels).pooler_output)
    assert type(processor).__name__ == "SiglipProcessor"
    card = (export.out_dir / "README.md").read_text()
    assert "SiglipModel.from_pretrained" in card and 'padding="max_length", max_length=64' in card


def test_the_zero_shot_pipeline_and_sentence_transformers_load_the_siglip_export(siglip_run, images, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline

    from slip_hf.embedding import encode_images

    out, _ = siglip_run
    export = export_clip(out, tmp_path / "slip-siglip")
    siglip = SiglipModel.from_pretrained(export.out_dir).eval()
    classify = pipeline("zero-shot-image-classification", model=str(export.out_dir), device="cpu")
    prompts = [f"This is a photo of {label}." for label in LABELS]  # the pipeline's template
    from transformers import AutoImageProcessor

    image_embeds = encode_images(siglip, AutoImageProcessor.from_pretrained(export.out_dir), images)
    text_embeds = encode_texts(siglip, AutoTokenizer.from_pretrained(export.out_dir), prompts)
    logits = image_embeds @ text_embeds.T * siglip.logit_scale.exp() + siglip.logit_bias
    for image, expected in zip(images, torch.sigmoid(logits.detach())):
        scores = {entry["label"]: entry["score"] for entry in classify(image, candidate_labels=LABELS)}
        assert np.allclose([scores[label] for label in LABELS], expected.numpy(), rtol=1e-4, atol=1e-6)
    model = SentenceTransformer(str(export.out_dir), device="cpu")
    encoded = model.encode(prompts, convert_to_tensor=True)
    torch.testing.assert_close(torch.nn.functional.normalize(encoded, dim=-1), text_embeds, rtol=1e-5, atol=1e-6)


def test_the_siglip_slip_model_loads_through_remote_code_without_slip_hf(siglip_run, tmp_path):
    from safetensors.torch import load_file
    from test_interop import _remote_load

    out, _ = siglip_run
    inputs = {"input_ids": torch.randint(3, 200, (5, 64)), "pixel_values": torch.randn(5, 3, 16, 16),
              "edge_index": torch.tensor([[0, 1, 3], [1, 2, 4]]), "labels": torch.tensor([0, 1, 2, 0, 1])}
    done = _remote_load(out, inputs, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    remote = load_file(str(tmp_path / "out.safetensors"))
    with torch.no_grad():
        local = SlipModel.from_pretrained(out).eval()(**inputs, return_loss=True)
    assert torch.equal(remote["z"], local.node_embeds) and torch.equal(remote["loss"], local.loss)


def test_the_space_serves_a_siglip_model_and_evaluates_it_from_the_cli(siglip_run, graph_dataset_dir, tmp_path, capsys):
    from slip_hf.space import load_space

    out, _ = siglip_run
    page = load_space([str(out)], str(graph_dataset_dir), split="all", cache_dir=tmp_path / "cache")
    index = page.indexes[0]
    query = page.catalog.titles[0]
    torch.testing.assert_close(index.encode_text(query), encode_texts(index.model, index.tokenizer, [query])[0])
    status, *_ = page.search_text(query)
    assert status.startswith("Images for")
    assert cli_main(["evaluate", "--model_name_or_path", str(out), "--dataset_name", str(graph_dataset_dir),
                     "--output_dir", str(tmp_path / "eval"), "--few_shot", "1"]) == 0
    assert cli_main(["leaderboard", str(out), "--output_dir", str(tmp_path / "board")]) == 0


def test_a_slip_model_saved_by_0_3_0_loads_unchanged_and_computes_the_same_outputs():
    """A model saved by slip_hf 0.3.0 (CLIP only; `clip_config` and `clip.*` weights): the same config, every weight
    loaded, and the outputs 0.3.0 computed (the same operations: equal to rounding on any CPU)."""
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import CLIPModel

    folder = Path(__file__).parent / "fixtures" / "slip-0.3.0-clip"
    assert json.loads((folder / "config.json").read_text())["slip_hf_version"] == "0.3.0"
    model, info = SlipModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    assert type(model.clip) is CLIPModel and model.config.backbone.family == "clip"
    assert model.config.resolved_graph_loss_form == "infonce"  # the field 0.3.0 did not have takes 0.3.0's behaviour
    expected = load_file(str(folder / "expected_outputs.safetensors"))
    inputs = {key: expected[key] for key in ("input_ids", "pixel_values", "edge_index", "labels")}
    with torch.no_grad():
        output = model.eval()(**inputs, return_loss=True)
    for name in ("image_embeds", "text_embeds", "node_embeds"):
        torch.testing.assert_close(getattr(output, name), expected[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(output.loss.reshape(1), expected["loss"], rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_of_a_siglip_slip_model_gives_the_same_step(siglip_dir):
    inputs = None
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = SlipModel.from_dual_encoder(siglip_dir, graph_dropout=0.0, lambda_aux=0.0).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert model.clip.text_model.encoder.gradient_checkpointing and model.clip.vision_model.encoder.gradient_checkpointing
        inputs = inputs or _pairs(AutoTokenizer.from_pretrained(siglip_dir), model.config)
        loss = model(**inputs, edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), return_loss=True).loss
        loss.backward()
        results.append((loss.detach(), model.clip.vision_model.embeddings.patch_embedding.weight.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0])  # the recomputed forward is the same computation
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-7)
