"""Hop distances and positive masks on a mini-batch subgraph (Eq. 2 of the SLIP paper).

Everything here works on the *batch* graph G_b: `edge_index` holds batch positions in `[0, num_nodes)`,
so the dense outputs are `num_nodes x num_nodes` (the batch size), never the whole dataset graph.
"""

from typing import Literal

import torch
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

UNREACHABLE = -1
"""Value of `hop_distances` for pairs farther apart than `max_hops` (or disconnected)."""


def validate_edge_index(edge_index: torch.Tensor, num_nodes: int) -> None:
    """Raise a `ValueError` that names the problem if `edge_index` is not a `(2, E)` index tensor into
    `[0, num_nodes)`."""
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape (2, num_edges), got {tuple(edge_index.shape)}.")
    if edge_index.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"edge_index must hold integer node positions, got dtype {edge_index.dtype}.")
    if edge_index.numel() == 0:
        return
    if edge_index.device.type != "cpu" or torch.compiler.is_compiling():  # a read-back would wait for the device
        torch._assert_async(((edge_index >= 0) & (edge_index < num_nodes)).all(),
                            f"edge_index refers to node positions outside the batch of {num_nodes} nodes")
        return
    low, high = int(edge_index.min()), int(edge_index.max())
    if low < 0 or high >= num_nodes:
        bad = int(((edge_index < 0) | (edge_index >= num_nodes)).any(dim=0).sum())
        raise ValueError(
            f"edge_index refers to node positions outside the batch of {num_nodes} nodes "
            f"(range seen [{low}, {high}], {bad} bad edge(s)). Edges must be relabelled to batch positions; "
            "`slip_hf.graph_batching.NodeGraph.batch_edge_index` does this and drops edges leaving the batch."
        )


