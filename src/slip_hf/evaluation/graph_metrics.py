"""What structure buys: related-item retrieval and link prediction over a pool of embedded items.

The pool is the evaluated split (default) or every item of the dataset. Two graphs may be given: `known`, the
relations a model may see (the training graph), and `future`, the relations that appear after a temporal cut
(`CopurchaseGraph.temporal_split`).

* Related items ([`related_item_metrics`]): every pool item ranks the others; relevant = its neighbours
  within `hops` hops in known + future. Embeddings: image, text, their mean and, for a model with a graph
  path, Z computed over the pool's *known* edges. Z is transductive here: the relations it is asked to find
  are among its inputs, so read its row as "what the graph path adds when the relations are known".
* Link prediction ([`link_metrics`]): the positives are the future edges inside the pool (temporal split) or a
  seeded random `link_holdout` share of the pool's known edges; the *observed* graph is the pool's known
  edges without the positives. Each positive (u, v) is ranked against `link_negatives` seeded nodes w with no
  edge (u, w) in known + future, the same for every model. Scores: the cosine of the image, text and mean
  embeddings; of Z over the observed graph; and a GraphSAGE probe trained on the observed graph over the frozen
  image + text features (the multimodal graph benchmarks' protocol).
"""

import logging
from collections.abc import Callable

import numpy as np
import torch

from ..graph_batching import NodeGraph
from .link_prediction import (
    cosine_scores,
    dot_scores,
    hold_out_edges,
    link_metrics,
    sample_negatives,
    train_link_probe,
)
from .related_items import related_item_metrics, relevant_candidates

logger = logging.getLogger(__name__)

NodeEncoder = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""`(image (n, d), text (n, d), edge_index (2, E) in pool positions) -> Z (n, d')`."""


def union_graph(known: NodeGraph, future: NodeGraph | None) -> NodeGraph:
    """The graph with the edges of both (`known` itself without `future`)."""
    if future is None:
        return known
    rows = [np.repeat(np.arange(g.num_nodes), g.degree()) for g in (known, future)]
    return NodeGraph.from_edges(np.concatenate(rows), np.concatenate([known.col, future.col]), known.num_nodes)


def pool_edges(graph: NodeGraph, node_ids: np.ndarray) -> torch.Tensor:
    """The edges of `graph` with both ends in the pool `node_ids`, as `(2, E)` pool positions, each edge once
    (first < second), sorted."""
    neighbours = relevant_candidates(graph, node_ids, 1)
    owner = np.repeat(np.arange(len(neighbours)), [n.size for n in neighbours])
    neighbour = np.concatenate(neighbours) if neighbours else np.zeros(0, dtype=np.int64)
    once = owner < neighbour
    return torch.from_numpy(np.stack([owner[once], neighbour[once]]).astype(np.int64))


def graph_metrics(
    image: torch.Tensor,
    text: torch.Tensor,
    node_ids: np.ndarray,
    known: NodeGraph,
    future: NodeGraph | None = None,
    *,
    hops: int = 1,
    link_holdout: float = 0.5,
    link_negatives: int = 100,
    probe_epochs: int = 100,
    chunk_size: int = 2048,
    seed: int = 0,
    encode_nodes: NodeEncoder | None = None,
) -> dict:
    """`related_items` and `link_prediction` (each `{embedding: metrics}`) and `graph_protocol` (what was
    measured) for the pool `node_ids` with l2-normalised `image` / `text` embeddings `(n, d)` (see the module
    docstring). `encode_nodes` adds Z. `link_prediction` is left out when the pool has no positive edge."""
    full = union_graph(known, future)
    mean = torch.nn.functional.normalize(image + text, dim=-1)
    embeddings: dict[str, torch.Tensor] = {"image": image, "text": text, "mean": mean}
    known_edges = pool_edges(known, node_ids)
    protocol: dict = {"pool_size": int(len(node_ids)), "hops": hops, "known_edges": int(known_edges.size(1))}

    relevant = relevant_candidates(full, node_ids, hops)
    related = dict(embeddings)
    if encode_nodes is not None:
        related["Z"] = encode_nodes(image, text, _both_directions(known_edges))
    results: dict = {
        "related_items": {kind: related_item_metrics(e, relevant, chunk_size=chunk_size) for kind, e in related.items()}
    }

    if future is not None:
        positives, observed = pool_edges(future, node_ids), known_edges
        protocol["positives"] = "future edges (temporal split)"
    else:
        split = hold_out_edges(known_edges[0].numpy(), known_edges[1].numpy(), link_holdout, "random", seed=seed)
        positives, observed = split.held_out, split.train
        protocol["positives"] = f"random {link_holdout:g} of the known edges"
    protocol.update(positives_count=int(positives.size(1)), observed_edges=int(observed.size(1)))
    results["graph_protocol"] = protocol
    all_edges = known_edges if future is None else pool_edges(full, node_ids)
    degree = np.bincount(all_edges.flatten().numpy(), minlength=len(node_ids))
    count = min(link_negatives, len(node_ids) - 1 - int(degree.max(initial=0)))
    if not positives.size(1) or count <= 0:
        return results
    negatives = sample_negatives(positives, all_edges[0].numpy(), all_edges[1].numpy(), len(node_ids), count, seed=seed)
    u, v = positives
    scores: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
        kind: (cosine_scores(e, u, v), cosine_scores(e, u[:, None], negatives)) for kind, e in embeddings.items()
    }
    if encode_nodes is not None:
        z = encode_nodes(image, text, _both_directions(observed))
        scores["Z"] = (cosine_scores(z, u, v), cosine_scores(z, u[:, None], negatives))
    if probe_epochs > 0 and observed.size(1):
        nodes = train_link_probe(torch.cat([image, text], dim=1), observed, epochs=probe_epochs, seed=seed)
        scores["probe"] = (dot_scores(nodes, u, v), dot_scores(nodes, u[:, None], negatives))
    results["link_prediction"] = {}
    for kind, (positive, negative) in scores.items():
        if kind == "probe" and scores_are_constant(positive, negative):
            logger.warning(
                "link prediction: the GraphSAGE probe collapsed: it gives every pair the same score, so each positive "
                f"would tie with its {count} negatives (MRR 1/{count + 1} by construction). It is reported as collapsed, "
                "not as a number; a probe trained longer (probe_epochs) or on more observed edges usually recovers."
            )
            results["link_prediction"][kind] = {"collapsed": True, "num_positives": int(positive.numel()), "num_negatives": count}
            continue
        results["link_prediction"][kind] = {**link_metrics(positive, negative), "num_negatives": count}
    return results


def scores_are_constant(positive: torch.Tensor, negative: torch.Tensor, tolerance: float = 1e-6) -> bool:
    """Whether a scorer gave (nearly) one score to every pair: its ranks then say nothing (every positive ties)."""
    scores = torch.cat([positive.reshape(-1), negative.reshape(-1)]).double()
    if not scores.numel():
        return False
    return float(scores.max() - scores.min()) <= tolerance * max(1.0, float(scores.abs().max()))


def _both_directions(edges: torch.Tensor) -> torch.Tensor:
    return torch.cat([edges, edges.flip(0)], dim=1)


__all__ = ["NodeEncoder", "graph_metrics", "pool_edges", "scores_are_constant", "union_graph"]
