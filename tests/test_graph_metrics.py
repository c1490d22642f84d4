"""The graph-aware evaluation over a pool: which edges are positives, which graph Z and the probe see, and the
numbers against a direct computation."""

import numpy as np
import pytest
import torch

from slip_hf.evaluation.graph_metrics import graph_metrics, pool_edges, union_graph
from slip_hf.evaluation.link_prediction import cosine_scores, link_metrics, sample_negatives
from slip_hf.evaluation.related_items import related_item_metrics, relevant_candidates
from slip_hf.graph_batching import NodeGraph

N = 40


def _embeddings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(N, 8, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(image + 0.5 * torch.randn(N, 8, generator=generator), dim=-1)
    return image, text


def _graphs() -> tuple[NodeGraph, NodeGraph]:
    ring = np.arange(N)
    known = NodeGraph.from_edges(ring, (ring + 1) % N, N)  # a ring
    future = NodeGraph.from_edges(ring[::2], (ring[::2] + 2) % N, N)  # chords between even nodes
    return known, future


def test_pool_edges_and_union():
    known, future = _graphs()
    pool = np.array([0, 1, 2, 5, 6])
    assert pool_edges(known, pool).tolist() == [[0, 1, 3], [1, 2, 4]]  # (0,1), (1,2), (5,6) in pool positions
    assert union_graph(known, future).num_edges == known.num_edges + future.num_edges
    assert union_graph(known, None) is known


def test_temporal_protocol_predicts_future_edges_with_z_over_the_known_graph():
    known, future = _graphs()
    image, text = _embeddings()
    seen: list[torch.Tensor] = []

    def encode_nodes(image, text, edge_index):
        seen.append(edge_index)
        return torch.nn.functional.normalize(image + text, dim=-1)

    pool = np.arange(N)
    results = graph_metrics(image, text, pool, known, future, link_negatives=10, probe_epochs=5, encode_nodes=encode_nodes)
    protocol = results["graph_protocol"]
    assert protocol["positives"].startswith("future") and protocol["positives_count"] == future.num_edges
    assert protocol["observed_edges"] == protocol["known_edges"] == known.num_edges
    # Z for related items and for link prediction both see the known ring only (both directions)
    assert all(e.size(1) == 2 * known.num_edges for e in seen) and len(seen) == 2
    assert set(results["link_prediction"]) == {"image", "text", "mean", "Z", "probe"}
    # the mean row against a direct computation with the same seeded negatives (no edge of known + future)
    positives = pool_edges(future, pool)
    everything = pool_edges(union_graph(known, future), pool)
    negatives = sample_negatives(positives, everything[0].numpy(), everything[1].numpy(), N, 10, seed=0)
    mean = torch.nn.functional.normalize(image + text, dim=-1)
    u, v = positives
    expected = link_metrics(cosine_scores(mean, u, v), cosine_scores(mean, u[:, None], negatives))
    assert results["link_prediction"]["mean"]["mrr"] == pytest.approx(expected["mrr"])
    # related items: relevant = neighbours in known + future
    relevant = relevant_candidates(union_graph(known, future), pool, 1)
    assert results["related_items"]["text"] == pytest.approx(related_item_metrics(text, relevant))


def test_random_protocol_holds_out_a_seeded_share_of_the_known_edges():
    known, _ = _graphs()
    image, text = _embeddings(1)
    first = graph_metrics(image, text, np.arange(N), known, link_holdout=0.25, link_negatives=10, probe_epochs=0, seed=3)
    again = graph_metrics(image, text, np.arange(N), known, link_holdout=0.25, link_negatives=10, probe_epochs=0, seed=3)
    protocol = first["graph_protocol"]
    assert protocol["positives_count"] == 10 and protocol["observed_edges"] == 30
    assert first == again and "probe" not in first["link_prediction"] and "Z" not in first["related_items"]


def test_a_pool_without_edges_has_related_items_but_no_link_prediction():
    known = NodeGraph.from_edges([0], [1], N)
    image, text = _embeddings()
    results = graph_metrics(image[2:], text[2:], np.arange(2, N), known)
    assert "link_prediction" not in results and results["related_items"]["image"]["num_queries"] == 0
