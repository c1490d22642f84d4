"""Link prediction on the co-purchase graph with frozen embeddings: the standard protocol of multimodal graph
benchmarks (MM-Graph, MAGB).

1. [`hold_out_edges`]: hold out a share of the edges, at random or the newest by `first_time` (new relations);
   the training graph keeps the rest.
2. [`sample_negatives`]: for every held-out edge (u, v), `num_negatives` nodes w with no edge (u, w) in the
   whole graph, seeded, the same for every model compared.
3. Score each positive against its own negatives, by the cosine of frozen embeddings (zero-shot,
   [`cosine_scores`]) or by a GraphSAGE probe trained on the training graph over the frozen features
   ([`train_link_probe`]).
4. [`link_metrics`]: the positive's rank among its negatives (ties count against it): MRR and Hits@k.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HeldOutEdges:
    """A training graph and the held-out edges, both `(2, E)` LongTensors of node ids (each edge once)."""

    train: torch.Tensor
    held_out: torch.Tensor


def hold_out_edges(
    src: np.ndarray, dst: np.ndarray, fraction: float = 0.1, by: str = "random", first_time: np.ndarray | None = None,
    seed: int = 0,
) -> HeldOutEdges:
    """Hold out `fraction` of the edges: a seeded random choice (`by="random"`) or the newest by `first_time`
    (`by="time"`, ties broken by position)."""
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    count = int(round(fraction * src.size))
    if by == "random":
        order = np.random.default_rng(seed).permutation(src.size)
    elif by == "time":
        if first_time is None:
            raise ValueError("by='time' needs the edges' first_time.")
        order = np.argsort(-np.asarray(first_time), kind="stable")
    else:
        raise ValueError(f"by must be 'random' or 'time', got {by!r}.")
    held, kept = order[:count], np.sort(order[count:])
    return HeldOutEdges(
        train=torch.from_numpy(np.stack([src[kept], dst[kept]])), held_out=torch.from_numpy(np.stack([src[held], dst[held]]))
    )


def sample_negatives(positives: torch.Tensor, all_src: np.ndarray, all_dst: np.ndarray, num_nodes: int,
                     num_negatives: int = 100, seed: int = 0) -> torch.Tensor:
    """`(E, num_negatives)` distinct node ids w for each positive (u, v): w != u and (u, w) is no edge of the
    graph (either direction). Seeded: every model is scored against the same negatives.

    Vectorised rejection sampling: each round draws candidates for every row still short of negatives, drops
    self pairs, edges (one `searchsorted` into the sorted edge keys) and repeats, and keeps the first ones."""
    rng = np.random.default_rng(seed)
    all_src, all_dst = np.asarray(all_src, dtype=np.int64), np.asarray(all_dst, dtype=np.int64)
    keys = np.unique(np.minimum(all_src, all_dst) * num_nodes + np.maximum(all_src, all_dst))
    degree = np.bincount(np.concatenate([keys // num_nodes, keys % num_nodes]), minlength=num_nodes)
    anchors = positives[0].numpy().astype(np.int64)
    fewest = int((num_nodes - 1 - degree[anchors]).min()) if anchors.size else num_nodes
    if fewest < num_negatives:
        raise ValueError(f"a node has only {fewest} non-neighbours: cannot draw {num_negatives} negatives per edge.")
    out = np.full((anchors.size, num_negatives), -1, dtype=np.int64)
    filled = np.zeros(anchors.size, dtype=np.int64)
    rows = np.arange(anchors.size)
    while rows.size:
        u = anchors[rows][:, None]
        candidates = rng.integers(0, num_nodes, size=(rows.size, 2 * num_negatives))
        valid = candidates != u
        if keys.size:
            pair = np.minimum(u, candidates) * num_nodes + np.maximum(u, candidates)
            valid &= keys[np.minimum(np.searchsorted(keys, pair), keys.size - 1)] != pair
        # a node drawn twice in a row counts once (its first draw)
        order = np.argsort(candidates, axis=1, kind="stable")
        ordered = np.take_along_axis(candidates, order, axis=1)
        repeat = np.zeros_like(valid)
        np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
        valid &= ~repeat
        for i in np.flatnonzero(filled[rows] > 0):  # rows topped up in a later round: not what they hold
            valid[i] &= ~np.isin(candidates[i], out[rows[i], : filled[rows[i]]])
        rank = np.cumsum(valid, axis=1)
        take = valid & (rank <= (num_negatives - filled[rows])[:, None])
        row, column = np.nonzero(take)
        out[rows[row], filled[rows][row] + rank[row, column] - 1] = candidates[row, column]
        filled[rows] += take.sum(axis=1)
        rows = rows[filled[rows] < num_negatives]
    return torch.from_numpy(out)


def link_metrics(positive_scores: torch.Tensor, negative_scores: torch.Tensor, ks: Sequence[int] = (10, 50, 100)) -> dict[str, float]:
    """MRR and Hits@k of each positive's rank among its own negatives (a tie counts against the positive).

    Args:
        positive_scores (`torch.Tensor` of shape `(E,)`), negative_scores (`torch.Tensor` of shape `(E, K)`).
    """
    ranks = 1 + (negative_scores >= positive_scores[:, None]).sum(dim=1).double()
    metrics = {"mrr": float((1 / ranks).mean()), "num_positives": int(ranks.numel())}
    metrics.update({f"hits_at_{k}": float((ranks <= k).double().mean()) for k in ks})
    return metrics


def cosine_scores(embeds: torch.Tensor, u: torch.Tensor, v: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Cosine similarity of node pairs under `embeds` `(N, d)`: `u` of shape `(E,)` or `(E, 1)` against `v` of
    shape `(E,)` or `(E, K)`, in chunks of rows (memory O(chunk x K x d), not O(E x K x d))."""
    return dot_scores(F.normalize(torch.as_tensor(embeds).float(), dim=-1), u, v, chunk_size)


