"""`amazon-copurchase-mm`: build the multimodal co-purchase graph dataset from raw Amazon Reviews 2023 files.

The pipeline (each step in its own module, each step's drops counted and written into the card):

1. purchases: distinct (user, item, earliest time) from the reviews ([`copurchase.read_purchases`]);
2. co-purchase edges: item pairs bought by >= `min_copurchase` distinct users ([`copurchase.copurchase_edges`]);
3. valid items: title, image URL, optional description ([`items.load_items`]);
4. k-core (k = `kcore_k`) on the graph chosen by `kcore_on` ([`kcore`]);
5. images: downloaded, verified, resized ([`images.ImageDownloader`]);
6. CLIP-T scores and optional threshold ([`clip_score`]);
7. final graph: items whose image failed or whose CLIP-T is below the threshold are removed *as if they had
   been invalid at step 3*, and steps 2-4 are re-applied, so the published graph satisfies the k-core;
8. labels at `label_depth` with the rare-class rule ([`labels.assign_labels`]), 60/10/30 node split, and the
   parquet files, the card and `stats/<config>.json`.

Order of steps 2-4, by `kcore_on`:

* `"copurchase"` (default): edges are counted on all purchases, invalid items are removed with their edges,
  then the k-core is taken on the co-purchase graph: every node keeps >= k co-purchase neighbours.
* `"bipartite"`: purchases of invalid items are removed, the user-item k-core is taken (users and items with
  >= k purchases, as the Amazon 2023 benchmark's `5core` files), edges are counted on the surviving purchases,
  and items left without an edge are dropped.

Resuming: every expensive step stores its output under `work_dir` with a fingerprint of its parameters and
inputs (the raw files' path, size and modification time included); a re-run reuses what is still valid and
recomputes the rest (the image step resumes per URL, and re-reads a changed local image or a changed size).
"""

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..graph_batching import NodeGraph
from ..viewed_image import WHITE
from .amazon_raw import RawCategoryFiles, download_raw_files, iter_review_texts, locate_raw_files
from .card import write_dataset_card
from .clip_score import clip_t_scores
from .copurchase import Purchases, copurchase_edges, read_purchases
from .images import ImageDownloader, fix_counts
from .items import load_items
from .json_lines import check_on_bad_lines
from .kcore import kcore_bipartite, kcore_graph
from .labels import assign_labels
from .synthetic import load_synthetic_truth
from .writing import SPLITS, assign_splits, write_config


