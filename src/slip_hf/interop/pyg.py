"""The co-purchase graph for torch_geometric: node features, split masks and mini-batches by neighbour sampling,
so that PyG's GNN baselines (the MM-Graph / MAGB setting) train on our dataset in a few lines:

    from slip_hf.data import load_copurchase_graph
    from slip_hf.interop import neighbor_loader, pyg_graph

    graph = load_copurchase_graph("you/amazon-copurchase-mm", "electronics")
    data = pyg_graph(graph, model="you/slip-electronics")          # x = [image || text] frozen embeddings
    for batch in neighbor_loader(data, num_neighbors=[10, 5], batch_size=512, input_nodes=data.train_mask):
        out = gnn(batch.x, batch.edge_index)[: batch.batch_size]   # the seed nodes come first

Without a model, `data` carries no `x`: `data.node_id` indexes `graph.node_table()` (row i is node i), so a batch's
`batch.n_id` picks the raw images and titles of its nodes.

[`neighbor_loader`] is `torch_geometric.loader.NeighborLoader`. PyG samples neighbours with pyg-lib or
torch-sparse, compiled packages that have no wheel on PyPI for every platform (none for this project's CPU
machines); where neither is installed, [`CSRNeighborSampler`] samples the same way (uniformly, without
replacement, `num_neighbors[k]` per node at hop k) in numpy over the graph's CSR arrays.
"""

import os
import warnings

import numpy as np
import torch
import torch_geometric.typing
from torch_geometric.sampler import NeighborSampler, SamplerOutput

from ..data.hub import CopurchaseGraph


def pyg_graph(
    graph: CopurchaseGraph,
    model: str | os.PathLike | None = None,
    *,
    text_column: str = "title",
    image_column: str = "image",
    batch_size: int = 64,
    num_workers: int = 0,
    max_text_length: int | None = None,
    device: str | torch.device | None = None,
):
    """`graph.to_pyg()` (edges both ways, `edge_weight`, `y`, `train_mask` / `val_mask` / `test_mask`) plus
    `node_id` `(N,)`, and with `model` (a SLIP or CLIP checkpoint) its frozen, l2-normalised embeddings of every
    node: `x_image` and `x_text` `(N, d)` and `x = [x_image || x_text]` `(N, 2d)`, row i = node i.

    Args:
        graph ([`CopurchaseGraph`]): the dataset's graph ([`load_copurchase_graph`]).
        model (`str | os.PathLike`, *optional*): a SLIP or CLIP checkpoint (folder or Hub id) whose embeddings become
            the node features; without it, the graph alone.
        text_column (`str`, *optional*, defaults to `"title"`): the node text embedded.
        image_column (`str`, *optional*, defaults to `"image"`): the node image embedded.
        batch_size (`int`, *optional*, defaults to 64): nodes per embedding batch.
        num_workers (`int`, *optional*, defaults to 0): data workers that decode the images.
        max_text_length (`int`, *optional*): tokens per text; default: the tokenizer's.
        device (`str | torch.device`, *optional*): where to embed; default: CUDA when there is one.

    Returns:
        torch_geometric.data.Data: `edge_index` `(2, 2E)`, `edge_weight` `(2E,)`, `y` `(N,)`, the three masks
            `(N,)`, `node_id` `(N,)`, and with `model` `x_image`, `x_text` and `x`.

    Example:

    ```python
    from slip_hf.data import load_copurchase_graph
    from slip_hf.interop import neighbor_loader, pyg_graph

    data = pyg_graph(load_copurchase_graph("you/amazon-copurchase-mm", "electronics"), "you/slip-electronics")
    loader = neighbor_loader(data, num_neighbors=[10, 5], batch_size=128, input_nodes=data.train_mask)
    ```
    """
    from ..embedding import load_dual_encoder
    from ..evaluation.runner import EvaluationConfig, embed_split

    data = graph.to_pyg()
    data.node_id = torch.arange(graph.num_nodes)
    if model is None:
        return data
    encoder, image_processor, tokenizer = load_dual_encoder(str(model))
    encoder = encoder.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    config = EvaluationConfig(text_column=text_column, image_column=image_column, batch_size=batch_size,
                              max_text_length=max_text_length, num_workers=num_workers)
    embeddings = embed_split(encoder, image_processor, tokenizer, graph.node_table(), config)
    order = np.argsort(embeddings.node_ids)
    data.x_image, data.x_text = embeddings.image[order], embeddings.text[order]
    data.x = torch.cat([data.x_image, data.x_text], dim=1)
    return data


