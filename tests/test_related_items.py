"""Related-item retrieval: relevant sets from the graph and every metric against a brute-force loop."""

import math

import numpy as np
import pytest
import torch

from slip_hf.evaluation.related_items import related_item_metrics, relevant_candidates
from slip_hf.graph_batching import NodeGraph


def _brute_force(embeds, relevant, ks=(1, 10, 50)):
    embeds = torch.nn.functional.normalize(embeds.double(), dim=-1)
    sums = {"mrr": 0.0, "ndcg_at_10": 0.0, **{f"hits_at_{k}": 0.0 for k in ks}, **{f"recall_at_{k}": 0.0 for k in ks}}
    queries = [q for q in range(len(relevant)) if len(relevant[q])]
    for q in queries:
        scores = (embeds @ embeds[q]).tolist()
        good = set(relevant[q].tolist())
        # sort by score, ties: irrelevant first (the pessimistic rule)
        order = sorted((c for c in range(len(scores)) if c != q), key=lambda c: (-scores[c], c in good))
        flags = [c in good for c in order]
        sums["mrr"] += 1 / (flags.index(True) + 1)
        for k in ks:
            sums[f"hits_at_{k}"] += any(flags[:k])
            sums[f"recall_at_{k}"] += sum(flags[:k]) / len(good)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(good), 10)))
        sums["ndcg_at_10"] += sum(f / math.log2(r + 2) for r, f in enumerate(flags[:10])) / ideal
    return {name: value / len(queries) for name, value in sums.items()}


@pytest.mark.parametrize("hops", [1, 2])
def test_relevant_candidates_are_the_neighbours_within_hops_inside_the_pool(node_graph, hops):
    pool = np.arange(0, node_graph.num_nodes, 2)
    relevant = relevant_candidates(node_graph, pool, hops)
    distances = node_graph.hop_distances_from(pool, max_hops=hops)[:, pool]
    for row in range(pool.size):
        expected = np.flatnonzero((distances[row] >= 1) & (distances[row] <= hops))
        assert np.array_equal(relevant[row], expected), row


@pytest.mark.parametrize("chunk_size", [7, 1024])
def test_metrics_match_brute_force(node_graph, chunk_size):
    generator = torch.Generator().manual_seed(0)
    pool = np.arange(120)
    relevant = relevant_candidates(node_graph, pool, hops=1)
    embeds = torch.randn(pool.size, 8, generator=generator)
    embeds[5] = embeds[6]  # exact ties
    result = related_item_metrics(embeds, relevant, chunk_size=chunk_size)
    expected = _brute_force(embeds, relevant)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name
    assert result["num_queries"] + result["queries_without_relevant"] == pool.size


def test_constant_embeddings_rank_every_relevant_item_last():
    graph = NodeGraph.from_edges([0, 0], [1, 2], 5)
    relevant = relevant_candidates(graph, np.arange(5), hops=1)
    result = related_item_metrics(torch.ones(5, 4), relevant, ks=(1, 2))
    # query 0: two relevant among 4 candidates, tied with two irrelevant ones -> first relevant at rank 3
    # queries 1, 2: one relevant (item 0) among 4 -> rank 4; items 3, 4 have no neighbour
    assert result["mrr"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 4) / 3)
    assert result["hits_at_2"] == 0 and result["queries_without_relevant"] == 2
