"""A trained SLIP model in the tools that speak CLIP: the plain-CLIP export in `CLIPModel`, transformers'
zero-shot pipeline and sentence-transformers (same embeddings, bit for bit); the SLIP model through remote code
in a Python that cannot import slip_hf; the dataset graph in torch_geometric's NeighborLoader."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from float_order import assert_equal_up_to_float_order
from PIL import Image

from slip_hf import SlipModel
from slip_hf.cli import main as cli_main
from slip_hf.interop import export_clip

LABELS = ["phone case", "usb charger", "headphones"]


@pytest.fixture(scope="module")
def slip_dir(graph_dataset_dir, recipe_clip, tmp_path_factory):
    """A SLIP model trained for 2 steps by run_slip.py on a tiny CLIP with CLIP's 77 text positions."""
    from slip_hf.experiment import parse_arguments, run_experiment

    clip = recipe_clip
    out = tmp_path_factory.mktemp("slip_run")
    args = parse_arguments(["--model_name_or_path", clip, "--dataset_name", str(graph_dataset_dir), "--output_dir", str(out),
                            "--max_steps", "2", "--per_device_train_batch_size", "32", "--graph_hidden_size", "32",
                            "--few_shot", "1", "--report_to", "none", "--disable_tqdm", "True", "--plots", "False"])
    run_experiment(*args)
    return out


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray((rng.random((24, 20, 3)) * 255).astype("uint8")) for _ in range(4)]


@pytest.fixture(scope="module")
def exported(slip_dir, tmp_path_factory):
    return export_clip(slip_dir, tmp_path_factory.mktemp("export") / "slip-clip", slip_repo="me/slip-electronics")


def _slip_features(slip_dir, images, texts):
    from transformers import AutoImageProcessor, AutoTokenizer

    model = SlipModel.from_pretrained(slip_dir).eval()
    tokenizer, processor = AutoTokenizer.from_pretrained(slip_dir), AutoImageProcessor.from_pretrained(slip_dir)
    with torch.no_grad():
        image = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        text = model.get_text_features(**tokenizer(texts, padding=True, return_tensors="pt")).pooler_output
    return image, text


def test_clip_export_gives_slips_embeddings_bit_for_bit(slip_dir, exported, images):
    from transformers import CLIPModel, CLIPProcessor

    assert exported.source_type == "slip" and "model.safetensors" in exported.files and "modules.json" in exported.files
    assert any("graph head" in item for item in exported.left_out)
    clip = CLIPModel.from_pretrained(exported.out_dir).eval()
    processor = CLIPProcessor.from_pretrained(exported.out_dir)
    with torch.no_grad():
        image = clip.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        text = clip.get_text_features(**processor(text=LABELS, padding=True, truncation=True, return_tensors="pt")).pooler_output
    slip_image, slip_text = _slip_features(slip_dir, images, LABELS)
    assert torch.equal(image, slip_image) and torch.equal(text, slip_text)
    card = (exported.out_dir / "README.md").read_text()
    assert "pipeline_tag: zero-shot-image-classification" in card and "base_model: me/slip-electronics" in card
    assert "same-item retrieval MRR" in card  # the SLIP run's measured numbers


def test_zero_shot_pipeline_loads_the_export_and_agrees_with_our_classifier(exported, images):
    from transformers import CLIPModel, CLIPProcessor, pipeline

    from slip_hf.embedding import encode_images, encode_texts
    from slip_hf.evaluation.classification import zero_shot_classification

    by_path = pipeline("zero-shot-image-classification", model=str(exported.out_dir), device="cpu")
    processor = CLIPProcessor.from_pretrained(exported.out_dir)
    clip = CLIPModel.from_pretrained(exported.out_dir).eval()
    with_processor = pipeline("zero-shot-image-classification", model=clip, tokenizer=processor.tokenizer,
                              image_processor=processor.image_processor, device="cpu")
    template = "This is a photo of {}."  # the pipeline's hypothesis template
    tops = [by_path(image, candidate_labels=LABELS)[0]["label"] for image in images]
    assert tops == [with_processor(image, candidate_labels=LABELS)[0]["label"] for image in images]
    ours = zero_shot_classification(
        encode_images(clip, processor.image_processor, images), [LABELS.index(top) for top in tops], LABELS,
        lambda prompts: encode_texts(clip, processor.tokenizer, prompts), templates=(template,),
    )
    assert ours["accuracy"] == 1.0  # our classifier's top label is the pipeline's on every image


def test_sentence_transformers_loads_the_export_with_the_same_embeddings(slip_dir, exported, images):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(exported.out_dir), device="cpu")
    image = model.encode(images, convert_to_tensor=True)
    text = model.encode(LABELS, convert_to_tensor=True)
    slip_image, slip_text = _slip_features(slip_dir, images, LABELS)
    assert torch.equal(image, slip_image) and torch.equal(text, slip_text)
    assert json.loads((exported.out_dir / "modules.json").read_text())[0]["type"] == "sentence_transformers.models.CLIPModel"


