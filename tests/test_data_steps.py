"""Each build step on hand-made input, with counts worked out by hand."""

import gzip
import itertools
import json
import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest

from slip_hf.data.copurchase import Purchases, copurchase_edges, iter_user_pairs, read_purchases
from slip_hf.data.items import load_items, select_image_url
from slip_hf.data.kcore import kcore_bipartite, kcore_graph
from slip_hf.data.labels import assign_labels


def _review(user, item, time, verified=True, helpful=0, text="ok"):
    return {"rating": 5.0, "title": "t", "text": text, "images": [], "asin": item, "parent_asin": item,
            "user_id": user, "timestamp": time, "helpful_vote": helpful, "verified_purchase": verified}


def _write_jsonl(path, rows, raw_lines=()):
    lines = [json.dumps(row) for row in rows] + list(raw_lines)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


REVIEWS = [
    _review("u1", "A", 10), _review("u1", "B", 20), _review("u1", "A", 5),  # repeat of (u1, A): earliest, 5, kept
    _review("u2", "A", 30), _review("u2", "B", 40, verified=False), _review("u2", "C", 50),
    _review("u3", "B", 60),  # a one-purchase user
    _review(None, "A", 70), _review("u4", "", 80), {**_review("u5", "C", 0), "timestamp": None},  # malformed
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_purchases_dedup_and_count_every_bad_row(tmp_path, suffix):
    purchases, stats = read_purchases(_write_jsonl(tmp_path / f"r{suffix}", REVIEWS))
    assert stats == {
        "reviews": 10, "malformed_reviews": 3, "unverified_reviews": 1, "duplicate_purchases": 1,
        "purchases": 6, "users": 3, "items": 3, "single_purchase_users": 1,
        "bad_lines": {"file": f"r{suffix}", "skipped": 0, "examples": [], "truncated": False},
    }
    assert purchases.item_ids.to_pylist() == ["A", "B", "C"]
    rows = sorted(zip(purchases.user.tolist(), purchases.item.tolist(), purchases.time.tolist()))
    assert rows == [(0, 0, 5), (0, 1, 20), (1, 0, 30), (1, 1, 40), (1, 2, 50), (2, 1, 60)]


def test_verified_only_drops_unverified_reviews(tmp_path):
    purchases, stats = read_purchases(_write_jsonl(tmp_path / "r.jsonl", REVIEWS), verified_only=True)
    assert stats["purchases"] == 5 and stats["unverified_reviews"] == 1


def test_a_bad_review_line_names_the_file_and_line_or_is_skipped(tmp_path):
    path = _write_jsonl(tmp_path / "r.jsonl", REVIEWS[:2], raw_lines=['{"user_id": "u9", "timestamp": "soon"}'])
    with pytest.raises(ValueError, match=r"r.jsonl: line 3: .*--on_bad_lines skip"):
        read_purchases(path)
    purchases, stats = read_purchases(path, on_bad_lines="skip")
    assert stats["reviews"] == 2 and stats["bad_lines"]["skipped"] == 1 and stats["bad_lines"]["examples"][0].startswith("line 3:")


def _purchases(baskets: dict[int, list[tuple[int, int]]], num_items: int) -> Purchases:
    rows = sorted((user, item, time) for user, items in baskets.items() for item, time in items)
    user, item, time = (np.array(column, dtype=np.int64) for column in zip(*rows))
    return Purchases(user, item, time, pa.array([f"I{i}" for i in range(num_items)]), max(baskets) + 1)


def test_copurchase_edges_by_hand():
    # items 0, 1 co-bought by users 0, 1, 2 (count 3); 0-2 by users 0, 1 (count 2, below threshold).
    baskets = {0: [(0, 10), (1, 11), (2, 12)], 1: [(0, 20), (1, 25), (2, 26)], 2: [(1, 5), (0, 30)], 3: [(3, 1)]}
    edges, stats = copurchase_edges(_purchases(baskets, 4), min_copurchase=3)
    assert edges.to_pylist() == [{"src": 0, "dst": 1, "count": 3, "first_time": 11, "last_time": 30}]
    assert stats["candidate_items"] == 2  # items 2 and 3 have fewer than 3 buyers: no pair of theirs can count
    assert stats["pairs_enumerated"] == 3  # (0, 1) once per user after pruning
    assert stats["distinct_pairs"] == 1 and stats["pairs_below_threshold"] == 0 and stats["edges"] == 1


def test_heavy_user_cap_leaves_big_baskets_out():
    # (0, 1) and (2, 3) each reach 3 co-buyers only with user 2, who bought 4 items.
    baskets = {0: [(0, 1), (1, 1)], 1: [(0, 2), (1, 2)], 2: [(0, 3), (1, 3), (2, 3), (3, 3)], 3: [(2, 4), (3, 4)], 4: [(2, 5), (3, 5)]}
    exact, _ = copurchase_edges(_purchases(baskets, 4), min_copurchase=3)
    capped, stats = copurchase_edges(_purchases(baskets, 4), min_copurchase=3, max_items_per_user=3)
    assert exact.num_rows == 2 and capped.num_rows == 0 and stats["heavy_users_skipped"] == 1


@pytest.mark.parametrize(("budget", "chunk"), [(2 << 30, 1_000_000), (2 << 30, 5), (4_000, 7)])
def test_copurchase_edges_match_brute_force_in_memory_and_partitioned(budget, chunk):
    rng = np.random.default_rng(0)
    baskets = defaultdict(dict)
    for user, item, time in zip(rng.integers(0, 200, 2500), rng.integers(0, 40, 2500), rng.integers(0, 10**6, 2500)):
        baskets[int(user)][int(item)] = min(int(time), baskets[int(user)].get(int(item), 10**9))
    purchases = _purchases({u: list(items.items()) for u, items in baskets.items()}, 40)
    times = defaultdict(list)
    for items in baskets.values():
        for (a, ta), (b, tb) in itertools.combinations(sorted(items.items()), 2):
            times[(a, b)].append(max(ta, tb))
    expected = {pair: (len(t), min(t), max(t)) for pair, t in times.items() if len(t) >= 3}
    edges, stats = copurchase_edges(purchases, 3, memory_budget_bytes=budget, chunk_pairs=chunk)
    got = {(e["src"], e["dst"]): (e["count"], e["first_time"], e["last_time"]) for e in edges.to_pylist()}
    assert got == expected and stats["spilled"] == (budget < 1 << 20)
    assert stats["partitions"] == (1 if budget > 1 << 20 else math.ceil(stats["pairs_enumerated"] * 32 / budget))
    edges, stats = copurchase_edges(purchases, 3, chunk_pairs=chunk, partition_pairs=97)  # many small partitions
    assert {(e["src"], e["dst"]): (e["count"], e["first_time"], e["last_time"]) for e in edges.to_pylist()} == expected
    assert stats["partitions"] == math.ceil(stats["pairs_enumerated"] / 97)


def test_pair_and_time_rank_always_fit_in_63_bits():
    from slip_hf.data.copurchase import _num_partitions

    for num_items, rank_bits in ((1_610_012, 26), (12_000_000, 30), (3_000_000_000, 33)):
        partitions = _num_partitions(10, num_items, rank_bits, 8_000_000, 2 << 30)
        largest = (num_items**2 - 1) // partitions  # the largest key's stored part
        assert largest << rank_bits | (1 << rank_bits) - 1 < 2**63
    assert _num_partitions(10, 1_610_012, 26, 8_000_000, 2 << 30) == 19


def test_pairs_of_a_heavy_user_are_split_into_chunks():
    indptr = np.array([0, 50])
    chunks = list(iter_user_pairs(indptr, np.arange(50), np.zeros(50, dtype=np.int64), max_pairs=100))
    assert len(chunks) > 1 and all(c[0].size <= 100 for c in chunks)
    pairs = {(a, b) for first, second, _ in chunks for a, b in zip(first.tolist(), second.tolist())}
    assert pairs == set(itertools.combinations(range(50), 2))


def test_kcore_graph_peels_recursively():
    # a triangle 3-4-5 with the path 0-1-2 hanging off node 3: for k = 2 the path is peeled one node a round
    edges = [(3, 4), (4, 5), (3, 5), (2, 3), (1, 2), (0, 1)]
    src, dst = np.array([e[0] for e in edges]), np.array([e[1] for e in edges])
    nodes, kept, rounds = kcore_graph(src, dst, 7, k=2)
    assert np.flatnonzero(nodes).tolist() == [3, 4, 5] and kept.tolist() == [True] * 3 + [False] * 3
    assert rounds == 3  # node 6 (isolated) and 0; then 1; then 2
    clique = list(itertools.combinations(range(6), 2))  # K6: degree 5 everywhere, so it is its own 5-core
    nodes, kept, _ = kcore_graph(np.array([e[0] for e in clique]), np.array([e[1] for e in clique]), 6, k=5)
    assert nodes.all() and kept.all()
    assert not kcore_graph(np.array([e[0] for e in clique]), np.array([e[1] for e in clique]), 6, k=6)[0].any()


def test_kcore_bipartite_keeps_users_and_items_with_k_purchases():
    # users 0-2 each bought items 0-2 (a 3x3 block); user 3 bought items 0 and 3
    user = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3])
    item = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 3])
    keep, _ = kcore_bipartite(user, item, 4, 4, k=3)
    assert keep.tolist() == [True] * 9 + [False, False]


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([{"variant": "PT01", "large": "https://x/1.jpg"}, {"variant": "MAIN", "large": "https://x/m.jpg", "hi_res": "https://x/mh.jpg"}], "https://x/mh.jpg"),
        ([{"variant": "MAIN", "large": "https://x/m.jpg", "hi_res": None}], "https://x/m.jpg"),
        ([{"variant": "PT01", "hi_res": None, "large": "https://x/p.jpg"}], "https://x/p.jpg"),
        ([{"variant": "MAIN", "large": "not a url", "hi_res": ""}], None),
        ([], None),
        (None, None),
    ],
)
def test_image_url_selection(images, expected):
    assert select_image_url(images) == expected


