"""Time-aware graphs (the paper's §7.2): recency- and count-weighted positives of the structural loss, the
temporal split of the co-purchase graph, and the time dimension of the synthetic generator. Hand-made graphs
with known answers."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from slip_hf import SlipConfig, SlipModel
from slip_hf.data import generate_synthetic_raw
from slip_hf.data.hub import CopurchaseGraph, load_copurchase_graph, temporal_cut_time
from slip_hf.graph_batching import NodeGraph, SlipDataCollator
from slip_hf.graph_masks import edge_weight_matrix, hop_positive_mask
from slip_hf.losses import structural_contrastive_loss
from slip_hf.positive_weights import MS_PER_DAY, positive_edge_weights

DAY = MS_PER_DAY
E = math.e


def test_recency_window_decay_and_count_weights_have_known_values():
    now = 1_000 * DAY
    last = np.array([now, now - 10 * DAY, now - 20 * DAY, now - 40 * DAY])
    count = np.array([3, 7, 3, 15])
    assert positive_edge_weights(count, last).tolist() == [1, 1, 1, 1]  # the paper: every edge weighs 1
    assert positive_edge_weights(count, last, "window", 20.0).tolist() == [1, 1, 1, 0]
    assert positive_edge_weights(count, last, "decay", 20.0).tolist() == pytest.approx([1, 2**-0.5, 0.5, 0.25])
    assert positive_edge_weights(count, last, count_weighting="linear").tolist() == [3, 7, 3, 15]
    assert positive_edge_weights(count, last, count_weighting="log").tolist() == pytest.approx(np.log1p(count).tolist())
    both = positive_edge_weights(count, last, "decay", 20.0, "log")
    assert both.tolist() == pytest.approx((np.log1p(count) * [1, 2**-0.5, 0.5, 0.25]).tolist())
    # "now" is the newest co-purchase unless given: a later reference ages every edge
    assert positive_edge_weights(count, last, "window", 20.0, reference_time=now + 15 * DAY).tolist() == [1, 0, 0, 0]
    with pytest.raises(ValueError, match="recency"):
        positive_edge_weights(count, last, "sometimes")
    with pytest.raises(ValueError, match="count_weighting"):
        positive_edge_weights(count, last, count_weighting="square")


def test_weighted_graph_keeps_the_largest_weight_and_batches_carry_it():
    graph = NodeGraph.from_edges([0, 1, 1, 2, 3], [1, 0, 2, 3, 3], num_nodes=4, weight=[0.5, 2.0, 1.0, 3.0, 9.0])
    assert graph.num_edges == 3  # (0, 1) twice and the self loop (3, 3) collapse
    edge_index, edge_weight, cut = graph.batch_subgraph([1, 0, 2])
    pairs = {(int(a), int(b)): float(w) for a, b, w in zip(*edge_index, edge_weight)}
    # batch positions: node 1 -> 0, node 0 -> 1, node 2 -> 2; edge (2, 3) leaves the batch
    assert pairs == {(0, 1): 2.0, (1, 0): 2.0, (0, 2): 1.0, (2, 0): 1.0} and cut == 1
    unweighted_index, unweighted, _ = NodeGraph.from_edges([0, 1], [1, 2], 3).batch_subgraph([0, 1, 2])
    assert unweighted is None and unweighted_index.size(1) == 4
    with pytest.raises(ValueError, match="one value per edge"):
        NodeGraph.from_edges([0, 1], [1, 2], 3, weight=[1.0])


def test_collator_adds_edge_weight_only_for_a_weighted_graph():
    rows = [{"node_id": n, "pixel_values": np.zeros((3, 2, 2)), "input_ids": [0, 1]} for n in (0, 1, 2)]
    weighted = SlipDataCollator(NodeGraph.from_edges([0, 1], [1, 2], 3, weight=[0.25, 4.0]))(rows)
    assert sorted(weighted["edge_weight"].tolist()) == [0.25, 0.25, 4.0, 4.0]
    assert weighted["edge_weight"].shape == (weighted["edge_index"].size(1),)
    assert "edge_weight" not in SlipDataCollator(NodeGraph.from_edges([0, 1], [1, 2], 3))(rows)


def test_edge_weight_matrix_is_symmetric_and_keeps_the_largest_weight():
    edge_index = torch.tensor([[0, 1, 2, 2], [1, 0, 1, 2]])
    matrix = edge_weight_matrix(edge_index, torch.tensor([0.5, 2.0, 3.0, 7.0]), 3)
    assert matrix.tolist() == [[0, 2, 0], [2, 0, 3], [0, 3, 0]]  # self loop ignored
    assert edge_weight_matrix(edge_index, torch.tensor([0.5, 2.0, 3.0, 7.0]), 3, rows=torch.tensor([2])).tolist() == [[0, 3, 0]]
    with pytest.raises(ValueError, match="one per edge"):
        edge_weight_matrix(edge_index, torch.ones(3), 3)


def test_weighted_structural_loss_is_a_weighted_mean_with_a_known_value():
    # Z = (e1, e2, e1), scale 1: row 0 softmax over (e, 1, e), row 1 over (1, e, 1), row 2 like row 0
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    log_p = {(0, 1): -math.log(2 * E + 1), (1, 0): -math.log(E + 2), (1, 2): -math.log(E + 2),
             (2, 1): -math.log(2 * E + 1)}
    weights = torch.zeros(3, 3)
    weights[0, 1] = weights[1, 0] = 3.0  # edge (0, 1) weighs 3, edge (1, 2) weighs 1
    weights[1, 2] = weights[2, 1] = 1.0
    expected = -(3 * (log_p[0, 1] + log_p[1, 0]) + log_p[1, 2] + log_p[2, 1]) / 8
    assert structural_contrastive_loss(z, weights, 1.0).item() == pytest.approx(expected, abs=1e-6)
    # weights in {0, 1} are Eq. 5 on that mask, bit for bit; scaling every weight changes nothing
    mask = hop_positive_mask(torch.tensor([[0], [1]]), 3)
    assert torch.equal(structural_contrastive_loss(z, mask.float(), 1.0), structural_contrastive_loss(z, mask, 1.0))
    assert structural_contrastive_loss(z, 5 * weights, 1.0).item() == pytest.approx(expected, abs=1e-6)
    assert structural_contrastive_loss(z, torch.zeros(3, 3), 1.0).item() == 0.0  # every positive weighs 0


def test_model_weighs_positives_by_the_batch_edge_weights(clip_config, model_inputs):
    config = SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, positive_recency="decay", lambda_aux=0.0)
    torch.manual_seed(0)
    model = SlipModel(config).eval()
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 3]])
    weight = torch.tensor([4.0, 1.0, 0.0])
    out = model(**model_inputs, edge_index=edge_index, edge_weight=weight, return_loss=True)
    dense = edge_weight_matrix(edge_index, weight, 5)
    scale = model.graph_logit_scale.exp().clamp(max=100.0)
    assert out.loss_graph.item() == pytest.approx(structural_contrastive_loss(out.node_embeds, dense, scale).item(), abs=1e-6)
    assert out.num_positive_pairs.item() == pytest.approx(10.0)  # both directions: 2 * (4 + 1 + 0)
    # the same batch with unit weights is the paper's loss
    plain = SlipModel(SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, lambda_aux=0.0))
    plain.load_state_dict(model.state_dict())
    unit = model(**model_inputs, edge_index=edge_index, edge_weight=torch.ones(3), return_loss=True)
    assert unit.loss_graph.item() == pytest.approx(plain.eval()(**model_inputs, edge_index=edge_index, return_loss=True).loss_graph.item(), abs=1e-6)
    with pytest.raises(ValueError, match="no edge_weight"):
        model(**model_inputs, edge_index=edge_index, return_loss=True)
    with pytest.raises(Exception, match="need hops=1"):  # strict validation wraps the ValueError
        SlipConfig(clip_config=clip_config.to_dict(), positive_count_weighting="log", hops=2)


def _graph(first_times: list[int], last_times: list[int] | None = None, counts: list[int] | None = None) -> CopurchaseGraph:
    """Six nodes (train 0-3, test 4-5) and one edge per time, along the path 0-1-2-3-4-5-0."""
    nodes = DatasetDict({"train": Dataset.from_dict({"node_id": [0, 1, 2, 3]}), "test": Dataset.from_dict({"node_id": [4, 5]})})
    n = len(first_times)
    edges = Dataset.from_dict({
        "src": list(range(n)), "dst": [(i + 1) % 6 for i in range(n)], "first_time": first_times,
        "last_time": last_times or first_times, "count": counts or [3] * n,
    })
    return CopurchaseGraph(nodes, edges)


def test_temporal_split_by_share_date_and_milliseconds():
    graph = _graph([50, 10, 40, 20, 30, 60])
    split = graph.temporal_split(0.5)  # T = the 4th smallest first_time (40): 10, 20, 30 before it
    assert split.cut_time == 40
    assert sorted(split.edges["first_time"]) == [10, 20, 30] and sorted(split.future_edges["first_time"]) == [40, 50, 60]
    assert split.node_graph().num_edges == 3 and split.future_graph().num_edges == 3
    assert split.nodes is graph.nodes  # the node split is unchanged
    assert graph.temporal_split(35).cut_time == 35 and graph.temporal_split("35").cut_time == 35
    assert temporal_cut_time("1970-01-01T00:00:01", np.array([0])) == 1000  # ISO dates are UTC
    assert temporal_cut_time("0.5", np.array([10, 20, 30, 40])) == 30
    assert graph.future_graph() is None
    for bad in ("yesterday", 0.0, -5, 1.5):
        with pytest.raises(ValueError, match="temporal cut"):
            graph.temporal_split(bad)
    with pytest.raises(ValueError, match="already split"):
        split.temporal_split(0.5)


def test_recency_is_measured_from_the_training_graph_not_the_future():
    day = DAY
    graph = _graph([0, 0, 0, 0, 0, 200 * day], last_times=[100 * day, 90 * day, 10 * day, 100 * day, 100 * day, 300 * day])
    config = SlipConfig(positive_recency="window", positive_recency_days=30.0)
    split = graph.temporal_split(100 * day)  # the last edge (first seen on day 200) is in the future
    weighted = split.node_graph(config)
    # newest training co-purchase: day 100; the edge last bought on day 10 is 90 days old
    edge_index, edge_weight, _ = weighted.batch_subgraph(np.arange(6))
    weights = {(int(a), int(b)): float(w) for a, b, w in zip(*edge_index, edge_weight) if a < b}
    assert weights == {(0, 1): 1.0, (1, 2): 1.0, (2, 3): 0.0, (3, 4): 1.0, (4, 5): 1.0}
    assert split.node_graph().weight is None  # without a config: the paper's unit weights


def test_loader_applies_the_temporal_cut(graph_dataset_dir):
    full = load_copurchase_graph(graph_dataset_dir, "electronics")
    split = load_copurchase_graph(graph_dataset_dir, "electronics", temporal_cut=0.8)
    assert split.edges.num_rows + split.future_edges.num_rows == full.edges.num_rows
    assert split.future_edges.num_rows == pytest.approx(0.2 * full.edges.num_rows, abs=0.02 * full.edges.num_rows + 1)
    assert max(split.edges["first_time"]) < split.cut_time <= min(split.future_edges["first_time"])


def test_synthetic_eras_change_complements_and_launch_and_retire_lines(tmp_path):
    generate_synthetic_raw(tmp_path, num_bundles=6, shoppers_per_bundle=150, num_eras=3, bad_row_rate=0.0, seed=1)
    truth = {r["parent_asin"]: r for r in map(json.loads, (tmp_path / "synthetic_truth.jsonl").read_text().splitlines())}
    start, era_length = 1_600_000_000_000, 365 * DAY  # three years, three eras
    baskets: dict[str, list] = {}
    for review in map(json.loads, (tmp_path / "review_categories" / "Electronics.jsonl").read_text().splitlines()):
        if review["parent_asin"] in truth:
            baskets.setdefault(review["user_id"], []).append(review)
    times_by_line: dict[int, list[int]] = {}
    pair_counts: list[Counter] = [Counter() for _ in range(3)]
    for reviews in baskets.values():
        era = min(2, (min(r["timestamp"] for r in reviews) - start) // era_length)  # a basket may cross into the next era
        lines = sorted({truth[r["parent_asin"]]["product_line"] for r in reviews})
        pair_counts[era].update((a, b) for i, a in enumerate(lines) for b in lines[i + 1:])
        for r in reviews:
            times_by_line.setdefault(truth[r["parent_asin"]]["product_line"], []).append(r["timestamp"])
    lines = {r["product_line"]: r for r in truth.values()}
    assert any(r["launch_era"] > 0 for r in lines.values()) and any(r["retire_era"] < 3 for r in lines.values())
    for line, times in times_by_line.items():  # a line sells only between its launch and retirement
        assert start + lines[line]["launch_era"] * era_length <= min(times)
        assert max(times) < start + lines[line]["retire_era"] * era_length + 120 * DAY  # a basket spans <= 4 x 30 days
    frequent = [{pair for pair, count in counts.items() if count >= 10} for counts in pair_counts]
    assert all(frequent)
    assert len(frequent[0] & frequent[1]) <= 0.2 * len(frequent[0])  # complements changed from era 0 to era 1
