"""Link prediction: held-out edges (random and by time), negatives, metrics against brute force, and a probe
that learns what the features say."""

import numpy as np
import pytest
import torch

from slip_hf.evaluation.link_prediction import (
    cosine_scores,
    dot_scores,
    hold_out_edges,
    link_metrics,
    sample_negatives,
    train_link_probe,
)


def test_hold_out_by_time_takes_the_newest_edges_and_random_is_seeded():
    src, dst = np.arange(10), np.arange(10) + 10
    first_time = np.array([5, 1, 9, 3, 7, 2, 8, 0, 6, 4])
    split = hold_out_edges(src, dst, fraction=0.3, by="time", first_time=first_time)
    assert sorted(split.held_out[0].tolist()) == [2, 4, 6]  # times 9, 8, 7
    assert split.train.size(1) == 7 and not set(split.train[0].tolist()) & {2, 4, 6}
    first, again = hold_out_edges(src, dst, 0.3, seed=3), hold_out_edges(src, dst, 0.3, seed=3)
    assert torch.equal(first.held_out, again.held_out)
    with pytest.raises(ValueError, match="first_time"):
        hold_out_edges(src, dst, by="time")


def test_negatives_avoid_every_edge_and_repeat_with_the_seed():
    src, dst = np.array([0, 0, 1, 2]), np.array([1, 2, 2, 3])
    positives = torch.tensor([[0, 1], [1, 2]])
    negatives = sample_negatives(positives, src, dst, num_nodes=8, num_negatives=4, seed=0)
    edges = {(min(a, b), max(a, b)) for a, b in zip(src.tolist(), dst.tolist())}
    for u, row in zip(positives[0].tolist(), negatives.tolist()):
        assert len(set(row)) == 4 and u not in row and not any((min(u, w), max(u, w)) in edges for w in row)
    assert torch.equal(negatives, sample_negatives(positives, src, dst, 8, 4, seed=0))
    with pytest.raises(ValueError, match="non-neighbours"):  # node 2 has 3 neighbours among 5 nodes
        sample_negatives(torch.tensor([[2], [3]]), src, dst, num_nodes=5, num_negatives=2)


def test_link_metrics_match_a_loop_with_ties_against_the_positive():
    generator = torch.Generator().manual_seed(0)
    positive = torch.randn(50, generator=generator)
    negative = torch.randn(50, 20, generator=generator)
    negative[0, 3] = positive[0]  # a tie
    ranks = [1 + sum(float(n) >= float(p) for n in row) for p, row in zip(positive, negative)]
    metrics = link_metrics(positive, negative, ks=(1, 10))
    assert metrics["mrr"] == pytest.approx(np.mean([1 / r for r in ranks]))
    assert metrics["hits_at_10"] == pytest.approx(np.mean([r <= 10 for r in ranks]))


def test_cosine_and_probe_find_links_the_features_explain():
    """Nodes in 10 groups of 10, edges within groups; the features say the group (plus noise)."""
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(10), 10)
    src, dst = (np.array(a) for a in zip(*[(i, j) for i in range(100) for j in range(i + 1, 100)
                                           if group[i] == group[j] and rng.random() < 0.5]))
    features = torch.tensor(np.eye(10)[group] + 0.3 * rng.standard_normal((100, 10)), dtype=torch.float32)
    split = hold_out_edges(src, dst, fraction=0.2, seed=0)
    negatives = sample_negatives(split.held_out, src, dst, 100, num_negatives=20, seed=0)
    u, v = split.held_out
    zero_shot = link_metrics(cosine_scores(features, u, v), cosine_scores(features, u[:, None], negatives), ks=(1, 5))
    nodes = train_link_probe(features, split.train, epochs=60, hidden=32, seed=0)
    probe = link_metrics(dot_scores(nodes, u, v), dot_scores(nodes, u[:, None], negatives), ks=(1, 5))
    random_mrr = np.mean([1 / r for r in range(1, 22)])
    assert zero_shot["mrr"] > 3 * random_mrr and probe["mrr"] > 3 * random_mrr
    again = train_link_probe(features, split.train, epochs=60, hidden=32, seed=0)
    assert torch.equal(nodes, again)  # deterministic


def test_probe_is_deterministic_on_a_graph_where_threads_would_reorder_sums():
    """On 1,000 nodes and ~7,000 edges, the two-thread sparse product differed by 1e-6 from run to run."""
    rng = np.random.default_rng(0)
    src, dst = rng.integers(0, 1000, 7000), rng.integers(0, 1000, 7000)
    keep = src != dst
    features = torch.tensor(rng.standard_normal((1000, 64)), dtype=torch.float32)
    edges = torch.from_numpy(np.stack([src[keep], dst[keep]]))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = (train_link_probe(features, edges, epochs=30, hidden=32) for _ in range(2))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first, second) and torch.get_num_threads() == threads
