"""A catalogue: the items a dataset's split holds (or all of them), in row order, and the graph's edges between
them as rows of that order. `slip-hf embed` and the Space (`slip_hf.space.Catalog`) read a dataset through these,
so an embeddings folder's rows and the Space's are the same items in the same order."""

import numpy as np
import torch
from datasets import Dataset


def catalogue_items(graph, split: str) -> Dataset:
    """The rows of a catalogue: one split of the graph's nodes, or every split (`"all"`) in train, validation,
    test order (the order of `slip_hf.space.Catalog`)."""
    if split == "all":
        return graph.all_nodes()
    if split not in graph.nodes:
        raise ValueError(f"the dataset has no split {split!r}; it has {list(graph.nodes)} (or use 'all').")
    return graph.nodes[split]


def catalogue_edge_rows(node_ids: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edges `src -> dst` (node ids) whose two ends are catalogue items: their ends as rows of `node_ids`, and
    the mask of those edges in `src`/`dst` (to keep their other columns)."""
    row_of = np.full(int(max(node_ids.max(initial=-1), 0)) + 1, -1, dtype=np.int64)
    row_of[node_ids] = np.arange(node_ids.size)
    kept = (src < row_of.size) & (dst < row_of.size)
    kept[kept] = (row_of[src[kept]] >= 0) & (row_of[dst[kept]] >= 0)
    return row_of[src[kept]], row_of[dst[kept]], kept


def catalogue_edges(graph, node_ids: np.ndarray) -> torch.Tensor:
    """The graph's edges between catalogue items, as catalogue rows, both directions `(2, 2E)`."""
    src, dst, _ = catalogue_edge_rows(node_ids, *(np.asarray(graph.edges[c], dtype=np.int64) for c in ("src", "dst")))
    return torch.from_numpy(np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]))


__all__ = ["catalogue_edge_rows", "catalogue_edges", "catalogue_items"]