class LinkProbe(nn.Module):
    """Two GraphSAGE layers (mean aggregation) over frozen node features and a dot-product decoder (the
    multimodal graph benchmarks' probe)."""

    def __init__(self, in_dim: int, hidden: int = 128):
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.first, self.second = SAGEConv(in_dim, hidden), SAGEConv(hidden, hidden)

    def forward(self, features: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """`adjacency`: an `edge_index` `(2, E)` or a sparse `(N, N)` adjacency (one sparse-dense product per
        layer instead of a scatter over the edges: faster on the CPU)."""
        return self.second(F.relu(self.first(features, adjacency)), adjacency)


def train_link_probe(features: torch.Tensor, train_edges: torch.Tensor, epochs: int = 100, hidden: int = 128,
                     lr: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Train a [`LinkProbe`] on the training graph (its edges as positives, fresh uniform negatives each epoch,
    binary cross-entropy) and return the node representations it gives, `(N, hidden)`, for scoring by dot
    product. Seeded and deterministic on the CPU: it trains on one thread, because the multi-threaded sparse
    product sums in a varying order (1e-6 differences that training amplifies to the second digit of the MRR);
    one thread with the sparse product is still twice as fast as the scatter over edges on two."""
    from torch_geometric.utils import to_torch_csr_tensor, to_undirected

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    features = torch.as_tensor(features).float()
    num_nodes = features.size(0)
    probe = LinkProbe(features.size(1), hidden)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    with warnings.catch_warnings():  # torch warns on every CSR tensor ("beta", invariant checks): PyG-internal
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled", category=UserWarning)
        # a sparse adjacency: SAGEConv aggregates with one sparse-dense product instead of a scatter over edges
        adjacency = to_torch_csr_tensor(to_undirected(train_edges, num_nodes=num_nodes), size=(num_nodes, num_nodes))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _fit_probe(probe, optimizer, features, adjacency, train_edges, epochs, generator)
        finally:
            torch.set_num_threads(threads)


def _fit_probe(probe, optimizer, features, adjacency, train_edges, epochs, generator) -> torch.Tensor:
    num_nodes = features.size(0)
    for _ in range(epochs):
        optimizer.zero_grad()
        nodes = probe(features, adjacency)
        negatives = torch.randint(0, num_nodes, train_edges.shape, generator=generator)
        positive = (nodes[train_edges[0]] * nodes[train_edges[1]]).sum(-1)
        negative = (nodes[negatives[0]] * nodes[negatives[1]]).sum(-1)
        loss = F.binary_cross_entropy_with_logits(torch.cat([positive, negative]),
                                                  torch.cat([torch.ones_like(positive), torch.zeros_like(negative)]))
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return probe.eval()(features, adjacency)


def dot_scores(nodes: torch.Tensor, u: torch.Tensor, v: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """Dot product of node pairs under `nodes` `(N, d)` (the probe's representations); shapes as in
    [`cosine_scores`]."""
    u = u.reshape(-1)
    pairs = v.dim() == 1
    v = v.reshape(u.size(0), -1)
    scores = torch.cat([
        torch.bmm(nodes[v[start : start + chunk_size]], nodes[u[start : start + chunk_size]].unsqueeze(-1)).squeeze(-1)
        for start in range(0, u.size(0), chunk_size)
    ]) if u.numel() else torch.zeros(0, v.size(1))
    return scores.squeeze(1) if pairs else scores


__all__ = [
    "HeldOutEdges",
    "LinkProbe",
    "cosine_scores",
    "dot_scores",
    "hold_out_edges",
    "link_metrics",
    "sample_negatives",
    "train_link_probe",
]
