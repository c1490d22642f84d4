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
    """`(E, num_negatives)` node ids w for each positive (u, v): w != u and (u, w) is no edge of the graph
    (either direction). Seeded: every model is scored against the same negatives."""
    rng = np.random.default_rng(seed)
    keys = set((np.minimum(all_src, all_dst) * num_nodes + np.maximum(all_src, all_dst)).tolist())
    unique = np.fromiter(keys, dtype=np.int64, count=len(keys))
    degree = np.bincount(np.concatenate([unique // num_nodes, unique % num_nodes]), minlength=num_nodes)
    fewest = int((num_nodes - 1 - degree[positives[0].numpy()]).min()) if positives.size(1) else num_nodes
    if fewest < num_negatives:
        raise ValueError(f"a node has only {fewest} non-neighbours: cannot draw {num_negatives} negatives per edge.")
    out = np.empty((positives.size(1), num_negatives), dtype=np.int64)
    for row, u in enumerate(positives[0].tolist()):
        chosen: list[int] = []
        while len(chosen) < num_negatives:
            for w in rng.integers(0, num_nodes, size=2 * num_negatives).tolist():
                if w != u and min(u, w) * num_nodes + max(u, w) not in keys and w not in chosen:
                    chosen.append(w)
                    if len(chosen) == num_negatives:
                        break
        out[row] = chosen
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


def cosine_scores(embeds: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of node pairs (`u`, `v` of any equal shape) under `embeds` `(N, d)`."""
    embeds = F.normalize(torch.as_tensor(embeds).float(), dim=-1)
    return (embeds[u] * embeds[v]).sum(-1)


class LinkProbe(nn.Module):
    """Two GraphSAGE layers over frozen node features and a dot-product decoder (the multimodal graph
    benchmarks' probe)."""

    def __init__(self, in_dim: int, hidden: int = 128):
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.first, self.second = SAGEConv(in_dim, hidden), SAGEConv(hidden, hidden)

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.second(F.relu(self.first(features, edge_index)), edge_index)


def train_link_probe(features: torch.Tensor, train_edges: torch.Tensor, epochs: int = 100, hidden: int = 128,
                     lr: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Train a [`LinkProbe`] on the training graph (its edges as positives, fresh uniform negatives each epoch,
    binary cross-entropy) and return the node representations it gives, `(N, hidden)`, for scoring by dot
    product. Seeded and deterministic on the CPU."""
    from torch_geometric.utils import to_undirected

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    features = torch.as_tensor(features).float()
    edge_index = to_undirected(train_edges, num_nodes=features.size(0))
    probe = LinkProbe(features.size(1), hidden)
    optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
    for _ in range(epochs):
        optimizer.zero_grad()
        nodes = probe(features, edge_index)
        negatives = torch.randint(0, features.size(0), train_edges.shape, generator=generator)
        positive = (nodes[train_edges[0]] * nodes[train_edges[1]]).sum(-1)
        negative = (nodes[negatives[0]] * nodes[negatives[1]]).sum(-1)
        loss = F.binary_cross_entropy_with_logits(torch.cat([positive, negative]),
                                                  torch.cat([torch.ones_like(positive), torch.zeros_like(negative)]))
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return probe.eval()(features, edge_index)


def dot_scores(nodes: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dot product of node pairs under the probe's representations."""
    return (nodes[u] * nodes[v]).sum(-1)


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