def symmetric_simple_edges(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """The undirected simple graph of `edge_index`: both directions, no self loops, no duplicates.

    Args:
        edge_index (`torch.LongTensor` of shape `(2, E)`): edges between batch positions.
        num_nodes (`int`): batch size b.

    Returns:
        `torch.LongTensor` of shape `(2, E')`, sorted, with `(i, j)` present iff `(j, i)` is.
    """
    validate_edge_index(edge_index, num_nodes)
    edge_index = edge_index.long()
    edge_index, _ = remove_self_loops(edge_index)
    return coalesce(to_undirected(edge_index, num_nodes=num_nodes), num_nodes=num_nodes)


def hop_distances(
    edge_index: torch.Tensor, num_nodes: int, max_hops: int, sources: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Shortest-path hop distances dist_{G_b}(i, j) up to `max_hops`, by breadth-first frontier expansion.

    Each hop is one sparse-dense product :math:`R_{k} = A R_{k-1}` with the sparse adjacency A, so the cost is
    O(max_hops * E * S) for S sources rather than the O(b^3) of dense matrix powers.

    Args:
        edge_index (`torch.LongTensor` of shape `(2, E)`): edges between batch positions (any direction,
            duplicates and self loops allowed; the graph is treated as undirected).
        num_nodes (`int`): batch size b.
        max_hops (`int`): largest distance resolved.
        sources (`torch.LongTensor` of shape `(S,)`, *optional*): the rows to compute (default: all b nodes);
            distributed training asks for its local anchors only.

    Returns:
        `torch.LongTensor` of shape `(S, b)`: 0 at the source itself, k for nodes k <= max_hops hops away,
        `UNREACHABLE` (-1) otherwise.
    """
    device = edge_index.device
    edges = symmetric_simple_edges(edge_index, num_nodes)
    sources = torch.arange(num_nodes, device=device) if sources is None else sources.to(device).long()
    columns = torch.arange(sources.numel(), device=device)
    dist = torch.full((num_nodes, sources.numel()), UNREACHABLE, dtype=torch.long, device=device)
    dist[sources, columns] = 0
    if edges.numel() == 0 or max_hops < 1:
        return dist.T.contiguous()
    adjacency = torch.sparse_coo_tensor(
        edges, torch.ones(edges.size(1), device=device), (num_nodes, num_nodes), check_invariants=False
    ).coalesce()  # `edges` is validated and coalesced above
    frontier = torch.zeros((num_nodes, sources.numel()), device=device)
    frontier[sources, columns] = 1.0
    for hop in range(1, max_hops + 1):
        reached = torch.sparse.mm(adjacency, frontier) > 0
        new = reached & (dist == UNREACHABLE)
        if not bool(new.any()):
            break
        dist[new] = hop
        frontier = new.float()
    return dist.T.contiguous()


def edge_weight_matrix(
    edge_index: torch.Tensor, edge_weight: torch.Tensor, num_nodes: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Dense weights :math:`W_{ij}` of the batch edges, for weighted positives (`slip_hf.positive_weights`).

    The graph is undirected: :math:`W_{ij} = W_{ji}` is the largest weight given to (i, j) in either
    direction; self loops are ignored and non-edges are 0.

    Args:
        edge_index (`torch.LongTensor` of shape `(2, E)`): edges between batch positions.
        edge_weight (`torch.FloatTensor` of shape `(E,)`): one weight (>= 0) per column of `edge_index`.
        num_nodes (`int`): batch size b.
        rows (`torch.LongTensor` of shape `(S,)`, *optional*): the rows to return (default: all b).

    Returns:
        `torch.FloatTensor` of shape `(S, b)`.
    """
    validate_edge_index(edge_index, num_nodes)
    if edge_weight.shape != (edge_index.size(1),):
        raise ValueError(f"edge_weight has shape {tuple(edge_weight.shape)}, expected ({edge_index.size(1)},): one per edge.")
    device = edge_index.device
    src, dst = edge_index.long()
    keep = src != dst
    src, dst, weight = src[keep], dst[keep], edge_weight.to(device).float()[keep]
    if bool((weight < 0).any()):
        raise ValueError("edge weights must be >= 0.")
    flat = torch.cat([src * num_nodes + dst, dst * num_nodes + src])
    matrix = torch.zeros(num_nodes * num_nodes, device=device)
    matrix = matrix.scatter_reduce(0, flat, torch.cat([weight, weight]), reduce="amax", include_self=True)
    matrix = matrix.view(num_nodes, num_nodes)
    return matrix if rows is None else matrix[rows.to(device)]


def hop_positive_mask(
    edge_index: torch.Tensor,
    num_nodes: int,
    hops: int = 1,
    mode: Literal["within", "exact"] = "within",
    rows: torch.Tensor | None = None,
    simple: bool = False,
) -> torch.Tensor:
    r"""Positive mask :math:`M^+` of the structural contrastive loss (Eq. 2).

    .. math::
        M^+_{ij} = \mathbb{1}[1 \le \mathrm{dist}_{G_b}(i, j) \le h], \qquad M^+_{ii} = 0

    (`mode="within"`), or :math:`\mathbb{1}[\mathrm{dist}_{G_b}(i, j) = h]` (`mode="exact"`, the
    "2-hop neighbours alone" variant of §7.1). Distances are measured inside the batch subgraph only.

    Args:
        edge_index (`torch.LongTensor` of shape `(2, E)`): edges between batch positions.
        num_nodes (`int`): batch size b.
        hops (`int`): hop threshold h >= 1.
        mode (`str`): `"within"` or `"exact"`.
        rows (`torch.LongTensor` of shape `(S,)`, *optional*): compute only these anchors' rows.
        simple (`bool`): `edge_index` already holds both directions of a simple graph (the model's batch edges):
            the 1-hop mask is then built without deduplicating it again.

    Returns:
        `torch.BoolTensor` of shape `(S, b)` (`(b, b)` by default: symmetric, False on the diagonal).
    """
    if hops < 1:
        raise ValueError(f"hops must be >= 1, got {hops}.")
    if mode not in ("within", "exact"):
        raise ValueError(f"mode must be 'within' or 'exact', got {mode!r}.")
    if mode == "within" and hops == 1:
        # Fast path for the paper's default: the mask is (rows of) the adjacency matrix itself.
        edges = edge_index.long() if simple else symmetric_simple_edges(edge_index, num_nodes)
        if rows is None:
            mask = torch.zeros((num_nodes, num_nodes), dtype=torch.bool, device=edge_index.device)
            mask[edges[0], edges[1]] = True
            return mask
        position = torch.full((num_nodes,), -1, dtype=torch.long, device=edge_index.device)
        position[rows.to(edge_index.device).long()] = torch.arange(rows.numel(), device=edge_index.device)
        keep = position[edges[0]] >= 0
        mask = torch.zeros((rows.numel(), num_nodes), dtype=torch.bool, device=edge_index.device)
        mask[position[edges[0][keep]], edges[1][keep]] = True
        return mask
    dist = hop_distances(edge_index, num_nodes, max_hops=hops, sources=rows)
    return (dist >= 1) & (dist <= hops) if mode == "within" else dist == hops


def restrict_edges_to_nodes(
    edge_index: torch.Tensor, node_ids: torch.Tensor, num_total_nodes: int | None = None
) -> tuple[torch.Tensor, int]:
    """Keep the edges of a *global* `edge_index` whose both ends are in `node_ids`, relabelled to positions
    in `node_ids`.

    Args:
        edge_index (`torch.LongTensor` of shape `(2, E)`): edges between global node ids.
        node_ids (`torch.LongTensor` of shape `(b,)`): the batch's global node ids, distinct.
        num_total_nodes (`int`, *optional*): size of the global id space; inferred when omitted.

    Returns:
        (local_edge_index, num_dropped): a `(2, E')` tensor of batch positions and the number of edges
        dropped because an endpoint is outside the batch.
    """
    if node_ids.numel() != torch.unique(node_ids).numel():
        raise ValueError("node_ids of a batch must be distinct.")
    size = num_total_nodes
    if size is None:
        size = int(max(edge_index.max().item() if edge_index.numel() else -1, node_ids.max().item())) + 1
    position = torch.full((size,), -1, dtype=torch.long, device=node_ids.device)
    position[node_ids.long()] = torch.arange(node_ids.numel(), device=node_ids.device)
    local = position[edge_index.long()]
    keep = (local >= 0).all(dim=0)
    return local[:, keep], int((~keep).sum())


__all__ = [
    "UNREACHABLE",
    "hop_distances",
    "hop_positive_mask",
    "restrict_edges_to_nodes",
    "edge_weight_matrix",
    "symmetric_simple_edges",
    "validate_edge_index",
]