def _has_compiled_sampler() -> bool:
    return bool(torch_geometric.typing.WITH_PYG_LIB or torch_geometric.typing.WITH_TORCH_SPARSE)


class CSRNeighborSampler(NeighborSampler):
    """PyG's `NeighborSampler` with its homogeneous sampling step in numpy (see the module docstring); used only
    where neither pyg-lib nor torch-sparse is installed. Directional subgraphs, no replacement, no time.
    Randomness comes from torch's global generator, so `torch.manual_seed` makes the batches reproducible."""

    def _sample(self, seed, seed_time=None, **kwargs):
        if isinstance(seed, dict) or seed_time is not None or self.disjoint or self.replace:
            raise ValueError("the numpy neighbour sampler handles homogeneous graphs without time, replacement or "
                             "disjoint subgraphs; install pyg-lib for those.")
        colptr, row = self.colptr.numpy(), self.row.numpy()
        node_list = seed.numpy().astype(np.int64).tolist()
        position = {node: i for i, node in enumerate(node_list)}
        rows, cols, edges = [], [], []
        frontier = list(range(len(node_list)))
        for fanout in self.num_neighbors.get_mapped_values():
            targets = np.asarray([node_list[i] for i in frontier], dtype=np.int64)
            picked_owner, picked_entry = _sample_entries(colptr[targets], colptr[targets + 1], int(fanout))
            new_frontier = []
            for owner, entry in zip(picked_owner.tolist(), picked_entry.tolist()):
                neighbour = int(row[entry])
                local = position.get(neighbour)
                if local is None:
                    local = position[neighbour] = len(node_list)
                    node_list.append(neighbour)
                    new_frontier.append(local)
                rows.append(local)
                cols.append(frontier[owner])
                edges.append(entry)
            frontier = new_frontier
        row_out, col_out = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
        if self.sample_direction == "backward":
            row_out, col_out = col_out, row_out
        return SamplerOutput(node=torch.tensor(node_list, dtype=torch.long), row=row_out, col=col_out,
                             edge=torch.tensor(edges, dtype=torch.long), batch=None)


def _sample_entries(starts: np.ndarray, ends: np.ndarray, fanout: int) -> tuple[np.ndarray, np.ndarray]:
    """For each segment `[starts[i], ends[i])` of the CSR arrays, `fanout` entries drawn uniformly without
    replacement (all of them when the segment is shorter; all when `fanout < 0`, as PyG means it). Returns the
    segment of each picked entry and the entry."""
    counts = ends - starts
    owner = np.repeat(np.arange(counts.size), counts)
    entry = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    if fanout < 0 or not entry.size:
        return owner, entry
    keys = torch.rand(entry.size, dtype=torch.float64).numpy()  # a random rank inside each segment
    order = np.lexsort((keys, owner))
    owner, entry = owner[order], entry[order]
    rank = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < fanout
    return owner[keep], entry[keep]


def neighbor_loader(data, num_neighbors: list[int], **kwargs):
    """`torch_geometric.loader.NeighborLoader(data, num_neighbors, **kwargs)`, with [`CSRNeighborSampler`] where
    PyG has no compiled sampler (pyg-lib, torch-sparse).

    Args:
        data (`torch_geometric.data.Data`): the graph, e.g. [`pyg_graph`]'s.
        num_neighbors (`list[int]`): neighbours sampled per node at each hop (`[10, 5]`: two hops).
        **kwargs (`Any`): passed to `NeighborLoader` (`batch_size`, `input_nodes`, `shuffle`, `replace`, ...).

    Returns:
        torch_geometric.loader.NeighborLoader: mini-batches of sampled subgraphs around the input nodes.
    """
    from torch_geometric.loader import NeighborLoader

    if not _has_compiled_sampler() and "neighbor_sampler" not in kwargs:
        options = {key: kwargs[key] for key in ("replace", "subgraph_type", "disjoint", "is_sorted") if key in kwargs}
        with warnings.catch_warnings():  # PyG's advice to install pyg-lib: the reason this sampler exists
            warnings.filterwarnings("ignore", message=".*without a 'pyg-lib' installation", category=UserWarning)
            kwargs["neighbor_sampler"] = CSRNeighborSampler(data, num_neighbors=num_neighbors, **options)
    return NeighborLoader(data, num_neighbors=num_neighbors, **kwargs)


__all__ = ["CSRNeighborSampler", "neighbor_loader", "pyg_graph"]
