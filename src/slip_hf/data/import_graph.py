"""Any image-text graph as a slip_hf dataset: items and edges from CSV, parquet or JSON-lines files, written in
exactly the layout `build-dataset` writes (node ids 0..N-1 across the splits, typed features with a
`ClassLabel` label, a seeded 60/10/30 split or a given split column, a `<config>_edges` config, the card and
`stats/<config>.json`), so that training, evaluation and the Space take it as they take the Amazon graph.

What is dropped is counted, by reason: items without an id or with a repeated id, without text, or without an
image (no value, or a file or URL that does not give a decodable image); edges to an unknown or dropped item (dangling), self
loops, and repeated edges (in either direction), whose count and times are merged into the first. Images are
read with the builder's downloader: http(s) URLs, or local paths (relative to the items file), which must lie
under the folders the user names (default: the items file's folder).
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..graph_batching import NodeGraph
from ..viewed_image import WHITE
from .builder import StepRecord
from .card import write_dataset_card
from .images import ImageDownloader, fix_counts
from .labels import assign_labels
from .writing import SPLITS, assign_splits, write_config

READERS = {".csv": pd.read_csv, ".tsv": lambda path: pd.read_csv(path, sep="\t"), ".parquet": pd.read_parquet,
           ".jsonl": lambda path: pd.read_json(path, lines=True), ".json": lambda path: pd.read_json(path, lines=True)}


@dataclass
class ImportConfig:
    """What `slip-hf import-graph` reads and how; every field is a flag."""

    nodes: str = field(metadata={"help": "Items file (.csv, .tsv, .parquet, .jsonl): one row per item."})
    edges: str = field(metadata={"help": "Edges file (.csv, .tsv, .parquet, .jsonl): one row per link."})
    out_dir: str = field(metadata={"help": "Output dataset folder."})
    id_column: str = field(default="id", metadata={"help": "Items: the id the edges refer to."})
    text_column: str = field(default="text", metadata={"help": "Items: the text (a title, a caption)."})
    image_column: str = field(default="image", metadata={"help": "Items: an image path (relative to the items file) or http(s) URL."})
    label_column: str | None = field(default=None, metadata={"help": "Items: a category (becomes the ClassLabel `label`)."})
    description_column: str | None = field(default=None, metadata={"help": "Items: a longer text, kept as `description`."})
    split_column: str | None = field(default=None, metadata={"help": "Items: train / validation / test; default a seeded split."})
    src_column: str = field(default="src", metadata={"help": "Edges: one end (an item id)."})
    dst_column: str = field(default="dst", metadata={"help": "Edges: the other end."})
    weight_column: str | None = field(default=None, metadata={"help": "Edges: a positive weight, stored (rounded) as `count`."})
    time_column: str | None = field(default=None, metadata={"help": "Edges: a time (Unix ms or a date), stored as first/last_time."})
    image_roots: list[str] = field(default_factory=list, metadata={"help": "Folders local images may come from (default: the items file's)."})
    config_name: str = field(default="graph", metadata={"help": "Dataset config name."})
    category: str = field(default="Imported graph", metadata={"help": "What the graph is, for the card."})
    min_class_size: int = field(default=1, metadata={"help": "Smaller classes are merged into 'Other'."})
    train_fraction: float = field(default=0.6, metadata={"help": "Share of items in the train split."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of items in the validation split."})
    seed: int = field(default=0, metadata={"help": "Seed of the split."})
    image_size: int = field(default=256, metadata={"help": "Shorter side of stored images."})
    image_background: list[int] = field(
        default_factory=lambda: list(WHITE),
        metadata={"help": "r g b under transparent pixels of stored images (default: 255 255 255, white)."},
    )
    download_workers: int = field(default=8, metadata={"help": "Parallel image reads/downloads."})
    max_shard_bytes: int = field(default=500 << 20, metadata={"help": "Target size of a parquet shard."})
    license: str = field(default="other", metadata={"help": "License tag of the card."})

    @property
    def work_path(self) -> Path:
        return Path(self.out_dir) / ".work" / self.config_name


def _read(path: str, columns: list[str], what: str) -> pd.DataFrame:
    reader = READERS.get(Path(path).suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown format; use one of {', '.join(READERS)}.")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} file {path}: no such file.")
    table = reader(path)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(map(repr, missing))} (it has {', '.join(map(str, table.columns))}).")
    return table


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()


def _times_ms(values: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values):
        return values.fillna(0).astype(np.int64).to_numpy()
    return pd.to_datetime(values, utc=True).dt.as_unit("ms").astype("int64").to_numpy()  # any date -> Unix ms


def import_graph(config: ImportConfig):
    """Write the dataset; returns the `BuildResult` (the same as `build_dataset`'s)."""
    from .builder import BuildResult

    records: list[StepRecord] = []
    start = time.perf_counter()
    item_columns = [config.id_column, config.text_column, config.image_column]
    item_columns += [c for c in (config.label_column, config.description_column, config.split_column) if c]
    items = _read(config.nodes, item_columns, "items")
    ids = items[config.id_column].map(_text)
    texts = items[config.text_column].map(_text)
    images = items[config.image_column].map(_text)
    no_id = (ids == "").to_numpy()
    repeated = ~no_id & ids.duplicated().to_numpy()
    no_text = ~no_id & ~repeated & (texts == "").to_numpy()
    no_image = ~no_id & ~repeated & ~no_text & (images == "").to_numpy()
    keep = ~(no_id | repeated | no_text | no_image)
    records.append(StepRecord("1. items", int(keep.sum()), {
        "no id": int(no_id.sum()), "repeated id": int(repeated.sum()), "no text": int(no_text.sum()),
        "no image": int(no_image.sum()),
    }, time.perf_counter() - start, False))

    start = time.perf_counter()
    base = Path(config.nodes).resolve().parent
    roots = [Path(root) for root in config.image_roots] or [base]

    def url(value: str) -> str:
        if value.lower().startswith(("http://", "https://", "file://")):
            return value
        return (base / value).resolve().as_uri() if not os.path.isabs(value) else Path(value).resolve().as_uri()

    downloader = ImageDownloader(config.work_path, image_size=config.image_size, num_workers=config.download_workers,
                                 local_roots=roots, background=tuple(config.image_background))
    results = downloader.download([(ids.iloc[i], url(images.iloc[i])) for i in np.flatnonzero(keep)])
    failed: dict[str, int] = {}
    for i in np.flatnonzero(keep):
        result = results[ids.iloc[i]]
        if result.status != "ok":
            failed[result.status] = failed.get(result.status, 0) + 1
            keep[i] = False
    records.append(StepRecord("2. images", int(keep.sum()), failed, time.perf_counter() - start, False,
                              fix_counts(results[ids.iloc[i]] for i in np.flatnonzero(keep))))

    start = time.perf_counter()
    kept = np.flatnonzero(keep)
    node_of = {ids.iloc[i]: node for node, i in enumerate(kept)}
    edge_columns = [config.src_column, config.dst_column] + [c for c in (config.weight_column, config.time_column) if c]
    edges = _read(config.edges, edge_columns, "edges")
    src = edges[config.src_column].map(lambda v: node_of.get(_text(v), -1)).to_numpy(dtype=np.int64)
    dst = edges[config.dst_column].map(lambda v: node_of.get(_text(v), -1)).to_numpy(dtype=np.int64)
    weight = np.rint(edges[config.weight_column].fillna(1).to_numpy(dtype=np.float64)).astype(np.int64) if config.weight_column else np.ones(src.size, np.int64)
    when = _times_ms(edges[config.time_column]) if config.time_column else np.zeros(src.size, np.int64)
    dangling = (src < 0) | (dst < 0)
    self_loop = ~dangling & (src == dst)
    valid = ~(dangling | self_loop)
    low, high = np.minimum(src, dst)[valid], np.maximum(src, dst)[valid]
    frame = pd.DataFrame({"src": low, "dst": high, "count": np.maximum(weight[valid], 1), "first_time": when[valid], "last_time": when[valid]})
    merged = frame.groupby(["src", "dst"], sort=True).agg({"count": "sum", "first_time": "min", "last_time": "max"}).reset_index()
    edge_table = pa.Table.from_pandas(merged, preserve_index=False)
    records.append(StepRecord("3. edges", int(merged.shape[0]), {
        "dangling (unknown or dropped item)": int(dangling.sum()), "self loops": int(self_loop.sum()),
        "repeated (merged)": int(valid.sum() - merged.shape[0]),
    }, time.perf_counter() - start, False))

    start = time.perf_counter()
    label_values = [[_text(items[config.label_column].iloc[i]) or "none"] for i in kept] if config.label_column else [["none"]] * kept.size
    labels, label_names, _ = assign_labels(label_values, 0, config.min_class_size)
    if config.split_column:
        given = [_text(items[config.split_column].iloc[i]) for i in kept]
        unknown = sorted(set(given) - set(SPLITS))
        if unknown:
            raise ValueError(f"{config.nodes}: split column {config.split_column!r} has {unknown}; use {', '.join(SPLITS)}.")
        split = np.array([SPLITS.index(value) for value in given], dtype=np.int64)
    else:
        split = assign_splits(kept.size, config.train_fraction, config.validation_fraction, config.seed)
    descriptions = [_text(items[config.description_column].iloc[i]) for i in kept] if config.description_column else [""] * kept.size
    node_columns = {
        "node_id": np.arange(kept.size), "parent_asin": [ids.iloc[i] for i in kept], "title": [texts.iloc[i] for i in kept],
        "description": descriptions, "features": [[] for _ in kept], "store": [""] * kept.size,
        "image_path": [results[ids.iloc[i]].path for i in kept], "category_path": label_values, "label": labels,
        "clip_t_title": np.full(kept.size, np.nan, np.float32), "clip_t_description": np.full(kept.size, np.nan, np.float32),
        "split": [SPLITS[s] for s in split],
    }
    out_dir = Path(config.out_dir)
    write_config(out_dir, config, node_columns, label_names, edge_table, cache_dir=config.work_path / "hf_cache")
    records.append(StepRecord("4. labels, split, files", int(kept.size), {}, time.perf_counter() - start, False))

    degrees = NodeGraph.from_edges(merged["src"].to_numpy(), merged["dst"].to_numpy(), kept.size).degree()
    stats = {
        "config_name": config.config_name, "category": config.category, "nodes": int(kept.size), "edges": int(merged.shape[0]),
        "mean_degree": float(degrees.mean()) if kept.size else 0.0, "min_degree": int(degrees.min(initial=0)),
        "max_degree": int(degrees.max(initial=0)),
        "splits": {name: int((split == i).sum()) for i, name in enumerate(SPLITS)},
        "labels": {name: int((labels == i).sum()) for i, name in enumerate(label_names)},
        "clip_t": {"title": None, "description": None}, "clip_t_model": None,
        "source": {"nodes_file": Path(config.nodes).name, "nodes": int(len(items)), "edges_file": Path(config.edges).name,
                   "edges": int(len(edges))},
        "steps": [asdict(record) for record in records], "graph_signal": None,
        "config": {**{k: v for k, v in asdict(config).items() if k not in ("nodes", "edges", "out_dir")}, "label_depth": 0},
    }
    (out_dir / "stats").mkdir(parents=True, exist_ok=True)
    (out_dir / "stats" / f"{config.config_name}.json").write_text(json.dumps(stats, indent=1))
    write_dataset_card(out_dir)
    return BuildResult(out_dir, config.config_name, int(kept.size), int(merged.shape[0]), records, stats)


__all__ = ["ImportConfig", "import_graph"]
