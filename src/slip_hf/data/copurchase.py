"""Steps 1-2 of the graph build: purchases from reviews, then co-purchase edges (§5 of the SLIP paper).

A *purchase* is a distinct (user, item) pair; its time is the user's earliest review of the item (repeated
reviews of the same item count once, as in the Amazon 2023 benchmark scripts). Items i and j are linked when
at least `min_copurchase` distinct users bought both. Per edge we keep the count and the first and last
co-purchase time, where one user's co-purchase of (i, j) happens at `max(t_ui, t_uj)`, when the pair was
completed.

Counting is exact and vectorised: every user's item pairs are enumerated with numpy (users grouped by
degree, so each group is one `triu_indices` gather), each packed with its time's rank into one int64, and
grouped by one sort of those values (numpy's SIMD sort; count, first and last time per pair fall out of the
sorted order). When the pairs would exceed `memory_budget_bytes`, they are hash-partitioned to disk and each
partition is grouped on its own, so memory stays bounded on any input. Two
exact pruning rules come first: an item bought by fewer than `min_copurchase` users cannot reach the
threshold, and a user left with one item contributes no pair.

Heavy users (resellers, bots) own most pairs, as a user with d items yields d(d-1)/2 of them.
`max_items_per_user` leaves users with more distinct items out of the counting; the default `None` keeps the
count exact. `benchmarks/build_graph.py` measures the cost of exactness against a cap.
"""

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from .amazon_raw import iter_review_batches
from .json_lines import BadLines


@dataclass
class Purchases:
    """Distinct purchases, sorted by user, then item.

    Attributes:
        user (`np.ndarray` of shape `(P,)`, int64): user index in `[0, num_users)`.
        item (`np.ndarray` of shape `(P,)`, int64): item index into `item_ids`.
        time (`np.ndarray` of shape `(P,)`, int64): Unix ms of the user's first review of the item.
        item_ids (`pa.Array` of strings): `parent_asin` of each item index, sorted.
        num_users (`int`): number of distinct users.
    """

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray
    item_ids: pa.Array
    num_users: int

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def user_indptr(self) -> np.ndarray:
        """CSR row pointer over users: user u bought `item[indptr[u]:indptr[u + 1]]` (ascending)."""
        indptr = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.user, minlength=self.num_users), out=indptr[1:])
        return indptr

    def select(self, keep: np.ndarray) -> "Purchases":
        """The purchases where `keep` is True (same user and item index spaces)."""
        return Purchases(self.user[keep], self.item[keep], self.time[keep], self.item_ids, self.num_users)

    def to_table(self) -> pa.Table:
        return pa.table({"user": self.user, "item": self.item, "time": self.time})

    @classmethod
    def from_tables(cls, purchases: pa.Table, item_ids: pa.Array, num_users: int) -> "Purchases":
        column = lambda name: purchases.column(name).to_numpy().astype(np.int64, copy=False)  # noqa: E731
        return cls(column("user"), column("item"), column("time"), item_ids, num_users)


