"""A FAISS index of one vector column of an embeddings folder, chosen for the catalogue's size and a memory
budget, tuned to a measured recall, and saved beside the embeddings with the model's and dataset's fingerprints.

* Below `exact_below` vectors the index is exact: `IndexFlatIP`, whose top k are the exact search's (inner
  product of l2-normalised vectors, i.e. cosine).
* From there on it is approximate: an inverted file over `nlist` cells (an HNSW graph finds a query's cells)
  whose lists hold 4-bit product-quantised codes searched with SIMD ("fast scan"), re-ranked with the vectors
  in float16 (`IVF{nlist}_HNSW32,PQ{m}x4fs,Refine(SQfp16)`; m = d/2 sub-vectors, fewer if the budget needs). The codes and cell ids are what must stay in memory; the float16 vectors are read, memory-
  mapped, only for the `k_factor * k` candidates of a query, so a 10M-item catalogue's index is searched within a
  few GB. `nprobe` (cells visited) and `k_factor` are then raised until recall@10 against the exact search, on
  queries of the other modality (titles against images, as the Space searches), reaches the target.

This is the memory-budget choice autofaiss makes (clip-retrieval's indexer); autofaiss itself pins `numpy<2`
and `pandas<3`, which the rest of this stack (pyarrow, datasets) has left, so it is not a dependency.
"""

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..paths import write_whole
from .record import INDEX, RECORD, EmbeddingsRecord, data_files, read_record

EXACT_BELOW = 200_000
"""Default size from which an index is approximate: an exact search of 200,000 512-d vectors takes about 20 ms on
one core (`benchmarks/index_scale.py`), the goal of an approximate one at 10M."""

TARGET_RECALL = 0.95
"""Default recall@10 the search parameters of an approximate index are tuned to."""

MEMORY_BUDGET = "4GB"
"""Default memory an index may keep resident."""

_NPROBES = (8, 16, 32, 64, 128)
_K_FACTORS = (4, 8, 16, 32, 64)


def parse_bytes(text: str | int) -> int:
    """`"4GB"`, `"512MB"`, `"2GiB"` or a number of bytes -> bytes."""
    if isinstance(text, int):
        return text
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    value = text.strip().upper().replace(" ", "")
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * factor)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"memory budget {text!r}: expected e.g. 4GB, 512MB or a number of bytes.") from None


@dataclass
class IndexChoice:
    """The index for `rows` vectors of size `dim` under a memory budget.

    Attributes:
        factory: the FAISS `index_factory` string.
        exact: whether its top k are the exact search's.
        resident_bytes: what the index keeps in memory (the vectors for an exact index; codes, ids and centroids
            for an approximate one, whose float16 vectors are memory-mapped and read per query).
        train_rows: vectors its training (coarse centroids, product quantiser) samples.
    """

    factory: str
    exact: bool
    resident_bytes: int
    train_rows: int = 0