@dataclass
class BuildConfig:
    """Parameters of one build; every field is a CLI flag of `slip-hf build-dataset`."""

    category: str = field(default="Electronics", metadata={"help": "Category file stem of the release, e.g. Electronics."})
    raw_dir: str | None = field(
        default=None,
        metadata={"help": "Folder with review_categories/ and meta_categories/. Unset: download from the Hub "
                  "(McAuley-Lab/Amazon-Reviews-2023)."},
    )
    out_dir: str = field(
        default="amazon-copurchase-mm",
        metadata={"help": "Output dataset folder (one config per category).", "aliases": ["--out"]},
    )
    config_name: str | None = field(default=None, metadata={"help": "Dataset config name; default: category in lower case."})
    work_dir: str | None = field(default=None, metadata={"help": "Intermediate files for resuming; default <out_dir>/.work/<config>."})
    on_bad_lines: Literal["error", "skip"] = field(
        default="error",
        metadata={"help": "A review or metadata line that is not a JSON object of the expected fields (broken JSON, the "
                  "cut-off end of an interrupted download): 'error' stops with its file and line number, 'skip' skips it "
                  "and counts it per file (step table, card, stats)."},
    )
    verified_only: bool = field(default=False, metadata={"help": "Count only verified purchases."})
    min_copurchase: int = field(default=3, metadata={"help": "Minimum distinct co-buyers of an edge (paper: 3)."})
    max_items_per_user: int | None = field(
        default=None, metadata={"help": "Leave users with more distinct items out of pair counting (default: exact)."}
    )
    kcore_k: int = field(default=5, metadata={"help": "k of the recursive k-core (paper: 5)."})
    kcore_on: Literal["copurchase", "bipartite"] = field(
        default="copurchase", metadata={"help": "Graph of the k-core: the co-purchase graph or the user-item graph."}
    )
    require_description: bool = field(default=False, metadata={"help": "Drop items with an empty description."})
    label_depth: int = field(default=1, metadata={"help": "Category path level used as the label (0 = department)."})
    min_class_size: int = field(default=20, metadata={"help": "Smaller classes are merged into 'Other'."})
    image_size: int = field(default=256, metadata={"help": "Shorter side of stored images."})
    center_crop_images: bool = field(
        default=False,
        metadata={"help": "Store each image's centred square: with --image_size 224, images are stored at the training "
                  "resolution, as CLIP's processor would crop them (cheaper decoding, no resizing in training)."},
    )
    image_background: list[int] = field(
        default_factory=lambda: list(WHITE),
        metadata={"help": "r g b under transparent pixels of stored images (default: 255 255 255, white)."},
    )
    download_workers: int = field(default=16, metadata={"help": "Parallel image downloads."})
    download_timeout: float = field(default=10.0, metadata={"help": "Seconds per connect/read."})
    download_deadline: float = field(default=60.0, metadata={"help": "Seconds for a whole image download."})
    allow_local_files: bool = field(
        default=False,
        metadata={"help": "Read file:// image URLs (local mirrors, the embedded synthetic data). Off by default: a crafted "
                  "metadata line must not copy local files into a dataset that is then published."},
    )
    download_retries: int = field(default=3, metadata={"help": "Retries of transient download failures."})
    retry_failed_downloads: bool = field(default=False, metadata={"help": "Also retry final failures (4xx, not an image) of earlier runs."})
    clip_t_model: str | None = field(
        default=None, metadata={"help": "CLIP checkpoint for CLIP-T scores, e.g. openai/clip-vit-base-patch16; unset: skip."}
    )
    min_clip_t: float | None = field(default=None, metadata={"help": "Drop nodes whose title CLIP-T is below this."})
    max_reviews_per_node: int = field(default=0, metadata={"help": "Keep up to this many review texts per node (ACMMG keeps 25)."})
    train_fraction: float = field(default=0.6, metadata={"help": "Share of nodes in the train split."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of nodes in the validation split (test: the rest)."})
    seed: int = field(default=0, metadata={"help": "Seed of the node split."})
    max_shard_bytes: int = field(default=500 << 20, metadata={"help": "Target size of a parquet shard."})
    license: str = field(default="other", metadata={"help": "License tag of the card (the source's terms apply)."})

    def __post_init__(self):
        check_on_bad_lines(self.on_bad_lines)  # before any work, not at the first file read
        if self.kcore_on not in ("copurchase", "bipartite"):
            raise ValueError(f"kcore_on must be 'copurchase' or 'bipartite', got {self.kcore_on!r}.")
        if not (self.train_fraction > 0 and self.validation_fraction >= 0 and self.train_fraction + self.validation_fraction < 1):
            raise ValueError("train_fraction > 0, validation_fraction >= 0 and their sum < 1 are required.")
        self.config_name = self.config_name or self.category.lower()

    @property
    def work_path(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.out_dir) / ".work" / self.config_name


@dataclass
class StepRecord:
    """What one step kept and dropped, for the summary table and the card."""

    step: str
    kept: int
    dropped: dict[str, int]
    seconds: float
    reused: bool
    fixed: dict[str, int] = field(default_factory=dict)
    """What the step repaired in the rows it kept, and how often (the images step: `images.fix_counts`)."""


@dataclass
class BuildResult:
    """The outcome of [`build_dataset`]: where the dataset is and the numbers that describe it."""

    out_dir: Path
    config_name: str
    num_nodes: int
    num_edges: int
    steps: list[StepRecord]
    stats: dict


class StepCache:
    """Stores step outputs (parquet tables) under `work_dir`, keyed by a fingerprint of the step's parameters
    and of its upstream steps' fingerprints."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = work_dir / "manifest.json"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}

    def fingerprint(self, name: str) -> str:
        return self.manifest[name]["fingerprint"]

    def run(
        self, name: str, params: dict, upstream: list[str], compute: Callable[[], tuple[dict[str, pa.Table], dict]]
    ) -> tuple[dict[str, pa.Table], dict, bool]:
        """`compute()` unless a stored result with the same fingerprint exists; returns `(tables, stats, reused)`."""
        payload = json.dumps({"params": params, "upstream": [self.fingerprint(u) for u in upstream]}, sort_keys=True)
        fingerprint = hashlib.sha256(payload.encode()).hexdigest()[:16]
        entry = self.manifest.get(name)
        if entry and entry["fingerprint"] == fingerprint and all((self.work_dir / f).exists() for f in entry["files"].values()):
            tables = {key: pq.read_table(self.work_dir / path) for key, path in entry["files"].items()}
            return tables, entry["stats"], True
        tables, stats = compute()
        files = {}
        for key, table in tables.items():
            files[key] = f"{name}.{key}.parquet"
            pq.write_table(table, self.work_dir / files[key])
        self.manifest[name] = {"fingerprint": fingerprint, "files": files, "stats": stats}
        self.manifest_path.write_text(json.dumps(self.manifest, indent=1))
        return tables, stats, False


def _file_identity(path: Path) -> dict:
    """What makes a raw file's cached step results stale: its path, size and modification time (ns)."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _graph_stage(
    config: BuildConfig, purchases: Purchases, all_edges: pa.Table | None, valid_items: np.ndarray
) -> tuple[np.ndarray, pa.Table, dict[str, int]]:
    """Steps 2-4 for one set of valid items: `(node item indices, edges, stats)`."""
    if config.kcore_on == "copurchase":
        src, dst = all_edges.column("src").to_numpy(), all_edges.column("dst").to_numpy()
        keep = valid_items[src] & valid_items[dst]
        edges = all_edges.filter(pa.array(keep))
        src, dst = src[keep], dst[keep]
        nodes_before = int(np.union1d(src, dst).size)
        node_mask, edge_mask, rounds = kcore_graph(src, dst, purchases.num_items, config.kcore_k)
        edges = edges.filter(pa.array(edge_mask))
        stats = {
            "edges_touching_invalid_items": int((~keep).sum()),
            "kcore_rounds": rounds,
            "kcore_removed_nodes": nodes_before - int(node_mask.sum()),
            "kcore_removed_edges": int(edge_mask.size - edge_mask.sum()),
        }
        return np.flatnonzero(node_mask), edges, stats
    kept = purchases.select(valid_items[purchases.item])
    purchase_mask, rounds = kcore_bipartite(kept.user, kept.item, kept.num_users, kept.num_items, config.kcore_k)
    cored = kept.select(purchase_mask)
    edges, edge_stats = copurchase_edges(cored, config.min_copurchase, config.max_items_per_user)
    nodes = np.union1d(edges.column("src").to_numpy(), edges.column("dst").to_numpy())
    stats = {
        "purchases_of_invalid_items": int(purchases.user.size - kept.user.size),
        "kcore_rounds": rounds,
        "kcore_removed_purchases": int(purchase_mask.size - purchase_mask.sum()),
        "items_in_bipartite_core": int(np.unique(cored.item).size),
        "items_without_edges": int(np.unique(cored.item).size - nodes.size),
        **{f"core_{key}": value for key, value in edge_stats.items()},
    }
    return nodes, edges, stats


def _bad_lines_reason(bad_lines: dict) -> str:
    return f"bad lines skipped ({bad_lines['file']}{', cut off' if bad_lines['truncated'] else ''})"


def _top_reviews(raw: RawCategoryFiles, asins: list[str], per_node: int, on_bad_lines: str) -> dict[str, list[str]]:
    """Up to `per_node` review texts per item: most helpful first, then oldest."""
    kept: list[pa.Table] = []
    rows = 0

    def reduce(tables: list[pa.Table]) -> list[pa.Table]:
        table = pa.concat_tables(tables).sort_by([("parent_asin", "ascending"), ("helpful_vote", "descending"), ("timestamp", "ascending")])
        asin = table.column("parent_asin").to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, asin[1:] != asin[:-1]])
        rank = np.arange(asin.size) - np.repeat(starts, np.diff(np.r_[starts, asin.size]))
        return [table.filter(pa.array(rank < per_node))]

    for batch in iter_review_texts(raw.reviews, asins, on_bad_lines):
        batch = batch.filter(pc.greater(pc.utf8_length(pc.fill_null(batch.column("text"), "")), 0))
        kept.append(pa.Table.from_batches([batch]))
        rows += batch.num_rows
        if rows > 1_000_000:  # bound memory: keep only the current top texts
            kept, rows = reduce(kept), 0
    if not kept:
        return {}
    table = reduce(kept)[0]
    grouped: dict[str, list[str]] = {}
    for asin, text in zip(table.column("parent_asin").to_pylist(), table.column("text").to_pylist()):
        grouped.setdefault(asin, []).append(text)
    return grouped