def _encode(values: pa.ChunkedArray, sort: bool) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of `values` and the distinct values they index, in order of first appearance or sorted.

    Arrow encodes all chunks with one hash table, so the codes agree across chunks and the longest chunk
    dictionary holds every value; only the distinct values are sorted, never the column.
    """
    encoded = values.dictionary_encode()
    dictionary = max((chunk.dictionary for chunk in encoded.chunks), key=len)
    codes = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in encoded.chunks]).astype(np.int64)
    if sort:
        order = pc.array_sort_indices(dictionary).to_numpy()
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        codes, dictionary = rank[codes], dictionary.take(pa.array(order))
    return codes, dictionary


def read_purchases(
    review_path: str | os.PathLike, verified_only: bool = False, on_bad_lines: str = "error"
) -> tuple[Purchases, dict]:
    """Step 1: distinct (user, item, earliest time) purchases from a review file.

    Args:
        review_path: a `review_categories/<Category>.jsonl[.gz]` file.
        verified_only: keep only reviews with `verified_purchase == true`.
        on_bad_lines: `"error"` stops at the first line that is not a JSON object of the review schema;
            `"skip"` skips and counts such lines ([`json_lines.BadLines`]).

    Returns:
        `(purchases, stats)`; `stats` counts `reviews`, `malformed_reviews` (missing or empty `user_id`,
        `parent_asin` or `timestamp`), `unverified_reviews` (dropped only with `verified_only`),
        `duplicate_purchases` (repeated (user, item) pairs), `purchases`, `users`, `items` and
        `single_purchase_users`, and has the file's skipped lines under `bad_lines`.
    """
    stats = {"reviews": 0, "malformed_reviews": 0, "unverified_reviews": 0}
    parts = []
    bad_lines = BadLines(str(review_path), on_bad_lines)
    for batch in iter_review_batches(review_path, bad_lines=bad_lines):
        stats["reviews"] += batch.num_rows
        user, asin, time = batch.column("user_id"), batch.column("parent_asin"), batch.column("timestamp")
        valid = pc.and_(
            pc.and_(pc.is_valid(time), pc.greater(pc.utf8_length(pc.fill_null(user, "")), 0)),
            pc.greater(pc.utf8_length(pc.fill_null(asin, "")), 0),
        )
        stats["malformed_reviews"] += batch.num_rows - (pc.sum(valid).as_py() or 0)
        verified = pc.fill_null(batch.column("verified_purchase"), False)
        stats["unverified_reviews"] += pc.sum(pc.and_(valid, pc.invert(verified))).as_py() or 0
        if verified_only:
            valid = pc.and_(valid, verified)
        parts.append(pa.table({"user": user, "item": asin, "time": time}).filter(valid))
    if not parts or sum(part.num_rows for part in parts) == 0:
        raise ValueError(f"{review_path}: no usable review (user_id, parent_asin and timestamp are required).")
    table = pa.concat_tables(parts)
    del parts
    user_codes, user_ids = _encode(table.column("user"), sort=False)  # user order does not matter
    item_codes, item_ids = _encode(table.column("item"), sort=True)
    times = table.column("time").to_numpy()
    del table

    num_items = len(item_ids)
    key = user_codes * num_items + item_codes
    del user_codes, item_codes
    order = np.argsort(key)  # any order within a key: the earliest time is taken below
    key, times = key[order], times[order]
    del order
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    distinct = key[starts]
    purchases = Purchases(distinct // num_items, distinct % num_items, np.minimum.reduceat(times, starts), item_ids, len(user_ids))
    per_user = np.bincount(purchases.user, minlength=purchases.num_users)
    stats.update(
        duplicate_purchases=int(key.size - starts.size),
        purchases=int(starts.size),
        users=purchases.num_users,
        items=num_items,
        single_purchase_users=int((per_user == 1).sum()),
        bad_lines=bad_lines.as_dict(),
    )
    return purchases, stats


def _triu_rows(size: int, row_start: int, row_stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions `(a, b)`, a < b < size, of the upper triangle's rows `row_start..row_stop - 1`."""
    rows = np.arange(row_start, row_stop)
    lengths = size - 1 - rows
    a = np.repeat(rows, lengths)
    offsets = np.cumsum(lengths) - lengths
    b = np.arange(a.size) - np.repeat(offsets, lengths) + a + 1
    return a, b


def _row_blocks(size: int, max_pairs: int) -> Iterator[tuple[int, int]]:
    """Row ranges of the upper triangle of a `size` x `size` matrix holding at most ~`max_pairs` pairs each."""
    start = 0
    while start < size - 1:
        stop, pairs = start, 0
        while stop < size - 1 and (pairs == 0 or pairs + size - 1 - stop <= max_pairs):
            pairs += size - 1 - stop
            stop += 1
        yield start, stop
        start = stop


