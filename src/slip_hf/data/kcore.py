"""Recursive k-core filtering (§5 of the SLIP paper: k = 5), on either graph the paper could mean.

* [`kcore_graph`]: on the co-purchase graph itself: repeatedly remove nodes with fewer than k neighbours
  until every remaining node has at least k.
* [`kcore_bipartite`]: on the user-item purchase graph, as the Amazon 2023 benchmark's `5core` files do:
  repeatedly remove users with fewer than k items and items with fewer than k users.

Both peel in rounds: one round removes every node below k at once (a `bincount` over the surviving edges),
so a round costs O(E) and the number of rounds is small in practice; the result is the unique k-core.
"""

import numpy as np


def kcore_graph(src: np.ndarray, dst: np.ndarray, num_nodes: int, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """k-core of an undirected simple graph.

    Args:
        src, dst (`np.ndarray` of shape `(E,)`): edge endpoints, each undirected edge listed once.
        num_nodes: size of the node id space.
        k: minimum degree.

    Returns:
        (node_mask, edge_mask, rounds): `node_mask` of shape `(num_nodes,)` marks the nodes of the k-core
        (a node without edges is never in it for k >= 1), `edge_mask` of shape `(E,)` the edges between them.
    """
    alive = np.ones(num_nodes, dtype=bool)
    edge_alive = np.ones(src.size, dtype=bool)
    rounds = 0
    while True:
        degree = np.bincount(src[edge_alive], minlength=num_nodes) + np.bincount(dst[edge_alive], minlength=num_nodes)
        removed = alive & (degree < k)
        if not removed.any():
            return alive, edge_alive, rounds
        rounds += 1
        alive &= ~removed
        edge_alive &= alive[src] & alive[dst]


def kcore_bipartite(
    user: np.ndarray, item: np.ndarray, num_users: int, num_items: int, k: int
) -> tuple[np.ndarray, int]:
    """k-core of the user-item bipartite graph.

    Args:
        user, item (`np.ndarray` of shape `(P,)`): distinct purchases.
        num_users, num_items: sizes of the two id spaces.
        k: minimum number of items per user and of users per item.

    Returns:
        (purchase_mask, rounds): `purchase_mask` of shape `(P,)` marks the purchases in the k-core.
    """
    keep = np.ones(user.size, dtype=bool)
    rounds = 0
    while True:
        user_degree = np.bincount(user[keep], minlength=num_users)
        item_degree = np.bincount(item[keep], minlength=num_items)
        removed = keep & ((user_degree[user] < k) | (item_degree[item] < k))
        if not removed.any():
            return keep, rounds
        rounds += 1
        keep &= ~removed


__all__ = ["kcore_bipartite", "kcore_graph"]
