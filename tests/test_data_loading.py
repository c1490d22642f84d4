"""Every load of a local dataset folder gives the rows on disk now: rebuilds in place, two folders with the same
name, hand edits, all through one shared `datasets` cache (the session's), as on a user's machine."""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from slip_hf.data import (
    BuildConfig,
    build_dataset,
    generate_synthetic_raw,
    load_config,
    load_copurchase_graph,
)
from slip_hf.data.writing import SPLITS


def _build(raw_dir: Path, out_dir: Path, **overrides):
    settings = {"image_size": 16, "label_depth": 2, "min_class_size": 3, "download_workers": 2, "allow_local_files": True,
                "on_bad_lines": "skip"}
    return build_dataset(BuildConfig(raw_dir=str(raw_dir), out_dir=str(out_dir), **{**settings, **overrides}))


def _rows_on_disk(folder: Path, config: str) -> dict[str, list[int]]:
    """`node_id`s (or edge `src`s) of every split, read straight from the parquet files."""
    column = "src" if config.endswith("_edges") else "node_id"
    splits = ("train",) if config.endswith("_edges") else SPLITS
    return {
        split: sorted(i for path in sorted((folder / config).glob(f"{split}-*.parquet"))
                      for i in pq.read_table(path, columns=[column]).column(column).to_pylist())
        for split in splits
    }


def _assert_loads_disk(folder: Path, direct: bool = True):
    """`load_copurchase_graph`, `load_config` and (with the card's `dataset_info`) plain `load_dataset` agree
    with the files."""
    nodes = _rows_on_disk(folder, "electronics")
    edges = _rows_on_disk(folder, "electronics_edges")
    graph = load_copurchase_graph(folder, "electronics")
    assert {s: sorted(graph.nodes[s]["node_id"]) for s in SPLITS} == nodes
    assert sorted(graph.edges["src"]) == edges["train"]
    assert sorted(load_config(folder, "electronics", split="test")["node_id"]) == nodes["test"]
    if direct:
        assert sorted(load_dataset(str(folder), "electronics", split="train")["node_id"]) == nodes["train"]
        assert sorted(load_dataset(str(folder), "electronics_edges", split="train")["src"]) == edges["train"]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("loading_raw")
    generate_synthetic_raw(root / "raw", num_bundles=6, shoppers_per_bundle=200, image_size=16, seed=0)
    return root / "raw"


def test_same_named_folders_load_their_own_rows(raw_dir, tmp_path):
    first = _build(raw_dir, tmp_path / "a" / "dataset")
    second = _build(raw_dir, tmp_path / "b" / "dataset", kcore_k=3, train_fraction=0.3)
    assert first.stats["splits"] != second.stats["splits"]
    for folder in (tmp_path / "a" / "dataset", tmp_path / "b" / "dataset", tmp_path / "a" / "dataset"):
        _assert_loads_disk(folder)


def test_rebuild_in_place_with_other_settings_loads_the_new_rows(raw_dir, tmp_path):
    folder = tmp_path / "dataset"
    before = _build(raw_dir, folder)
    _assert_loads_disk(folder)
    after = _build(raw_dir, folder, min_copurchase=4, label_depth=1, seed=1)
    assert (after.num_nodes, after.num_edges) != (before.num_nodes, before.num_edges)
    _assert_loads_disk(folder)
    assert load_copurchase_graph(folder, "electronics").nodes["train"].features["label"].names == list(after.stats["labels"])


def test_rebuild_with_the_same_sizes_loads_the_new_rows(raw_dir, tmp_path):
    """Another split seed keeps every count and byte size of a split's file, but not its rows."""
    folder = tmp_path / "dataset"
    _build(raw_dir, folder, seed=0)
    _assert_loads_disk(folder)
    _build(raw_dir, folder, seed=5)
    _assert_loads_disk(folder, direct=False)


