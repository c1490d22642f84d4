"""Finding a category's raw files: the release's layout, a leading raw/ folder, or flat files side by side as the
download links give them; errors that list every path tried."""

import gzip
import shutil

import pytest

from slip_hf.data import BuildConfig, build_dataset, generate_synthetic_raw
from slip_hf.data.amazon_raw import locate_raw_files


def _touch(path, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write("{}\n")
    else:
        path.write_text("{}\n")
    return path


@pytest.mark.parametrize("layout", ["release", "raw_prefix", "flat"])
def test_both_layouts_and_compressed_files_are_found(tmp_path, layout):
    base = {"release": tmp_path, "raw_prefix": tmp_path / "raw", "flat": tmp_path}[layout]
    reviews_dir = base if layout == "flat" else base / "review_categories"
    meta_dir = base if layout == "flat" else base / "meta_categories"
    reviews = _touch(reviews_dir / "Electronics.jsonl.gz", gz=True)
    meta = _touch(meta_dir / "meta_Electronics.jsonl")
    found = locate_raw_files(tmp_path, "Electronics")
    assert (found.reviews, found.meta) == (reviews, meta)


def test_missing_files_list_every_path_tried(tmp_path):
    _touch(tmp_path / "Electronics.jsonl")
    with pytest.raises(FileNotFoundError) as error:
        locate_raw_files(tmp_path, "Electronics")
    message = str(error.value)
    assert "no meta_Electronics.jsonl[.gz] found; tried:" in message
    for tried in (tmp_path / "meta_categories" / "meta_Electronics.jsonl", tmp_path / "raw" / "meta_categories" / "meta_Electronics.jsonl.gz",
                  tmp_path / "meta_Electronics.json"):
        assert str(tried) in message
    with pytest.raises(FileNotFoundError, match="no such folder"):
        locate_raw_files(tmp_path / "nonexistent", "Electronics")


def test_a_flat_download_folder_builds_the_same_dataset(tmp_path):
    generate_synthetic_raw(tmp_path / "release", num_bundles=8, shoppers_per_bundle=200, image_size=16, compress=True, seed=2)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in (tmp_path / "release").glob("*_categories/*.jsonl.gz"):
        shutil.copy(path, flat / path.name)
    results = [
        build_dataset(BuildConfig(raw_dir=str(raw), out_dir=str(tmp_path / f"out_{raw.name}"), image_size=16, min_class_size=3,
                                  download_workers=2, allow_local_files=True, on_bad_lines="skip"))
        for raw in (tmp_path / "release", flat)
    ]
    assert results[0].num_nodes == results[1].num_nodes > 0 and results[0].num_edges == results[1].num_edges