def choose_index(rows: int, dim: int, memory_budget: int | str = MEMORY_BUDGET, exact_below: int = EXACT_BELOW) -> IndexChoice:
    """The index for `rows` vectors of size `dim`: exact below `exact_below`, else IVF-PQ with float16 re-ranking
    whose resident part fits `memory_budget` (see the module docstring).

    Args:
        rows: the catalogue's items.
        dim: the vectors' size.
        memory_budget: what the index may keep in memory (`"4GB"`, `"512MB"` or bytes).
        exact_below: items below which the index is exact.

    Returns:
        [`IndexChoice`]: the FAISS factory string, whether it is exact, its resident bytes and training sample.

    Raises:
        ValueError: if not even the smallest approximate index fits the budget.
    """
    budget = parse_bytes(memory_budget)
    if rows < exact_below:
        return IndexChoice("Flat", True, rows * dim * 4)
    nlist = int(2 ** round(np.log2(2 * np.sqrt(rows))))  # 1,024 cells at 300k, 2,048 at 1M, 8,192 at 10M
    nlist = max(1, min(nlist, 2 ** int(np.log2(max(rows // 40, 1)))))  # k-means wants 39+ vectors a cell
    centroids = nlist * dim * 4 + nlist * 32 * 8 * 2  # the coarse centroids and their HNSW graph
    for m in (dim // 2, dim // 4, dim // 8):  # 4-bit codes (FAISS's fast scan): m / 2 bytes a vector
        if m < 2 or dim % m or m % 2:
            continue
        resident = rows * (m // 2 + 8) + centroids  # the codes and 64-bit ids of every vector
        if resident <= budget:
            return IndexChoice(f"IVF{nlist}_HNSW32,PQ{m}x4fs,Refine(SQfp16)", False, resident,
                               train_rows=min(rows, max(40 * nlist, 100_000)))
    raise ValueError(f"no index of {rows:,} vectors of {dim} fits a memory budget of {budget / 2**30:.2f} GiB; raise "
                     "--memory_budget.")


def build_index(choice: IndexChoice, dim: int, rows: int, batches: Callable[[], Iterator[np.ndarray]],
                training: np.ndarray | None = None):
    """A FAISS index of `choice`, trained on `training` (`(n, dim)` float32; for approximate indexes) and filled with
    the `rows` vectors of `batches()`, an iterator of `(b, dim)` float32 arrays in row order (row i gets id i).

    The float16 vectors of an approximate index are written once into a buffer of their final size: added batch by
    batch, FAISS would grow it by doubling, and at 10M × 512 that holds 2.5 times their 10 GB for a moment."""
    import faiss

    index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        if training is None:
            raise ValueError(f"{choice.factory} must be trained: pass a sample of the vectors.")
        index.train(np.ascontiguousarray(training, dtype=np.float32))
    refine = faiss.downcast_index(index.refine_index) if isinstance(index, faiss.IndexRefine) else None
    if refine is not None:
        base = faiss.downcast_index(index.base_index)
        refine.codes.resize(rows * refine.code_size)
        codes = faiss.rev_swig_ptr(refine.codes.data(), rows * refine.code_size)
    added = 0
    for batch in batches():
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if refine is None:
            index.add(batch)
        else:  # SQfp16 codes are the vectors in IEEE half precision
            base.add(batch)
            codes[added * refine.code_size : (added + len(batch)) * refine.code_size] = batch.astype(np.float16).view(np.uint8).ravel()
        added += len(batch)
    if added != rows:
        raise ValueError(f"expected {rows:,} vectors, got {added:,}.")
    if refine is not None:
        refine.ntotal = index.ntotal = rows
    return index


def set_search_parameters(index, nprobe: int | None = None, k_factor: int | None = None) -> None:
    """Set an approximate index's cells visited per query and re-ranking depth (an exact index has neither)."""
    import faiss

    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    if k_factor is not None:
        faiss.downcast_index(index).k_factor = k_factor


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top k (`truth`, `(q, k)` ids) that the index found (`found`)."""
    return float(np.mean([np.intersect1d(f, t).size / t.size for f, t in zip(found, truth)]))


def exact_neighbours(queries: np.ndarray, batches: Callable[[], Iterator[np.ndarray]], k: int = 10) -> np.ndarray:
    """The exact top-k ids of `queries` over the vectors of `batches()` (a flat search, chunk by chunk)."""
    import faiss

    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.full((len(queries), k), -1, dtype=np.int64)
    offset = 0
    for batch in batches():
        flat = faiss.IndexFlatIP(batch.shape[1])
        flat.add(np.ascontiguousarray(batch, dtype=np.float32))
        scores, ids = flat.search(queries, min(k, len(batch)))
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids + offset], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        offset += len(batch)
    return best_ids


def tune(index, queries: np.ndarray, truth: np.ndarray, target_recall: float = TARGET_RECALL) -> tuple[dict, float]:
    """The smallest `k_factor`, then `nprobe`, at which recall@10 of `queries` reaches `target_recall` (or the best
    tried), and that recall. `k_factor` first: each re-ranked candidate is a float16 row read from the memory-mapped
    file, a page fault on a cold cache, while cells are scanned in memory."""
    best: tuple[dict, float] = ({}, 0.0)
    for k_factor in _K_FACTORS:
        for nprobe in _NPROBES:
            set_search_parameters(index, nprobe, k_factor)
            recall = recall_at(index.search(queries, truth.shape[1])[1], truth)
            best = max(best, ({"nprobe": nprobe, "k_factor": k_factor}, recall), key=lambda item: item[1])
            if recall >= target_recall:
                return {"nprobe": nprobe, "k_factor": k_factor}, recall
    return best


def read_index(path: str | os.PathLike, search_parameters: dict | None = None, memory_map: bool = True):
    """Load a saved index; with `memory_map` the float16 vectors of an approximate index (and an exact index's
    vectors) stay on disk and are read as queries touch them."""
    import faiss

    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if memory_map else 0
    index = faiss.read_index(str(path), flags)
    set_search_parameters(index, **(search_parameters or {}))
    return index


def _column_batches(files: list[Path], column: str, rows_per_batch: int = 65_536) -> Callable[[], Iterator[np.ndarray]]:
    """`(b, d)` float32 batches of a vector column, read from the parquet shards one record batch at a time."""
    import pyarrow.parquet as pq

    def batches() -> Iterator[np.ndarray]:
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows_per_batch, columns=[column]):
                values = batch.column(0)
                yield values.values.to_numpy(zero_copy_only=False).reshape(len(values), -1).astype(np.float32)

    return batches


def _sample_rows(batches: Callable[[], Iterator[np.ndarray]], rows: int, count: int, seed: int) -> np.ndarray:
    """`count` rows drawn at random (without replacement) from the vectors of `batches()`."""
    chosen = np.sort(np.random.default_rng(seed).choice(rows, size=min(count, rows), replace=False))
    picked, offset = [], 0
    for batch in batches():
        inside = chosen[(chosen >= offset) & (chosen < offset + len(batch))] - offset
        picked.append(batch[inside])
        offset += len(batch)
    return np.concatenate(picked)


QUERY_COLUMN = {"image_embedding": "text_embedding", "text_embedding": "image_embedding", "node_embedding": "node_embedding"}
"""Which column's vectors stand for the queries of an index when its recall is measured: titles search images and
images search titles, as in the Space; Z searches Z (related items)."""


@dataclass
class IndexArguments:
    """`slip-hf index`: an embeddings folder's search index."""

    index: str = field(metadata={"help": "The embeddings folder written by slip-hf embed."})
    columns: list[str] = field(default_factory=lambda: ["image_embedding", "text_embedding"],
                               metadata={"help": "Vector columns to index (node_embedding too, for related items by Z)."})
    memory_budget: str = field(default=MEMORY_BUDGET, metadata={"help": "Memory the index may keep resident (e.g. 4GB, 512MB)."})
    exact_below: int = field(default=EXACT_BELOW, metadata={"help": "Items below which the index is exact (FAISS flat)."})
    target_recall: float = field(default=TARGET_RECALL, metadata={"help": "recall@10 the approximate index's search parameters are tuned to."})


def index_folder(
    folder: str | os.PathLike, columns: tuple[str, ...] = ("image_embedding", "text_embedding"),
    memory_budget: int | str = MEMORY_BUDGET, exact_below: int = EXACT_BELOW, target_recall: float = TARGET_RECALL,
    recall_queries: int = 1000, seed: int = 0, log: Callable[[str], None] = print, rebuild: bool = True,
) -> EmbeddingsRecord:
    """Build, tune and save an index of each of `columns` of a finished embeddings folder, as
    `index/<column>.faiss` with its entry in the folder's record (factory, search parameters, measured recall,
    size, both fingerprints) and card.

    Args:
        folder: a finished embeddings folder (`slip-hf embed`).
        columns: the vector columns to index (`image_embedding`, `text_embedding`, `node_embedding`).
        memory_budget: what an index may keep in memory ([`choose_index`]).
        exact_below: items below which an index is exact.
        target_recall: recall@10 that an approximate index's `nprobe` and `k_factor` are raised to.
        recall_queries: queries its recall is measured on (vectors of the other modality, `QUERY_COLUMN`).
        seed: the draw of the training sample and of the queries.
        log: where a line per index goes.
        rebuild: build every index again; `False` keeps an index already built with these settings from these
            fingerprints (a rerun of `slip-hf embed` on a finished folder).

    Returns:
        [`EmbeddingsRecord`]: the folder's record, with the new indexes.

    Raises:
        ValueError: an unfinished folder, a column it does not hold, a budget no index fits.
    """
    import faiss

    from .card import write_card

    folder = Path(folder)
    record = read_record(folder)
    files = data_files(folder, record)
    (folder / INDEX).mkdir(exist_ok=True)
    for column in columns:
        if column not in record.dims:
            raise ValueError(f"embeddings {folder} hold no {column!r} (they hold {', '.join(record.dims)}).")
        settings = {"memory_budget": parse_bytes(memory_budget), "exact_below": exact_below,
                    "target_recall": target_recall, "recall_queries": recall_queries, "seed": seed}
        path = folder / INDEX / f"{column}.faiss"
        built = record.indexes.get(column, {})
        if not rebuild and path.is_file() and path.stat().st_size == built.get("bytes") and built.get("settings") == settings and all(
                built.get(key) == getattr(record, key) for key in ("model_fingerprint", "dataset_fingerprint", "rows")):
            log(f"{column}: kept the index built with these settings ({built['factory']}; slip-hf index builds it again)")
            continue
        dim = record.dims[column]
        choice = choose_index(record.rows, dim, memory_budget, exact_below)
        batches = _column_batches(files, column)
        started = time.perf_counter()
        training = _sample_rows(batches, record.rows, choice.train_rows, seed) if choice.train_rows else None
        index = build_index(choice, dim, record.rows, batches, training)
        build_seconds = time.perf_counter() - started
        entry = {"factory": choice.factory, "exact": choice.exact, "search_parameters": {}, "rows": record.rows,
                 "model_fingerprint": record.model_fingerprint, "dataset_fingerprint": record.dataset_fingerprint,
                 "recall_at_10": 1.0, "recall_queries": 0, "settings": settings}
        if not choice.exact:
            query_batches = _column_batches(files, QUERY_COLUMN[column])
            queries = _sample_rows(query_batches, record.rows, recall_queries, seed + 1)
            truth = exact_neighbours(queries, batches, 10)
            entry["search_parameters"], entry["recall_at_10"] = tune(index, queries, truth, target_recall)
            entry["recall_queries"] = len(queries)
        write_whole(path, lambda temporary, index=index: faiss.write_index(index, str(temporary)))
        entry["bytes"] = path.stat().st_size
        entry["resident_bytes"] = choice.resident_bytes
        record.indexes[column] = entry
        record.save(folder / RECORD)
        write_card(folder, record)
        recall = "exact" if choice.exact else f"recall@10 {entry['recall_at_10']:.3f} at {entry['search_parameters']}"
        log(f"{column}: {choice.factory}, {record.rows:,} vectors, {recall}, {entry['bytes'] / 2**20:,.1f} MiB, "
            f"built in {build_seconds:.1f} s")
    return record


__all__ = ["EXACT_BELOW", "MEMORY_BUDGET", "QUERY_COLUMN", "TARGET_RECALL", "IndexArguments", "IndexChoice", "build_index", "choose_index",
           "exact_neighbours", "index_folder", "parse_bytes", "read_index", "recall_at", "set_search_parameters", "tune"]
