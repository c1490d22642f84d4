"""Related-item retrieval: does an item's embedding find what is bought with it?

Every item of a pool queries all the other items of the pool by cosine similarity of one embedding (image,
text, their mean, or Z); the relevant candidates of query q are its graph neighbours within `hops` hops that
are in the pool. Queries without a relevant candidate are left out (and counted). Per query, with the
candidates sorted by score (ties broken against the relevant items, so a constant model gets the worst rank):

* MRR: 1 / rank of the first relevant candidate;
* Hits@k: whether a relevant candidate is in the top k;
* NDCG@10: :math:`\\sum_{r \\le 10} rel_r / \\log_2(r + 1)` over the ideal value :math:`\\sum_{r \\le \\min(|R|, 10)} 1 / \\log_2(r + 1)`;
* Recall@k: the share of all relevant candidates in the top k.

Scores are computed in chunks of queries, so memory is O(chunk x N); 30k items take one pass.
"""

from collections.abc import Sequence

import numpy as np
import torch

from ..graph_batching import NodeGraph


def relevant_candidates(graph: NodeGraph, pool: np.ndarray, hops: int = 1) -> list[np.ndarray]:
    """For each pool item (in pool order), the sorted pool positions of its neighbours within `hops` hops
    (itself excluded). Breadth-first over the CSR adjacency, all queries at once, O(edges reached) memory."""
    pool = np.asarray(pool, dtype=np.int64)
    position = np.full(graph.num_nodes, -1, dtype=np.int64)
    position[pool] = np.arange(pool.size)
    owner, frontier = np.arange(pool.size), pool
    owners, nodes = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for _ in range(hops):
        step_owner, neighbour = graph.neighbors_of(frontier)
        pairs = np.unique(np.stack([owner[step_owner], neighbour], axis=1), axis=0)
        owner, frontier = pairs[:, 0], pairs[:, 1]
        owners.append(owner)
        nodes.append(frontier)
    owners, nodes = np.concatenate(owners), np.concatenate(nodes)
    keep = (position[nodes] >= 0) & (nodes != pool[owners])
    pairs = np.unique(np.stack([owners[keep], position[nodes[keep]]], axis=1), axis=0)
    splits = np.searchsorted(pairs[:, 0], np.arange(1, pool.size))
    return np.split(pairs[:, 1], splits)


@torch.no_grad()
def related_item_metrics(
    embeds: torch.Tensor, relevant: Sequence[np.ndarray], ks: Sequence[int] = (1, 10, 50), chunk_size: int = 1024
) -> dict[str, float]:
    """MRR, Hits@k, NDCG@10 and Recall@k (see the module docstring).

    Args:
        embeds (`torch.Tensor` of shape `(N, d)`): one embedding per pool item (normalised here).
        relevant: for each item, the positions of its relevant candidates (never itself).
        ks: cut-offs of Hits and Recall.
        chunk_size: queries per similarity block.
    """
    embeds = torch.nn.functional.normalize(torch.as_tensor(embeds).float(), dim=-1)
    num = embeds.size(0)
    depth = min(max(*ks, 10), num - 1)
    queries = [q for q in range(num) if len(relevant[q])]
    totals = {"mrr": 0.0, "ndcg_at_10": 0.0, **{f"hits_at_{k}": 0.0 for k in ks}, **{f"recall_at_{k}": 0.0 for k in ks}}
    discounts = 1 / torch.log2(torch.arange(2, depth + 2, dtype=torch.float64))
    for start in range(0, len(queries), chunk_size):
        rows = torch.tensor(queries[start : start + chunk_size])
        scores = embeds[rows] @ embeds.T
        scores[torch.arange(rows.numel()), rows] = float("-inf")  # an item is not its own candidate
        is_relevant = torch.zeros_like(scores, dtype=torch.bool)
        for i, q in enumerate(rows.tolist()):
            is_relevant[i, torch.as_tensor(relevant[q])] = True
        ranked = _ranked_relevance(scores, is_relevant, depth)  # (c, depth) bool
        best = scores.masked_fill(~is_relevant, float("-inf")).max(dim=1).values
        first_rank = 1 + ((scores >= best[:, None]) & ~is_relevant).sum(dim=1)
        totals["mrr"] += float((1.0 / first_rank.double()).sum())
        count = is_relevant.sum(dim=1).double()
        for k in ks:
            found = ranked[:, :k].sum(dim=1).double()
            totals[f"hits_at_{k}"] += float((first_rank <= k).double().sum())
            totals[f"recall_at_{k}"] += float((found / count).sum())
        gains = (ranked[:, :10].double() * discounts[:10]).sum(dim=1)
        ideal = torch.stack([discounts[: int(min(c, 10))].sum() for c in count.tolist()])
        totals["ndcg_at_10"] += float((gains / ideal).sum())
    metrics = {name: value / max(1, len(queries)) for name, value in totals.items()}
    metrics["num_queries"] = len(queries)
    metrics["queries_without_relevant"] = num - len(queries)
    return metrics


def _ranked_relevance(scores: torch.Tensor, is_relevant: torch.Tensor, depth: int) -> torch.Tensor:
    """Relevance of the top `depth` candidates of each row, ties broken against the relevant ones."""
    # a relevant candidate loses a tie: nudge it below its equals by one ulp
    nudged = torch.where(is_relevant, torch.nextafter(scores, torch.tensor(float("-inf"))), scores)
    top = torch.topk(nudged, depth, dim=1).indices
    return is_relevant.gather(1, top)


__all__ = ["related_item_metrics", "relevant_candidates"]
