import numpy as np
import pytest
import torch

from slip_hf.graph_batching import (
    GraphClusterBatchSampler,
    NodeGraph,
    SlipDataCollator,
    UniformBatchSampler,
    build_batch_sampler,
    edges_per_node,
    mean_batch_edge_density,
)
from slip_hf.toy import power_law_edges


def test_graph_is_symmetric_simple_and_deduplicated():
    graph = NodeGraph.from_edges([0, 1, 1, 2, 2, 3], [1, 0, 2, 2, 1, 0], num_nodes=5)
    assert graph.num_edges == 3  # 0-1, 1-2, 0-3; duplicates and the self loop 2-2 dropped
    assert graph.degree().tolist() == [2, 2, 1, 1, 0]
    assert graph.col[graph.rowptr[0] : graph.rowptr[1]].tolist() == [1, 3]


def test_edge_to_unknown_node_is_a_clear_error():
    with pytest.raises(ValueError, match=r"1 edge\(s\) refer to unknown nodes .* edge #1 \(2, 7\)"):
        NodeGraph.from_edges([0, 2], [1, 7], num_nodes=5)


def test_graph_from_edge_table(toy_graph):
    nodes, edges = toy_graph
    graph = NodeGraph.from_edge_table(edges, nodes.num_rows)
    assert graph.num_nodes == nodes.num_rows and graph.num_edges == edges.num_rows


def test_batch_edge_index_relabels_and_counts_cut_edges():
    # path 0-1-2-3-4
    graph = NodeGraph.from_edges([0, 1, 2, 3], [1, 2, 3, 4], num_nodes=5)
    edge_index, cut = graph.batch_edge_index([3, 2, 0])
    assert sorted(map(tuple, edge_index.T.tolist())) == [(0, 1), (1, 0)]  # 3-2 in batch positions
    assert cut == 3  # 0-1, 1-2 and 3-4 leave the batch
    with pytest.raises(ValueError, match="twice"):
        graph.batch_edge_index([1, 1])
    edge_index, _ = graph.batch_edge_index([4, 0])  # the lookup table was reset after the failure
    assert edge_index.numel() == 0


@pytest.mark.parametrize("sampler_name", ["graph", "uniform"])
def test_every_row_once_per_epoch_and_deterministic(node_graph, sampler_name):
    rows = np.arange(20, 140)  # a split: only some of the graph's nodes
    sampler = build_batch_sampler(sampler_name, node_graph, rows, batch_size=32, seed=3)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 4
        assert all(len(b) == 32 for b in batches[:-1])
        assert sorted(np.concatenate(batches).tolist()) == list(range(rows.size))
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]


def test_drop_last(node_graph):
    sampler = GraphClusterBatchSampler(node_graph, np.arange(100), batch_size=32, drop_last=True)
    assert len(sampler) == 3 and [len(b) for b in sampler] == [32, 32, 32]


def test_graph_sampler_never_pulls_nodes_from_another_split(node_graph):
    rows = np.arange(0, 160, 2)
    sampler = GraphClusterBatchSampler(node_graph, rows, batch_size=16, seed=0)
    used = {int(rows[r]) for batch in sampler for r in batch}
    assert used == set(rows.tolist())


def test_graph_batches_are_much_denser_than_uniform_ones():
    edges = power_law_edges(5000, 30000, seed=0)
    graph = NodeGraph.from_edges(edges[0], edges[1], 5000)
    rows = np.arange(5000)
    graph_density = mean_batch_edge_density(GraphClusterBatchSampler(graph, rows, 128), graph)
    uniform_density = mean_batch_edge_density(UniformBatchSampler(rows, 128), graph)
    assert graph_density > 0.8
    assert graph_density > 2 * uniform_density  # on 100k nodes the gap is ~50x: benchmarks/step_overhead.py


def test_collator_builds_a_model_batch_with_the_subgraph(processed_nodes, node_graph, tokenizer):
    features = [processed_nodes[i] for i in (0, 5, 9, 33)]
    batch = SlipDataCollator(node_graph)(features)
    assert batch["pixel_values"].shape == (4, 3, 16, 16)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 16)
    assert batch["labels"].tolist() == [processed_nodes[i]["labels"] for i in (0, 5, 9, 33)]
    assert batch["node_ids"].tolist() == [0, 5, 9, 33]
    expected, cut = node_graph.batch_edge_index([0, 5, 9, 33])
    assert torch.equal(batch["edge_index"], expected) and batch["num_cut_edges"] == cut
    assert edges_per_node(batch["edge_index"], 4) == expected.size(1) / 8


def test_collator_pads_unequal_texts_with_a_tokenizer(node_graph, tokenizer):
    features = [
        {"node_id": 0, "pixel_values": np.zeros((3, 4, 4)), "input_ids": [0, 5, 1]},
        {"node_id": 1, "pixel_values": np.zeros((3, 4, 4)), "input_ids": [0, 5, 6, 7, 1]},
    ]
    with pytest.raises(ValueError, match="different lengths"):
        SlipDataCollator(node_graph)(features)
    batch = SlipDataCollator(node_graph, tokenizer=tokenizer)(features)
    assert batch["input_ids"].shape == (2, 5) and batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]


def test_collator_names_missing_columns(node_graph):
    with pytest.raises(KeyError, match="node_id"):
        SlipDataCollator(node_graph)([{"pixel_values": np.zeros((3, 4, 4)), "input_ids": [0, 1]}])


def test_collator_edges_are_already_what_the_model_would_make_of_them(processed_nodes, node_graph, slip_model):
    """The collator's edges are both directions of a simple graph in coalesced order, so the model may use them
    as they are (`simple_edges`): the same losses and gradients, bit for bit, as deduplicating them first."""
    from slip_hf.graph_masks import symmetric_simple_edges

    sampler = GraphClusterBatchSampler(node_graph, np.arange(node_graph.num_nodes), 24, seed=3)
    rows = next(iter(sampler))
    batch = SlipDataCollator(node_graph)([processed_nodes[i] for i in rows])
    assert batch["simple_edges"] and batch["edge_index"].size(1) > 10
    assert torch.equal(batch["edge_index"], symmetric_simple_edges(batch["edge_index"], len(rows)))
    inputs = {k: v for k, v in batch.items() if k not in ("node_ids", "num_cut_edges", "simple_edges")}
    outputs = []
    slip_model.eval()  # no dropout: the two passes draw no random numbers
    for simple in (True, False):
        slip_model.zero_grad()
        out = slip_model(**inputs, simple_edges=simple, return_loss=True)
        out.loss.backward()
        outputs.append((out.loss.detach(), out.node_embeds.detach(), slip_model.vision_graph.layers[0].lin.weight.grad.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*outputs))
