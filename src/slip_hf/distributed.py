r"""SLIP over several processes: the losses of the *global* batch, equal to one process on the whole batch.

With P processes of n nodes each (N = P n), a plain data-parallel run computes every loss on its local n
nodes: the CLIP softmax sees n - 1 negatives instead of N - 1, and a co-purchase edge whose ends landed on
different processes is lost as a positive. Here every process instead

1. all-gathers the image and text embeddings E_v, E_t (N x d) and the node ids;
2. looks up the edges of the global batch in the dataset graph (cross-process edges included) and runs the
   GAT stacks and the fusion on the global batch's subgraph, giving Z for all N nodes (the GAT is cheap next
   to the encoders, so each process repeats it rather than communicating its activations);
3. computes the losses for its own n anchor rows against all N columns (`local_loss=True`, memory
   O(n x N)), weighted so that the average over processes is the global loss:

.. math::
    \mathcal{L}^{(p)} = P \cdot \frac{1}{\text{global normaliser}} \sum_{i \in \text{rows of } p} \ell_i

(N for the CLIP and auxiliary losses, the global :math:`\lVert M^+ \rVert` for Eq. 5, obtained with one
all-reduce of a count).

Gradients: with `gather_with_grad=True` the gather is differentiable: its backward sums, for each process's
rows, the gradients that every process's loss sends them (one all-reduce of the gathered gradient). After DDP averages the
parameter gradients, they equal those of the single-process loss on the concatenated batch, for every
parameter (the tests check this with two gloo processes, cross-process edges included).
`gather_with_grad=False` (open_clip's cheaper default) gathers without gradient and puts the local rows back:
each process's encoders then only receive the gradient of their own loss share, an approximation.
`local_loss=False` computes all N rows on every process (O(N^2) memory, P times the loss compute); with a
differentiable gather it is exact too. (Exact up to dropout: each process repeats the GAT with its own dropout
masks, so with `graph_dropout > 0` the processes see slightly different Z; the tests use dropout 0.)

Communication per step and process (fp32, d = projection dim, P processes, N = P n nodes in the global
batch): the forward all-gathers E_v and E_t, receiving 2 (P - 1) n d floats, plus (P - 1) n node ids and
two all-reduced counts; with `gather_with_grad` the backward all-reduces the two N x d gradients, which a
ring all-reduce does by sending and receiving about 2 (P - 1) / P * 2 N d floats. In all about
6 (P - 1) n d floats, i.e. 4 bytes * 6 (P - 1) n d: for ViT-B/16 (d = 512), n = 128, P = 8, 11 MB a step,
against DDP's all-reduce of the ~150 M parameter gradients (~1.2 GB a step), which does not depend on n.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .graph_batching import NodeGraph


@dataclass
class GlobalBatch:
    """How a process's forward pass joins the global batch (built by [`SlipTrainer`] for multi-process runs).

    Attributes:
        edge_index (`torch.LongTensor` of shape `(2, E)`, *optional*): edges of the global batch's subgraph, in
            global batch positions (process p's rows are `p * n .. (p + 1) * n - 1`). `None` keeps the graph
            path local (only the CLIP loss is global).
        gather_with_grad: differentiable all-gather (exact gradients) or not (cheaper, approximate).
        local_loss: each process computes its own anchor rows only (O(n x N) memory).
        edge_weight (`torch.FloatTensor` of shape `(E,)`, *optional*): the weight of each edge of `edge_index`
            (weighted positives, `slip_hf.positive_weights`).
        simple_edges: `edge_index` holds both directions of a simple graph (as `NodeGraph.batch_subgraph` makes it),
            so the model need not check or deduplicate it (see `SlipModel.forward`).
    """

    edge_index: torch.Tensor | None = None
    gather_with_grad: bool = True
    local_loss: bool = True
    edge_weight: torch.Tensor | None = None
    simple_edges: bool = False


def rank_and_world_size() -> tuple[int, int]:
    """`(rank, world size)` of the default process group, `(0, 1)` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherRowsWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every process's gradient for this process's rows.

    (`torch.distributed.nn.functional.all_gather` did this and is deprecated; an all-reduce of the gradient
    followed by a slice works on every backend, gloo included, which has no reduce-scatter.)
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, world = rank_and_world_size()
        ctx.rank, ctx.rows = rank, tensor.size(0)
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(tensor: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """Every process's `tensor` concatenated along dim 0, in rank order.

    Args:
        tensor (`torch.Tensor` of shape `(n, ...)`): this process's rows; n must be the same on every process.
        with_grad: let gradients flow back to every process's rows; otherwise the other processes' rows are
            constants and this process's rows keep their own graph.

    Returns:
        `torch.Tensor` of shape `(P * n, ...)`.
    """
    rank, world = rank_and_world_size()
    if world == 1:
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([tensor.size(0)], device=tensor.device))
    if len({int(size) for size in sizes}) != 1:
        raise ValueError(
            f"global-batch losses need the same batch size on every process, got {[int(s) for s in sizes]}; "
            "use the sharded graph-aware samplers (they pad the last global batch)."
        )
    if with_grad:
        return _GatherRowsWithGrad.apply(tensor)
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.detach())
    parts[rank] = tensor
    return torch.cat(parts, dim=0)


def sum_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The sum of a (gradient-free) tensor over all processes."""
    _, world = rank_and_world_size()
    if world == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def global_batch_edge_index(
    graph: NodeGraph, local_node_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gather the node ids of the global batch and return its subgraph's edges in global positions.

    Returns:
        (edge_index, edge_weight, global_node_ids): a `(2, E)` LongTensor and, for a weighted graph, the `(E,)`
        weights, on `local_node_ids`' device, and the `(N,)` ids.
    """
    global_ids = gather_rows(local_node_ids, with_grad=False)
    edge_index, edge_weight, _ = graph.batch_subgraph(np.asarray(global_ids.cpu()))
    device = local_node_ids.device
    return edge_index.to(device), None if edge_weight is None else edge_weight.to(device), global_ids


__all__ = ["GlobalBatch", "gather_rows", "global_batch_edge_index", "rank_and_world_size", "sum_over_processes"]
