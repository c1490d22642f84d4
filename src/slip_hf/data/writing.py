"""Writing one dataset config: typed `datasets` features, parquet shards per split, and the edge table.

Layout under `out_dir` (what the card's YAML `configs:` points at):

    <config>/train-00000-of-0000N.parquet, validation-..., test-...   nodes, images embedded
    <config>_edges/train-00000-of-00001.parquet                       edges (one split)
"""

import math
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, Features, Image, List, Value

EDGE_FEATURES = Features(
    {
        "src": Value("int64"),
        "dst": Value("int64"),
        "count": Value("int64"),
        "first_time": Value("int64"),
        "last_time": Value("int64"),
    }
)
"""Edge columns: node ids (`src < dst`), distinct co-buyers, first/last co-purchase time (Unix ms)."""

SPLITS = ("train", "validation", "test")


def node_features(label_names: list[str], with_reviews: bool = False) -> Features:
    """Features of the node table."""
    features = {
        "node_id": Value("int64"),
        "parent_asin": Value("string"),
        "title": Value("string"),
        "description": Value("string"),
        "features": List(Value("string")),
        "store": Value("string"),
        "image": Image(),
        "category_path": List(Value("string")),
        "label": ClassLabel(names=label_names),
        "clip_t_title": Value("float32"),
        "clip_t_description": Value("float32"),
        "split": Value("string"),
    }
    if with_reviews:
        features["reviews"] = List(Value("string"))
    return Features(features)


def assign_splits(num_nodes: int, train_fraction: float = 0.6, validation_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """`SPLITS` index of every node: a seeded permutation cut at the given fractions (the test split gets the
    rest)."""
    order = np.random.default_rng(seed).permutation(num_nodes)
    n_train = int(round(train_fraction * num_nodes))
    n_validation = int(round(validation_fraction * num_nodes))
    split = np.full(num_nodes, 2, dtype=np.int64)
    split[order[:n_train]] = 0
    split[order[n_train : n_train + n_validation]] = 1
    return split


def edges_config_name(config_name: str) -> str:
    """Name of the edge config that goes with a node config."""
    return f"{config_name}_edges"


@dataclass
class _Rows:
    columns: dict[str, Any]
    indices: np.ndarray

    def __call__(self):
        for index in self.indices:
            row = {name: values[index] for name, values in self.columns.items() if name != "image_path"}
            path = Path(self.columns["image_path"][index])
            row["image"] = {"bytes": path.read_bytes(), "path": f"{row['parent_asin']}.jpg"}
            yield row


def write_config(
    out_dir: str | Path,
    config: Any,
    node_columns: dict[str, Any],
    label_names: list[str],
    edge_table: pa.Table,
    cache_dir: str | Path | None = None,
) -> None:
    """Write the node splits and the edge table of one config, replacing an earlier build of it.

    Args:
        out_dir: the dataset folder.
        config: the [`BuildConfig`] (for `config_name` and `max_shard_bytes`).
        node_columns: equal-length columns of [`node_features`], with `image_path` (a local image file)
            instead of `image`.
        label_names: class names of `label`.
        edge_table: `src`, `dst`, `count`, `first_time`, `last_time`.
        cache_dir: where `datasets` stages the arrow files.
    """
    out_dir = Path(out_dir)
    features = node_features(label_names, with_reviews="reviews" in node_columns)
    split = np.asarray(node_columns["split"])
    for name in (config.config_name, edges_config_name(config.config_name)):
        shutil.rmtree(out_dir / name, ignore_errors=True)
        (out_dir / name).mkdir(parents=True)
    image_bytes = np.array([Path(path).stat().st_size for path in node_columns["image_path"]])
    for split_name in SPLITS:
        indices = np.flatnonzero(split == split_name)
        dataset = Dataset.from_generator(
            _Rows(node_columns, indices),
            features=features,
            cache_dir=str(cache_dir) if cache_dir else None,
            fingerprint=uuid.uuid4().hex,  # never reuse a stale staging file; hashing the rows would be slow
        )
        num_shards = max(1, math.ceil(int(image_bytes[indices].sum()) / config.max_shard_bytes))
        for shard in range(num_shards):
            path = out_dir / config.config_name / f"{split_name}-{shard:05d}-of-{num_shards:05d}.parquet"
            dataset.shard(num_shards, shard, contiguous=True).to_parquet(str(path))
    edges = Dataset(edge_table.cast(EDGE_FEATURES.arrow_schema)).cast(EDGE_FEATURES)
    edges.to_parquet(str(out_dir / edges_config_name(config.config_name) / "train-00000-of-00001.parquet"))


__all__ = ["EDGE_FEATURES", "SPLITS", "assign_splits", "edges_config_name", "node_features", "write_config"]