def _meta(asin, title="Phone", images=True, description=("A phone.",)):
    url = f"https://img/{asin}.jpg"
    return {"parent_asin": asin, "title": title, "description": list(description), "features": ["5G"], "store": "S",
            "main_category": "Electronics", "categories": ["Electronics", "Phones"],
            "images": [{"variant": "MAIN", "large": url, "hi_res": None}] if images else [], "details": {"k": [1]}}


def test_items_are_validated_with_a_reason_per_drop(tmp_path):
    rows = [_meta("A"), _meta("B", title="  "), _meta("C", images=False), _meta("D", description=()), _meta("X"), _meta("A", title="dup")]
    path = _write_jsonl(tmp_path / "meta.jsonl", rows, raw_lines=['{"parent_asin": "E", "title": "cut off'])
    with pytest.raises(ValueError, match=r"meta.jsonl: line 7: "):
        load_items(path, ["A"])
    items, stats = load_items(path, ["A", "B", "C", "D", "E", "F"], on_bad_lines="skip")
    assert items.column("parent_asin").to_pylist() == ["A", "D"]
    assert items.column("title").to_pylist()[0] == "Phone"  # the first line of a repeated ASIN wins
    assert stats.pop("bad_lines")["skipped"] == 1
    assert stats == {"no_metadata": 1, "malformed_metadata": 1, "blank_title": 1, "no_image_url": 1,
                     "blank_description": 0, "valid_items": 2}
    items, stats = load_items(path, ["A", "D"], require_description=True, on_bad_lines="skip")
    assert items.num_rows == 1 and stats["blank_description"] == 1 and stats["malformed_metadata"] == 0


def test_labels_at_depth_with_rare_and_short_paths():
    paths = [["E", "Audio"]] * 3 + [["E", "Phones"]] * 2 + [["E", "Rare"]] + [["E"]]
    labels, names, stats = assign_labels(paths, depth=1, min_class_size=2)
    assert names == ["Audio", "Phones", "Other"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert stats == {"short_paths": 1, "rare_classes_merged": 1, "nodes_in_rare_classes": 1, "classes": 3}
    _, names, _ = assign_labels(paths[:5], depth=1, min_class_size=2)
    assert names == ["Audio", "Phones"]  # no catch-all class when nothing falls into it