def _graph_signal(nodes_asin: list[str], graph: NodeGraph, truth: dict[str, int], seed: int = 0) -> dict[str, float]:
    """Share of node pairs in the same latent product line, by hop distance, against random pairs."""
    line = np.array([truth.get(asin, -1) for asin in nodes_asin])
    rng = np.random.default_rng(seed)
    sources = rng.choice(graph.num_nodes, size=min(256, graph.num_nodes), replace=False)
    distances = graph.hop_distances_from(sources, max_hops=3)
    signal = {}
    for hop in (1, 2, 3):
        rows, cols = np.nonzero(distances == hop)
        signal[f"{hop}-hop"] = float(np.mean(line[sources[rows]] == line[cols])) if rows.size else float("nan")
    a, b = rng.integers(0, graph.num_nodes, size=(2, 20000))
    signal["random pairs"] = float(np.mean(line[a[a != b]] == line[b[a != b]]))
    return signal


def build_dataset(config: BuildConfig) -> BuildResult:
    """Run the whole pipeline (see the module docstring) and write the dataset to `config.out_dir`.

    Each step's output is kept under `config.work_dir`: a second run with the same settings reuses every step, and
    one with other settings recomputes from the first step they change; an interrupted run resumes at its step.

    Args:
        config ([`BuildConfig`]): the category, where the raw files are (or the Hub), the filters, the image
            settings and the output folder; every field is a flag of `slip-hf build-dataset`.

    Returns:
        [`BuildResult`]: the output folder, the config name, the node and edge counts, one record per step (kept,
            dropped with reasons, fixed, seconds: the table the command prints) and the stats written to
            `stats/<config>.json`.

    Example:

    ```python
    from slip_hf.data import BuildConfig, build_dataset

    result = build_dataset(BuildConfig(category="Electronics", raw_dir="raw/", out_dir="amazon-copurchase-mm"))
    result.num_nodes, result.num_edges
    ```
    """
    out_dir = Path(config.out_dir)
    raw = locate_raw_files(config.raw_dir, config.category) if config.raw_dir else download_raw_files(config.category)
    cache = StepCache(config.work_path)  # created once the raw files are found: a failed start leaves nothing
    records: list[StepRecord] = []

    def timed(name, params, upstream, compute):
        start = time.perf_counter()
        tables, stats, reused = cache.run(name, params, upstream, compute)
        return tables, stats, reused, time.perf_counter() - start

    # 1. purchases
    def compute_purchases():
        purchases, stats = read_purchases(raw.reviews, config.verified_only, config.on_bad_lines)
        return {"purchases": purchases.to_table(), "items": pa.table({"parent_asin": purchases.item_ids})}, {**stats, "num_users": purchases.num_users}

    tables, purchase_stats, reused, seconds = timed(
        "purchases",
        {"reviews": _file_identity(raw.reviews), "verified_only": config.verified_only, "on_bad_lines": config.on_bad_lines},
        [], compute_purchases,
    )
    purchases = Purchases.from_tables(tables["purchases"], tables["items"].column("parent_asin").combine_chunks(), purchase_stats["num_users"])
    asin_of_item = purchases.item_ids.to_pylist()
    records.append(StepRecord("1. purchases", purchase_stats["purchases"], {
        _bad_lines_reason(purchase_stats["bad_lines"]): purchase_stats["bad_lines"]["skipped"],
        "malformed reviews": purchase_stats["malformed_reviews"],
        "unverified reviews" + ("" if config.verified_only else " (kept)"): purchase_stats["unverified_reviews"],
        "repeated (user, item) reviews": purchase_stats["duplicate_purchases"],
    }, seconds, reused))

    # 2. co-purchase edges on all purchases (the copurchase order; the bipartite order counts after its core)
    edge_params = {"min_copurchase": config.min_copurchase, "max_items_per_user": config.max_items_per_user}
    all_edges = None
    if config.kcore_on == "copurchase":
        def compute_edges():
            edges, stats = copurchase_edges(purchases, config.min_copurchase, config.max_items_per_user)
            return {"edges": edges}, stats

        tables, edge_stats, reused, seconds = timed("edges", edge_params, ["purchases"], compute_edges)
        all_edges = tables["edges"]
        records.append(StepRecord("2. co-purchase edges", edge_stats["edges"], {
            f"item pairs with < {config.min_copurchase} co-buyers": edge_stats["pairs_below_threshold"],
            "heavy users skipped": edge_stats["heavy_users_skipped"],
        }, seconds, reused))
        wanted_items = np.union1d(all_edges.column("src").to_numpy(), all_edges.column("dst").to_numpy())
    else:
        wanted_items = np.unique(purchases.item)

    # 3. valid items
    wanted = [asin_of_item[i] for i in wanted_items]

    def compute_items():
        items, stats = load_items(raw.meta, wanted, config.require_description, config.on_bad_lines)
        return {"items": items}, stats

    tables, item_stats, reused, seconds = timed(
        "items",
        {"meta": _file_identity(raw.meta), "require_description": config.require_description, "on_bad_lines": config.on_bad_lines},
        ["purchases", *(["edges"] if all_edges is not None else [])], compute_items,
    )
    items = tables["items"]
    item_index = {asin: i for i, asin in enumerate(asin_of_item)}
    valid = np.zeros(purchases.num_items, dtype=bool)
    valid[[item_index[a] for a in items.column("parent_asin").to_pylist()]] = True
    records.append(StepRecord("3. valid items", item_stats["valid_items"], {
        _bad_lines_reason(item_stats["bad_lines"]): item_stats["bad_lines"]["skipped"],
        **{key.replace("_", " "): value for key, value in item_stats.items() if key not in ("valid_items", "bad_lines")},
    }, seconds, reused))

    # 4. k-core
    start = time.perf_counter()
    core_nodes, _, core_stats = _graph_stage(config, purchases, all_edges, valid)
    records.append(StepRecord(f"4. {config.kcore_k}-core ({config.kcore_on})", int(core_nodes.size), {
        key.replace("_", " "): value for key, value in core_stats.items() if "removed" in key or "without" in key
    }, time.perf_counter() - start, False))

    # 5. images
    start = time.perf_counter()
    url_of = dict(zip(items.column("parent_asin").to_pylist(), items.column("image_url").to_pylist()))
    core_asins = [asin_of_item[i] for i in core_nodes]
    downloader = ImageDownloader(
        config.work_path, image_size=config.image_size, center_crop=config.center_crop_images,
        deadline=config.download_deadline, local_roots=["/"] if config.allow_local_files else None,
        num_workers=config.download_workers,
        timeout=config.download_timeout, retries=config.download_retries, background=tuple(config.image_background),
    )
    results = downloader.download([(asin, url_of[asin]) for asin in core_asins], retry_failed=config.retry_failed_downloads)
    image_ok = {asin for asin in core_asins if results[asin].status == "ok"}
    failures: dict[str, int] = {}
    for asin in core_asins:
        if results[asin].status != "ok":
            failures[f"image {results[asin].status}"] = failures.get(f"image {results[asin].status}", 0) + 1
    records.append(StepRecord("5. images", len(image_ok), failures, time.perf_counter() - start, False,
                              fix_counts(results[asin] for asin in core_asins)))

    # 6. CLIP-T
    scored = sorted(image_ok)
    clip_title = dict.fromkeys(scored, float("nan"))
    clip_description = dict.fromkeys(scored, float("nan"))
    if config.clip_t_model:
        text_of = {a: (t, d) for a, t, d in zip(*(items.column(c).to_pylist() for c in ("parent_asin", "title", "description")))}

        def compute_clip_t():
            titles, descriptions = clip_t_scores(
                config.clip_t_model, [results[a].path for a in scored], [text_of[a][0] for a in scored], [text_of[a][1] for a in scored]
            )
            return {"scores": pa.table({"parent_asin": scored, "title": titles, "description": descriptions})}, {}

        images = json.dumps([[results[a].url, results[a].num_bytes, results[a].source, results[a].view_version,
                              results[a].background] for a in scored])
        tables, _, reused, seconds = timed(
            "clip_t", {"model": config.clip_t_model, "nodes": scored, "images": hashlib.sha256(images.encode()).hexdigest()},
            ["items"], compute_clip_t,
        )
        scores = tables["scores"]
        clip_title = dict(zip(scores.column("parent_asin").to_pylist(), scores.column("title").to_pylist()))
        clip_description = dict(zip(scores.column("parent_asin").to_pylist(), scores.column("description").to_pylist()))
        below = {a for a in scored if config.min_clip_t is not None and not clip_title[a] >= config.min_clip_t}
        records.append(StepRecord("6. CLIP-T", len(scored) - len(below), {f"title CLIP-T < {config.min_clip_t}": len(below)} if config.min_clip_t is not None else {}, seconds, reused))
        image_ok -= below

    # 7. final graph: failed and filtered items count as invalid, steps 2-4 again
    start = time.perf_counter()
    final_valid = np.zeros_like(valid)
    final_valid[[item_index[a] for a in image_ok]] = True
    nodes, edges, final_stats = _graph_stage(config, purchases, all_edges, final_valid)
    node_asins = [asin_of_item[i] for i in nodes]
    records.append(StepRecord("7. final graph", int(nodes.size), {
        "nodes removed by the re-applied core": len(image_ok) - int(nodes.size)
    }, time.perf_counter() - start, False))
    if nodes.size == 0:
        raise ValueError("the build left no node: lower kcore_k / min_copurchase, or check the raw data and image URLs.")

    # 8. labels, split, files
    start = time.perf_counter()
    row_of = {a: i for i, a in enumerate(items.column("parent_asin").to_pylist())}
    meta = items.take(pa.array([row_of[a] for a in node_asins]))
    labels, label_names, label_stats = assign_labels(meta.column("category_path").to_pylist(), config.label_depth, config.min_class_size)
    split = assign_splits(nodes.size, config.train_fraction, config.validation_fraction, config.seed)
    node_id_of_item = np.full(purchases.num_items, -1, dtype=np.int64)
    node_id_of_item[nodes] = np.arange(nodes.size)
    edge_table = pa.table({
        "src": node_id_of_item[edges.column("src").to_numpy()],
        "dst": node_id_of_item[edges.column("dst").to_numpy()],
        "count": edges.column("count"),
        "first_time": edges.column("first_time"),
        "last_time": edges.column("last_time"),
    })
    reviews = _top_reviews(raw, node_asins, config.max_reviews_per_node, config.on_bad_lines) if config.max_reviews_per_node > 0 else None
    node_columns = {
        "node_id": np.arange(nodes.size),
        "parent_asin": node_asins,
        "title": meta.column("title").to_pylist(),
        "description": meta.column("description").to_pylist(),
        "features": meta.column("features").to_pylist(),
        "store": meta.column("store").to_pylist(),
        "image_path": [results[a].path for a in node_asins],
        "category_path": meta.column("category_path").to_pylist(),
        "label": labels,
        "clip_t_title": np.array([clip_title[a] for a in node_asins], dtype=np.float32),
        "clip_t_description": np.array([clip_description[a] for a in node_asins], dtype=np.float32),
        "split": [SPLITS[s] for s in split],
    }
    if reviews is not None:
        node_columns["reviews"] = [reviews.get(a, []) for a in node_asins]
    write_config(out_dir, config, node_columns, label_names, edge_table, cache_dir=config.work_path / "hf_cache")
    records.append(StepRecord("8. labels, split, files", int(nodes.size), {
        "nodes in merged rare classes": label_stats["nodes_in_rare_classes"],
        "nodes without a path entry at the label depth": label_stats["short_paths"],
    }, time.perf_counter() - start, False))

    truth = load_synthetic_truth(config.raw_dir) if config.raw_dir else None
    graph = NodeGraph.from_edges(edge_table.column("src").to_numpy(), edge_table.column("dst").to_numpy(), nodes.size)
    clip_values = {
        name: [float(v) for v in values if not math.isnan(v)]
        for name, values in (("title", node_columns["clip_t_title"]), ("description", node_columns["clip_t_description"]))
    }
    degrees = graph.degree()
    stats = {
        "config_name": config.config_name,
        "category": config.category,
        "nodes": int(nodes.size),
        "edges": int(edge_table.num_rows),
        "mean_degree": float(degrees.mean()),
        "min_degree": int(degrees.min()),
        "max_degree": int(degrees.max()),
        "splits": {name: int((split == i).sum()) for i, name in enumerate(SPLITS)},
        "labels": {name: int((labels == i).sum()) for i, name in enumerate(label_names)},
        "clip_t": {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "count": len(v)} if v else None
            for name, v in clip_values.items()
        },
        "clip_t_model": config.clip_t_model,
        "purchases": {key: value for key, value in purchase_stats.items() if key != "bad_lines"},
        "bad_lines": {"reviews": purchase_stats["bad_lines"], "metadata": item_stats["bad_lines"]},
        "steps": [asdict(record) for record in records],
        "graph_signal": _graph_signal(node_asins, graph, truth) if truth else None,
        "config": {k: v for k, v in asdict(config).items() if k not in ("raw_dir", "out_dir", "work_dir")},
    }
    stats_dir = out_dir / "stats"
    stats_dir.mkdir(parents=True, exist_ok=True)
    (stats_dir / f"{config.config_name}.json").write_text(json.dumps(stats, indent=1))
    write_dataset_card(out_dir)
    return BuildResult(out_dir, config.config_name, int(nodes.size), int(edge_table.num_rows), records, stats)


def summary_table(records: list[StepRecord]) -> str:
    """The build's steps as a markdown table: what each kept, what it dropped and why, what it repaired (images:
    turned upright, transparency flattened, 16-bit scaled, an animation's first frame), and its time."""
    lines = ["| step | kept | dropped (reason: count) | fixed (kind: count) | seconds |", "|---|---:|---|---|---:|"]
    for record in records:
        dropped = "; ".join(f"{reason}: {count}" for reason, count in record.dropped.items() if count) or "-"
        fixed = "; ".join(f"{kind}: {count}" for kind, count in record.fixed.items() if count) or "-"
        lines.append(f"| {record.step} | {record.kept} | {dropped} | {fixed} | "
                     f"{record.seconds:.1f}{' (reused)' if record.reused else ''} |")
    return "\n".join(lines)


__all__ = ["BuildConfig", "BuildResult", "StepCache", "StepRecord", "build_dataset", "summary_table"]