def iter_user_pairs(
    indptr: np.ndarray, items: np.ndarray, times: np.ndarray, max_pairs: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All within-user item pairs, in chunks of at most ~`max_pairs` (one heavy user may be split).

    Args:
        indptr (`np.ndarray` of shape `(U + 1,)`): CSR pointer; each user's items are ascending.
        items (`np.ndarray` of shape `(P,)`): item indices.
        times (`np.ndarray` of shape `(P,)`): purchase times.
        max_pairs: chunk size.

    Yields:
        `(first_item, second_item, time)`, each of shape `(chunk,)`, with `first_item < second_item` and
        `time = max` of the two purchase times.
    """
    degree = np.diff(indptr)
    users = np.flatnonzero(degree >= 2)
    users = users[np.argsort(degree[users], kind="stable")]
    boundaries = np.flatnonzero(np.diff(degree[users])) + 1
    for group in np.split(users, boundaries):
        if group.size == 0:
            continue
        size = int(degree[group[0]])
        pairs_per_user = size * (size - 1) // 2
        starts = indptr[group]
        if pairs_per_user <= max_pairs:
            a, b = np.triu_indices(size, k=1)
            users_per_chunk = max(1, max_pairs // pairs_per_user)
            for chunk in range(0, group.size, users_per_chunk):
                base = starts[chunk : chunk + users_per_chunk, None]
                pos_a, pos_b = (base + a).ravel(), (base + b).ravel()
                yield items[pos_a], items[pos_b], np.maximum(times[pos_a], times[pos_b])
        else:
            for start in starts:
                for row_start, row_stop in _row_blocks(size, max_pairs):
                    a, b = _triu_rows(size, row_start, row_stop)
                    yield items[start + a], items[start + b], np.maximum(times[start + a], times[start + b])


def _aggregate_packed(packed: np.ndarray, rank_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count, first and last time rank of each distinct pair in `packed` (`pair << rank_bits | time rank`):
    one SIMD sort of the packed values orders each pair's times too, so no argsort and no gather is needed.

    Returns:
        `(pair, count, first_rank, last_rank)`, each of shape `(distinct pairs,)`.
    """
    if packed.size == 0:
        return (np.empty(0, dtype=np.int64),) * 4
    packed.sort()
    pair = packed >> rank_bits
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    ends = np.r_[starts[1:], packed.size] - 1
    mask = (np.int64(1) << rank_bits) - 1
    return pair[starts], np.diff(np.r_[starts, packed.size]), packed[starts] & mask, packed[ends] & mask


class _PairPartitions:
    """Co-purchase pairs as packed int64 values (`pair << rank_bits | time rank`), split by `key % num_partitions`,
    each partition grouped on its own.

    Partitions keep sorts small and bound memory: with `spill=True` they are appended to files under
    `directory` instead of lists. Within partition p, a pair key k is stored as `k // num_partitions`, which
    is what makes room for the time rank in 64 bits.
    """

    def __init__(self, num_partitions: int, rank_bits: int, directory: Path, spill: bool):
        self.num_partitions = num_partitions
        self.rank_bits = rank_bits
        self.spill = spill
        self.pieces: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        self.files = [directory / f"pairs-{p:05d}.bin" for p in range(num_partitions)]

    def add(self, key: np.ndarray, rank: np.ndarray) -> None:
        packed = (key // self.num_partitions) << self.rank_bits | rank
        if self.num_partitions > 1:
            partition = key % self.num_partitions
            partition = partition.astype(np.uint16 if self.num_partitions <= 1 << 16 else np.int64)  # uint16: radix sort
            packed = packed[np.argsort(partition, kind="stable")]
            bounds = np.r_[0, np.cumsum(np.bincount(partition, minlength=self.num_partitions))]
        else:
            bounds = np.array([0, key.size])
        for index in range(self.num_partitions):
            piece = packed[bounds[index] : bounds[index + 1]]
            if self.spill:
                with open(self.files[index], "ab") as handle:
                    piece.tofile(handle)
            else:
                self.pieces[index].append(piece)

    def aggregates(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per partition: `(pair key, count, first time rank, last time rank)` of its distinct pairs."""
        for index in range(self.num_partitions):
            if self.spill:
                path = self.files[index]
                packed = np.fromfile(path, dtype=np.int64) if path.exists() else np.empty(0, np.int64)
                path.unlink(missing_ok=True)
            else:
                pieces, self.pieces[index] = self.pieces[index], []
                packed = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
            local, count, first, last = _aggregate_packed(packed, self.rank_bits)
            yield local * self.num_partitions + index, count, first, last


def _num_partitions(total_pairs: int, num_items: int, rank_bits: int, partition_pairs: int, memory_budget_bytes: int) -> int:
    """Enough partitions for small sorts, for the memory budget (a partition's sort and grouping take about
    32 bytes a pair), and for packing: a pair key below `num_items**2`, divided by the partition count, must
    leave `rank_bits` of the 63 bits of a non-negative int64 free."""
    return max(
        1,
        math.ceil(total_pairs / partition_pairs),
        math.ceil(total_pairs * 32 / memory_budget_bytes),
        math.ceil(num_items**2 / 2 ** (63 - rank_bits)),
    )


def _time_ranks(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(ranks, values)`: each time's rank among the distinct times, and those times (`values[ranks] == times`);
    a rank needs far fewer bits than a Unix time in ms, and orders the same way. (One SIMD argsort: numpy's
    hash-based `unique` and `searchsorted` take 20x longer on millions of distinct times.)"""
    order = np.argsort(times)
    ordered = times[order]
    new = np.ones(times.size, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    ranks = np.empty(times.size, dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return ranks, ordered[new]


def _take_column(parts: list[list[np.ndarray | None]], index: int) -> np.ndarray:
    """Column `index` of every partition's edges, concatenated; the pieces are released as they are taken, so
    only one column is held twice at a time."""
    values = np.concatenate([part[index] for part in parts])
    for part in parts:
        part[index] = None
    return values


def copurchase_edges(
    purchases: Purchases,
    min_copurchase: int = 3,
    max_items_per_user: int | None = None,
    memory_budget_bytes: int = 2 << 30,
    chunk_pairs: int = 4_000_000,
    partition_pairs: int = 8_000_000,
    tmp_dir: str | os.PathLike | None = None,
) -> tuple[pa.Table, dict[str, int]]:
    """Step 2: co-purchase edges between items bought by at least `min_copurchase` distinct users.

    Args:
        purchases: step 1's output.
        min_copurchase: the paper's threshold (3).
        max_items_per_user: leave users with more distinct (candidate) items out of the count; `None` counts
            every user (exact).
        memory_budget_bytes: when the raw pairs (8 bytes each) would take more than half of this, the
            partitions are spilled to disk; each partition's sort and grouping then needs about 32 bytes a pair.
        chunk_pairs: pairs enumerated per vectorised chunk.
        partition_pairs: target pairs per partition (speed: small sorts are cache-friendly).
        tmp_dir: where partitions go (a temporary directory by default).

    Returns:
        (edges, stats): `edges` has `src`, `dst` (item indices, `src < dst`, each pair once), `count`,
        `first_time` and `last_time`, sorted by `(src, dst)`; `stats` counts `candidate_items` (bought by at
        least `min_copurchase` users), `heavy_users_skipped`, `pairs_enumerated`, `distinct_pairs`,
        `pairs_below_threshold`, `edges`, `partitions` and `spilled` (1 when partitions went to disk).
    """
    if min_copurchase < 1:
        raise ValueError(f"min_copurchase must be >= 1, got {min_copurchase}.")
    buyers = np.bincount(purchases.item, minlength=purchases.num_items)
    kept = purchases.select(buyers[purchases.item] >= min_copurchase)
    indptr = kept.user_indptr()
    degree = np.diff(indptr)
    heavy = np.zeros(degree.size, dtype=bool) if max_items_per_user is None else degree > max_items_per_user
    if heavy.any():
        kept = kept.select(~heavy[kept.user])
        indptr = kept.user_indptr()
        degree = np.diff(indptr)
    total_pairs = int((degree * (degree - 1) // 2).sum())
    rank, time_values = _time_ranks(kept.time)
    rank_bits = max(1, int(time_values.size - 1).bit_length())
    n = np.int64(purchases.num_items)
    spill = total_pairs * 8 > memory_budget_bytes // 2
    num_partitions = _num_partitions(total_pairs, int(n), rank_bits, partition_pairs, memory_budget_bytes)
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="copurchase-") as scratch:
        pairs = _PairPartitions(num_partitions, rank_bits, Path(scratch), spill)
        with tqdm(total=total_pairs, unit=" pairs", unit_scale=True, desc="co-purchase pairs", leave=False) as bar:
            for first, second, pair_rank in iter_user_pairs(indptr, kept.item, rank, chunk_pairs):
                pairs.add(first * n + second, pair_rank)
                bar.update(first.size)
        del kept, indptr, rank  # the pairs hold what is left to count
        parts, distinct = [], 0
        for key, count, first_rank, last_rank in pairs.aggregates():
            distinct += key.size
            keep = count >= min_copurchase
            parts.append([key[keep], count[keep], first_rank[keep], last_rank[keep]])
    key = _take_column(parts, 0)
    order = np.argsort(key)  # keys are distinct
    key = key[order]
    table = pa.table(
        {
            "src": key // n,
            "dst": key % n,
            "count": _take_column(parts, 1)[order],
            "first_time": time_values[_take_column(parts, 2)[order]],
            "last_time": time_values[_take_column(parts, 3)[order]],
        }
    )
    stats = {
        "candidate_items": int((buyers >= min_copurchase).sum()),
        "heavy_users_skipped": int(heavy.sum()),
        "pairs_enumerated": total_pairs,
        "distinct_pairs": int(distinct),
        "pairs_below_threshold": int(distinct - key.size),
        "edges": int(key.size),
        "partitions": num_partitions,
        "spilled": int(spill),
    }
    return table, stats


__all__ = ["Purchases", "copurchase_edges", "iter_user_pairs", "read_purchases"]