def test_hand_edited_folder_loads_the_edited_rows(raw_dir, tmp_path):
    folder = tmp_path / "dataset"
    _build(raw_dir, folder)
    load_copurchase_graph(folder, "electronics")
    path = next((folder / "electronics").glob("test-*.parquet"))
    table = pq.read_table(path)
    titles = [f"edited title {i}" for i in range(table.num_rows)]
    pq.write_table(table.set_column(table.schema.get_field_index("title"), "title", pa.array(titles)), path)
    assert load_config(folder, "electronics", split="test")["title"] == titles
    assert load_copurchase_graph(folder, "electronics").nodes["test"]["title"] == titles


def test_load_config_errors_name_the_folder_and_the_configs(raw_dir, tmp_path):
    folder = tmp_path / "dataset"
    _build(raw_dir, folder)
    with pytest.raises(ValueError, match=r"no config 'books'.*configs: electronics, electronics_edges"):
        load_config(folder, "books")
    with pytest.raises(FileNotFoundError, match="no README.md"):
        load_config(tmp_path, "electronics")
    for path in (folder / "electronics").glob("test-*.parquet"):
        path.unlink()
    with pytest.raises(FileNotFoundError, match="split 'test': no file matches"):
        load_config(folder, "electronics")


def _rewrite_same_size_same_second(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite a file with other bytes of the same length and a modification time in the same second."""
    assert len(old) == len(new)
    stat = path.stat()
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))
    ns = stat.st_mtime_ns + 1 if (stat.st_mtime_ns + 1) // 10**9 == stat.st_mtime_ns // 10**9 else stat.st_mtime_ns - 1
    os.utime(path, ns=(ns, ns))
    assert path.stat().st_size == stat.st_size and int(path.stat().st_mtime) == int(stat.st_mtime)


def test_builder_resume_notices_a_changed_raw_file(raw_dir, tmp_path):
    """Same size, same second, other content: the purchases step must be recomputed, not reused."""
    raw = tmp_path / "raw"
    generate_synthetic_raw(raw, num_bundles=6, shoppers_per_bundle=200, image_size=16, seed=0)
    folder = tmp_path / "dataset"
    first = _build(raw, folder)
    assert not any(step.reused for step in first.steps)
    again = _build(raw, folder)
    assert [step.reused for step in again.steps if step.step.startswith(("1.", "2.", "3."))] == [True, True, True]
    # every review one year earlier in the 2020s: "timestamp": 16... -> 15..., same byte length
    _rewrite_same_size_same_second(raw / "review_categories" / "Electronics.jsonl", b'"timestamp": 16', b'"timestamp": 15')
    changed = _build(raw, folder)
    assert not changed.steps[0].reused
    first_times = np.asarray(load_copurchase_graph(folder, "electronics").edges["first_time"])
    assert first_times.max() < 1_600_000_000_000


def test_builder_rereads_changed_local_images_and_image_size(tmp_path):
    raw = tmp_path / "raw"
    generate_synthetic_raw(raw, num_bundles=6, shoppers_per_bundle=200, image_size=32, seed=0)
    folder = tmp_path / "dataset"
    _build(raw, folder, image_size=32)
    assert load_copurchase_graph(folder, "electronics").nodes["train"][0]["image"].size == (32, 32)
    _build(raw, folder, image_size=16)
    first = load_copurchase_graph(folder, "electronics").nodes["train"][0]
    assert first["image"].size == (16, 16)
    # regenerate the raw images in place with other pixels: the dataset must carry the new ones
    generate_synthetic_raw(raw, num_bundles=6, shoppers_per_bundle=200, image_size=16, seed=0)
    from PIL import Image

    for path in (raw / "images").rglob("*.jpg"):
        Image.new("RGB", (16, 16), (255, 0, 0)).save(path)
    _build(raw, folder, image_size=16)
    pixel = load_copurchase_graph(folder, "electronics").nodes["train"][0]["image"].convert("RGB").getpixel((8, 8))
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60
