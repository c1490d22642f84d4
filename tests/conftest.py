"""Shared tiny fixtures: a toy product graph, a tokenizer trained on its titles, and tiny CLIP/SLIP configs.

Everything is built offline and deterministically; no test touches the Hugging Face Hub. The session gets its
own Hugging Face cache (set before `datasets` is imported), so no test reads the user's cache or an earlier
session's; tests of the cache itself share it on purpose.
"""

import os
import shutil
import tempfile

_HF_HOME = tempfile.mkdtemp(prefix="slip_hf-tests-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_HOME, "datasets")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from slip_hf import SlipConfig, SlipModel  # noqa: E402
from slip_hf.graph_batching import NodeGraph  # noqa: E402
from slip_hf.processing import NodeTransform  # noqa: E402
from slip_hf.toy import make_toy_graph, tiny_clip_config, toy_image_processor, train_toy_tokenizer

IMAGE_SIZE = 16


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def toy_graph():
    """`(nodes, edges)` of a 160-node toy co-purchase graph with 16x16 images."""
    return make_toy_graph(num_nodes=160, num_categories=4, items_per_line=8, image_size=IMAGE_SIZE, seed=0)


@pytest.fixture(scope="session")
def tokenizer(toy_graph):
    nodes, _ = toy_graph
    return train_toy_tokenizer(nodes["title"], vocab_size=300, max_length=16)


@pytest.fixture(scope="session")
def clip_config(tokenizer):
    return tiny_clip_config(tokenizer, hidden_size=32, num_layers=2, image_size=IMAGE_SIZE, patch_size=4, projection_dim=16)


@pytest.fixture
def slip_config(clip_config):
    return SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, graph_num_heads=4, num_labels=4)


@pytest.fixture
def slip_model(slip_config):
    torch.manual_seed(0)
    return SlipModel(slip_config)


@pytest.fixture(scope="session")
def node_graph(toy_graph):
    nodes, edges = toy_graph
    return NodeGraph.from_edge_table(edges, nodes.num_rows)


@pytest.fixture(scope="session")
def processed_nodes(toy_graph, tokenizer):
    """The toy nodes as model inputs (pixel_values, input_ids, attention_mask, labels, node_id)."""
    nodes, _ = toy_graph
    return nodes.with_transform(NodeTransform(toy_image_processor(IMAGE_SIZE), tokenizer, max_length=16))


@pytest.fixture
def model_inputs(tokenizer):
    """A batch of 5 random image-text pairs for the tiny model."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(2, len(tokenizer), (5, 10), generator=generator)
    input_ids[:, 0] = tokenizer.bos_token_id
    input_ids[:, -1] = tokenizer.eos_token_id
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(5, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
    }


@pytest.fixture(scope="session")
def graph_dataset_dir(tmp_path_factory):
    """A small co-purchase graph dataset written by the real builder from generated Amazon-schema files."""
    from slip_hf.data import BuildConfig, build_dataset, generate_synthetic_raw

    root = tmp_path_factory.mktemp("graph_dataset")
    generate_synthetic_raw(root / "raw", num_bundles=10, shoppers_per_bundle=400, image_size=24, seed=0)
    build_dataset(BuildConfig(raw_dir=str(root / "raw"), out_dir=str(root / "data"), image_size=24, label_depth=2, allow_local_files=True,
                              min_class_size=3, download_workers=4, on_bad_lines="skip"))
    return root / "data"


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory, graph_dataset_dir):
    """A random tiny CLIP saved like a hub checkpoint (weights, tokenizer, image processor)."""
    from slip_hf.data import load_config
    from slip_hf.toy import write_tiny_checkpoint

    titles = load_config(graph_dataset_dir, "electronics", split="train")["title"]
    directory = tmp_path_factory.mktemp("tiny_clip")
    return write_tiny_checkpoint(str(directory), titles, image_size=IMAGE_SIZE, hidden_size=32, num_layers=1,
                                      projection_dim=16, vocab_size=300, max_length=24)


@pytest.fixture(scope="session")
def recipe_clip(graph_dataset_dir, tmp_path_factory):
    """A tiny random CLIP with CLIP's 77 text positions, so that recipes keep their own text lengths (and transformers'
    pipelines their prompt templates)."""
    from slip_hf.data import load_config
    from slip_hf.toy import write_tiny_checkpoint

    titles = load_config(graph_dataset_dir, "electronics", split="train")["title"]
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("recipe_clip")), titles, image_size=16, hidden_size=32,
                                      num_layers=1, projection_dim=16, vocab_size=300, max_length=77)


@pytest.fixture(scope="session")
def recipe_siglip(graph_dataset_dir, tmp_path_factory):
    """A tiny random SigLIP with SigLIP's conventions (64 text positions, texts padded to them, its image processor,
    its starting temperature and bias): the stand-in of SigLIP and SigLIP 2 checkpoints."""
    from slip_hf.data import load_config
    from slip_hf.toy import write_tiny_checkpoint

    titles = load_config(graph_dataset_dir, "electronics", split="train")["title"]
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("recipe_siglip")), titles, image_size=16, hidden_size=32,
                                 num_layers=1, vocab_size=300, max_length=64, family="siglip")


def stand_in_for(model_name_or_path: str, request) -> str:
    """The tiny local model that stands in for a recipe's Hub model: SigLIP's for a SigLIP, CLIP's otherwise."""
    return request.getfixturevalue("recipe_siglip" if "siglip" in model_name_or_path else "recipe_clip")


@pytest.fixture
def fake_hub(monkeypatch):
    """Stands in for `huggingface_hub.HfApi` in slip_hf's upload helper; returns the calls it received."""
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)

        def upload_folder(self, **kwargs):
            calls["upload"] = kwargs
            return f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"

    monkeypatch.setattr("slip_hf.hub_upload.HfApi", FakeApi)
    return calls