def test_export_of_a_knowledge_encoder_model_leaves_it_out_and_says_so(clip_config, tokenizer, tmp_path, capsys):
    from slip_hf import SlipConfig
    from slip_hf.toy import toy_image_processor

    model = SlipModel(SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, use_knowledge_encoder=True))
    model.save_pretrained(tmp_path / "ke")
    tokenizer.save_pretrained(tmp_path / "ke")
    toy_image_processor(16).save_pretrained(tmp_path / "ke")
    assert cli_main(["export", "--model_dir", str(tmp_path / "ke"), "--out_dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "left out: Structure-CLIP's knowledge encoder" in printed and "slip model" in printed
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(tmp_path / "out")
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(clip.get_image_features(pixel_values=pixels).pooler_output,
                           model.eval().get_image_features(pixel_values=pixels).pooler_output)


def test_export_of_what_is_not_a_slip_or_clip_model_is_one_line(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)).save_pretrained(tmp_path / "bert")
    assert cli_main(["export", "--model_dir", str(tmp_path / "bert"), "--out_dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "holds a `bert` model: only SLIP checkpoints and dual encoders of the supported families" in error
    assert cli_main(["export", "--model_dir", str(tmp_path / "missing"), "--out_dir", str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err


_REMOTE_LOAD = """
import sys, torch
sys.modules["slip_hf"] = None  # this Python cannot import slip_hf
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel
config = AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
with torch.no_grad():
    out = model(**load_file(sys.argv[2]), return_loss=True)
outputs = {"loss": out.loss, "z": out.node_embeds, "image": out.image_embeds, "text": out.text_embeds, "logits": out.class_logits}
save_file({k: v.contiguous() for k, v in outputs.items() if v is not None}, sys.argv[3],
          metadata={"type": type(model).__module__, "config": type(config).__name__})
"""


def _remote_load(path, inputs, tmp_path) -> subprocess.CompletedProcess:
    from safetensors.torch import save_file

    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    return subprocess.run([sys.executable, "-c", _REMOTE_LOAD, str(path), str(tmp_path / "inputs.safetensors"),
                           str(tmp_path / "out.safetensors")], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_remote_code_loads_the_model_without_slip_hf_and_gives_the_same_outputs(slip_dir, tmp_path):
    from slip_hf.remote_code import flat_name, flat_source, module_closure

    config = json.loads((slip_dir / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_slip.SlipConfig", "AutoModel": "modeling_slip.SlipModel"}
    # generated from the package at save time: each file is the flattened module, none kept by hand
    for module in module_closure(["slip_hf.configuration_slip", "slip_hf.modeling_slip"]):
        assert (slip_dir / f"{flat_name(module, 'slip_hf')}.py").read_text() == flat_source(module, "slip_hf")
    model = SlipModel.from_pretrained(slip_dir).eval()
    inputs = {"input_ids": torch.randint(3, 200, (5, 12)), "pixel_values": torch.randn(5, 3, 16, 16),
              "edge_index": torch.tensor([[0, 1, 3], [1, 2, 4]]), "labels": torch.tensor([0, 1, 2, 0, 1])}
    done = _remote_load(slip_dir, inputs, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors import safe_open
    from safetensors.torch import load_file

    remote = load_file(str(tmp_path / "out.safetensors"))
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["type"].startswith("transformers_modules.") and metadata["config"] == "SlipConfig"
    with torch.no_grad():
        local = model(**inputs, return_loss=True)
    assert torch.equal(remote["z"], local.node_embeds) and torch.equal(remote["loss"], local.loss)
    assert torch.equal(remote["image"], local.image_embeds) and torch.equal(remote["logits"], local.class_logits)


def _readme_block(opening: str) -> str:
    """The one python block of README.md that contains `opening`."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
    found = [block for block in blocks if opening in block]
    assert len(found) == 1, f"README.md has {len(found)} python blocks with {opening!r}"
    return found[0]


def test_the_readme_loads_model_tokenizer_and_processor_without_slip_hf_silently(slip_dir, tmp_path):
    """The README's no-slip_hf block, as written but for the folder: no prompt (stdin is closed), no warning."""
    block = _readme_block("AutoTokenizer.from_pretrained(path, trust_remote_code=True)")
    script = "import sys\nsys.modules['slip_hf'] = None  # this Python cannot import slip_hf\n" + block.replace(
        'path = "runs/slip-electronics"', f"path = {str(slip_dir)!r}")
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "" and done.stdout.startswith("tensor([")  # nothing asked, nothing warned


def test_a_checkpoint_without_remote_code_gets_it_from_export(slip_dir, tmp_path, capsys):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(slip_dir, old, ignore=shutil.ignore_patterns("*.py", "checkpoint-*"))
    config = json.loads((old / "config.json").read_text())
    del config["auto_map"], config["slip_hf_version"]  # as slip_hf 0.1.0 saved it
    (old / "config.json").write_text(json.dumps(config))
    inputs = {"input_ids": torch.randint(3, 200, (3, 8)), "pixel_values": torch.randn(3, 3, 16, 16)}
    failed = _remote_load(old, inputs, tmp_path)
    assert failed.returncode != 0 and "model type `slip`" in failed.stderr
    assert cli_main(["export", "--model_dir", str(old), "--format", "remote_code"]) == 0
    assert "auto_map and" in capsys.readouterr().out and (old / "modeling_slip.py").is_file()
    assert _remote_load(old, inputs, tmp_path).returncode == 0


def test_publish_uploads_the_clip_export_next_to_the_model(slip_dir, graph_dataset_dir, tmp_path, monkeypatch, capsys):
    from huggingface_hub import metadata_load

    calls = []

    def upload(folder, repo_id, repo_type, **kwargs):
        card = Path(folder) / "README.md"
        calls.append((repo_type, repo_id, sorted(p.name for p in Path(folder).iterdir()), metadata_load(card) if card.exists() else {}))
        return f"https://huggingface.co/{repo_id}/commit/abc"

    monkeypatch.setattr("slip_hf.space.publish.upload_folder_to_hub", upload)
    space = Path(__file__).resolve().parents[1] / "hub" / "space"
    code = cli_main(["publish", "--model_dir", str(slip_dir), "--dataset_dir", str(graph_dataset_dir), "--space_dir", str(space),
                     "--model_repo", "me/slip", "--dataset_repo", "me/data", "--space_repo", "me/space", "--clip_repo", "me/slip-clip"])
    assert code == 0
    assert [(kind, repo) for kind, repo, _, _ in calls] == [("model", "me/slip"), ("model", "me/slip-clip"), ("dataset", "me/data"),
                                                            ("space", "me/space")]
    assert {"modules.json", "model.safetensors", "README.md"} <= set(calls[1][2])
    assert calls[1][3]["base_model"] == "me/slip" and calls[1][3]["pipeline_tag"] == "zero-shot-image-classification"
    assert calls[3][3]["models"] == ["me/slip", "me/slip-clip"] and calls[3][3]["slip_clip_export"] == "me/slip-clip"


def test_neighbor_loader_iterates_the_whole_graph_with_frozen_features(slip_dir, graph_dataset_dir):
    from slip_hf.data import load_copurchase_graph
    from slip_hf.embedding import load_dual_encoder
    from slip_hf.evaluation.runner import EvaluationConfig, embed_split
    from slip_hf.interop import neighbor_loader, pyg_graph

    graph = load_copurchase_graph(graph_dataset_dir, "electronics")
    data = pyg_graph(graph, model=slip_dir)
    assert data.x.shape == (graph.num_nodes, 32) and int(data.train_mask.sum()) == graph.nodes["train"].num_rows
    model, processor, tokenizer = load_dual_encoder(str(slip_dir))
    test = embed_split(model, processor, tokenizer, graph.nodes["test"], EvaluationConfig())
    # Row i is node i. The graph embeds every split in its own batches and `embed_split` only the test nodes: the
    # same model on other batch compositions, whose matrix products may round differently, so to rounding.
    assert_equal_up_to_float_order(data.x_image[torch.as_tensor(test.node_ids)], test.image, ulps=64, name="x_image")
    edges = set(zip(*data.edge_index.tolist()))
    torch.manual_seed(0)
    seen = []
    for batch in neighbor_loader(data, num_neighbors=[4, 2], batch_size=16, input_nodes=data.train_mask):
        seeds = batch.n_id[: batch.batch_size]
        seen += seeds.tolist()
        assert torch.equal(batch.x, data.x[batch.n_id]) and batch.train_mask[: batch.batch_size].all()
        sources, targets = batch.n_id[batch.edge_index[0]], batch.n_id[batch.edge_index[1]]
        assert all((s, t) in edges for s, t in zip(sources.tolist(), targets.tolist()))  # every sampled edge is real
        degree_in = torch.bincount(batch.edge_index[1], minlength=batch.num_nodes)[: batch.batch_size]
        assert (degree_in <= 4).all()  # at most num_neighbors[0] per seed
    assert sorted(seen) == sorted(np.flatnonzero(data.train_mask.numpy()).tolist())  # each training node once
    titles = graph.node_table()[seeds.tolist()]["title"]  # raw columns by node id
    assert titles == [graph.node_table()[i]["title"] for i in seeds.tolist()]
