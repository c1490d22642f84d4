"""Graph-aware mini-batches: the dataset graph, batch samplers that keep neighbours together, and the
collator that hands the model each batch's subgraph.

The SLIP paper samples every mini-batch *as a subgraph* (Fig. 2). A uniformly random batch of 512 out of
~98k nodes holds almost no edges, so the structural loss (Eq. 5) would see no positives. The
[`GraphClusterBatchSampler`] builds batches out of breadth-first clusters instead, and still yields every
training node exactly once per epoch.
"""

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


class NodeGraph:
    """An undirected simple graph over node ids `0..num_nodes-1`, stored as CSR arrays.

    Build it with [`NodeGraph.from_edges`] or [`NodeGraph.from_edge_table`]; both symmetrise the edges and drop
    self loops and duplicates, so any edge list (one direction, both, repeated) gives the same graph.

    Attributes:
        rowptr (`np.ndarray` of shape `(num_nodes + 1,)`): neighbours of node n are `col[rowptr[n]:rowptr[n+1]]`.
        col (`np.ndarray` of shape `(2 * num_edges,)`): neighbour ids, sorted within each row.
        weight (`np.ndarray` of shape `(2 * num_edges,)` or `None`): a weight per adjacency entry (the same in
            both directions), e.g. the structural loss's positive weights (`slip_hf.positive_weights`).
    """

    def __init__(self, rowptr: np.ndarray, col: np.ndarray, weight: np.ndarray | None = None):
        self.rowptr = np.ascontiguousarray(rowptr, dtype=np.int64)
        self.col = np.ascontiguousarray(col, dtype=np.int64)
        self.weight = None if weight is None else np.ascontiguousarray(weight, dtype=np.float32)
        if self.weight is not None and self.weight.shape != self.col.shape:
            raise ValueError(f"weight has shape {self.weight.shape}, expected {self.col.shape} (one per adjacency entry).")
        self._position = np.full(self.num_nodes, -1, dtype=np.int64)

    @classmethod
    def from_edges(
        cls, src: Sequence[int] | np.ndarray, dst: Sequence[int] | np.ndarray, num_nodes: int,
        weight: Sequence[float] | np.ndarray | None = None,
    ) -> "NodeGraph":
        """Build the graph from parallel arrays of edge endpoints (and optionally a weight per edge; an edge
        given several times keeps its largest weight).

        Raises:
            ValueError: if an endpoint is not a node id in `[0, num_nodes)` (the message counts them and shows
                one), or if `src` and `dst` differ in length.
        """
        src = np.asarray(src, dtype=np.int64).reshape(-1)
        dst = np.asarray(dst, dtype=np.int64).reshape(-1)
        if src.shape != dst.shape:
            raise ValueError(f"src and dst must have the same length, got {src.size} and {dst.size}.")
        unknown = (src < 0) | (src >= num_nodes) | (dst < 0) | (dst >= num_nodes)
        if unknown.any():
            first = int(np.flatnonzero(unknown)[0])
            raise ValueError(
                f"{int(unknown.sum())} edge(s) refer to unknown nodes (valid ids are 0..{num_nodes - 1}); "
                f"first: edge #{first} ({int(src[first])}, {int(dst[first])})."
            )
        keep = src != dst
        rows = np.concatenate([src[keep], dst[keep]])
        cols = np.concatenate([dst[keep], src[keep]])
        keys, first, inverse = np.unique(rows * num_nodes + cols, return_index=True, return_inverse=True)
        edge_weight = None
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float32).reshape(-1)
            if weight.shape != src.shape:
                raise ValueError(f"weight must have one value per edge ({src.size}), got {weight.size}.")
            edge_weight = np.full(keys.size, -np.inf, dtype=np.float32)
            np.maximum.at(edge_weight, inverse, np.concatenate([weight[keep], weight[keep]]))
        rows, cols = keys // num_nodes, keys % num_nodes
        rowptr = np.zeros(num_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=num_nodes), out=rowptr[1:])
        return cls(rowptr, cols, edge_weight)

    @classmethod
    def from_edge_table(
        cls, edges: Any, num_nodes: int, src_column: str = "src", dst_column: str = "dst",
        weight: np.ndarray | None = None,
    ) -> "NodeGraph":
        """Build the graph from an edge table: a `datasets.Dataset`, a pandas DataFrame or a mapping with
        `src_column` / `dst_column` columns of node ids (`weight`: optionally one per row)."""
        return cls.from_edges(np.asarray(edges[src_column]), np.asarray(edges[dst_column]), num_nodes, weight)

    @property
    def num_nodes(self) -> int:
        return self.rowptr.size - 1

    @property
    def num_edges(self) -> int:
        """Number of undirected edges."""
        return self.col.size // 2

    def degree(self) -> np.ndarray:
        """`np.ndarray` of shape `(num_nodes,)`: number of neighbours of each node."""
        return np.diff(self.rowptr)

    def neighbors_of(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All neighbours of several nodes at once.

        Returns:
            (owner, neighbor): for every adjacency entry, the position in `nodes` it belongs to and the
            neighbour's node id, both of shape `(sum of degrees,)`.
        """
        owner, neighbor, _ = self._adjacency_entries(nodes)
        return owner, neighbor

    def _adjacency_entries(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`neighbors_of` plus each entry's position in `col`."""
        starts, ends = self.rowptr[nodes], self.rowptr[nodes + 1]
        counts = ends - starts
        owner = np.repeat(np.arange(nodes.size), counts)
        offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        return owner, self.col[offsets], offsets

    def hop_distances_from(self, sources: Sequence[int] | np.ndarray, max_hops: int, chunk: int = 64) -> np.ndarray:
        """Hop distances from `sources` to every node, up to `max_hops` (breadth-first, via scipy's csgraph).

        Returns:
            `np.ndarray` of shape `(len(sources), num_nodes)`, int16: 0 at the source, k for nodes k <= max_hops
            hops away, -1 beyond (or unreachable).
        """
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import dijkstra

        adjacency = csr_matrix((np.ones(self.col.size, dtype=np.float32), self.col, self.rowptr), shape=(self.num_nodes,) * 2)
        sources = np.asarray(sources, dtype=np.int64).reshape(-1)
        out = np.empty((sources.size, self.num_nodes), dtype=np.int16)
        for start in range(0, sources.size, chunk):
            rows = sources[start : start + chunk]
            distance = dijkstra(adjacency, directed=False, indices=rows, unweighted=True, limit=max_hops + 0.5)
            out[start : start + rows.size] = np.where(np.isinf(distance), -1, distance)
        return out

    def batch_edge_index(self, node_ids: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, int]:
        """The subgraph induced by a batch, relabelled to batch positions.

        Args:
            node_ids: the batch's node ids, distinct, in batch order.

        Returns:
            (edge_index, num_cut_edges): a `torch.LongTensor` of shape `(2, 2 * E_b)` holding both directions of
            the E_b edges with both ends in the batch, sorted by row then column (as `torch_geometric`'s
            `coalesce` sorts), and the number of edges with one end outside the batch (dropped).
        """
        edge_index, _, num_cut = self.batch_subgraph(node_ids)
        return edge_index, num_cut

    def batch_subgraph(
        self, node_ids: Sequence[int] | np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """[`batch_edge_index`] plus the weight of each of its edges: `(edge_index, edge_weight, num_cut_edges)`,
        `edge_weight` a float32 tensor of shape `(2 * E_b,)`, or `None` for a graph without weights."""
        nodes = np.asarray(node_ids, dtype=np.int64).reshape(-1)
        if nodes.size and (nodes.min() < 0 or nodes.max() >= self.num_nodes):
            raise ValueError(f"batch holds node ids outside the graph's 0..{self.num_nodes - 1}.")
        position = self._position
        position[nodes] = np.arange(nodes.size)
        try:
            if np.count_nonzero(position[nodes] == np.arange(nodes.size)) != nodes.size:
                raise ValueError("a batch must not hold the same node twice.")
            owner, neighbor, entries = self._adjacency_entries(nodes)
            local = position[neighbor]
            inside = local >= 0
        finally:
            position[nodes] = -1
        # sorted by (row, column), as `coalesce` orders them: the model can then use them as they are, and its
        # GAT sums over the same edges in the same order as after deduplicating raw edges (same bits)
        order = np.lexsort((local[inside], owner[inside]))
        edge_index = torch.from_numpy(np.stack([owner[inside][order], local[inside][order]]))
        edge_weight = None if self.weight is None else torch.from_numpy(self.weight[entries[inside][order]])
        return edge_index, edge_weight, int((~inside).sum())


class _EpochBatchSampler(Sampler[list[int]]):
    """Shared bookkeeping of the batch samplers: rows <-> node ids, epoch-seeded RNG, length, and sharding.

    With `num_replicas > 1` (one replica per process), an epoch's node order is cut into *global* batches of
    `batch_size * num_replicas` nodes, and replica `rank` gets slice `rank` of each: the ranks see disjoint
    parts of the same global batch (so a cluster, and its edges, can span ranks), every rank runs the same
    number of steps, and the order depends only on `(seed, epoch, num_replicas)`. A last, smaller global
    batch is padded to a multiple of `num_replicas` with nodes from the epoch's first batch (as
    `DistributedSampler` pads), or trimmed when the epoch has a single batch.
    """

    def __init__(
        self,
        node_ids: Sequence[int] | np.ndarray,
        batch_size: int,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank {rank} of {num_replicas}.")
        self.node_ids = np.asarray(node_ids, dtype=np.int64).reshape(-1)
        if np.unique(self.node_ids).size != self.node_ids.size:
            raise ValueError("node_ids must be distinct: each dataset row is one graph node.")
        if self.node_ids.size < num_replicas:
            raise ValueError(f"{self.node_ids.size} rows cannot be shared by {num_replicas} replicas.")
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.num_replicas = num_replicas
        self.rank = rank

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for `epoch`; the order is a pure function of `(seed, epoch)` (resumable)."""
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def __len__(self) -> int:
        rows = self.node_ids.size
        return rows // self.global_batch_size if self.drop_last else math.ceil(rows / self.global_batch_size)

    def _batches_from_order(self, rows: np.ndarray) -> Iterator[list[int]]:
        size, replicas = self.global_batch_size, self.num_replicas
        for start in range(0, len(self) * size, size):
            batch = rows[start : start + size]
            remainder = batch.size % replicas
            if remainder and start > 0:
                batch = np.concatenate([batch, rows[: replicas - remainder]])  # first-batch nodes: distinct from these
            elif remainder:
                batch = batch[: batch.size - remainder]
            local = batch.size // replicas
            yield batch[self.rank * local : (self.rank + 1) * local].tolist()


class UniformBatchSampler(_EpochBatchSampler):
    """Uniformly random batches of dataset rows (the usual CLIP sampling; the SLIP paper's baseline)."""

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches_from_order(self._rng().permutation(self.node_ids.size))


class GraphClusterBatchSampler(_EpochBatchSampler):
    """Batches made of breadth-first clusters of the graph, covering every row exactly once per epoch.

    Each batch is filled with clusters of up to `cluster_size` nodes: a random not-yet-used seed node, then its
    not-yet-used neighbours, their neighbours, ... (sampled at random when a ring is larger than the room
    left). A cluster of m connected nodes brings at least m - 1 edges into the batch, against about
    `b^2 * mean_degree / (2N)` for a uniform batch. Smaller clusters give more diverse batches, larger ones
    denser subgraphs; `cluster_size = batch_size` grows one ball per batch.

    Args:
        graph: the dataset graph.
        node_ids: node id of each dataset row (rows are what the sampler yields). Only these nodes are used, so
            a train split's sampler never pulls validation nodes into a batch.
        batch_size: rows per batch (per replica).
        cluster_size: nodes per BFS cluster; defaults to `max(2, global batch size // 8)`.
        drop_last: drop the last, smaller batch.
        seed: base seed; the epoch's order depends only on `(seed, epoch)`.
        num_replicas, rank: shard each global batch over processes (see [`_EpochBatchSampler`]).
    """

    def __init__(
        self,
        graph: NodeGraph,
        node_ids: Sequence[int] | np.ndarray,
        batch_size: int,
        cluster_size: int | None = None,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        super().__init__(node_ids, batch_size, drop_last=drop_last, seed=seed, num_replicas=num_replicas, rank=rank)
        if self.node_ids.size and (self.node_ids.min() < 0 or self.node_ids.max() >= graph.num_nodes):
            raise ValueError(f"node_ids must be ids of the graph's nodes 0..{graph.num_nodes - 1}.")
        self.graph = graph
        self.cluster_size = cluster_size if cluster_size is not None else max(2, self.global_batch_size // 8)
        if self.cluster_size < 1:
            raise ValueError(f"cluster_size must be >= 1, got {self.cluster_size}.")
        self.row_of_node = np.full(graph.num_nodes, -1, dtype=np.int64)
        self.row_of_node[self.node_ids] = np.arange(self.node_ids.size)

    def _grow_cluster(self, seed: int, size: int, used: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        used[seed] = True
        cluster, frontier, room = [np.array([seed])], np.array([seed]), size - 1
        while room > 0 and frontier.size:
            _, ring = self.graph.neighbors_of(frontier)
            ring = np.unique(ring[~used[ring]])
            ring = rng.choice(ring, room, replace=False) if ring.size > room else rng.permutation(ring)
            used[ring] = True
            cluster.append(ring)
            room -= ring.size
            frontier = ring
        return cluster

    def _node_order(self) -> np.ndarray:
        """One epoch's node sequence; consecutive `batch_size` chunks are the batches."""
        rng = self._rng()
        used = self.row_of_node < 0  # nodes outside this sampler's rows count as used
        seeds = rng.permutation(self.node_ids)
        order, filled, cursor = [], 0, 0
        while filled < self.node_ids.size:
            while used[seeds[cursor]]:
                cursor += 1
            room_in_batch = self.global_batch_size - filled % self.global_batch_size
            cluster = self._grow_cluster(seeds[cursor], min(self.cluster_size, room_in_batch), used, rng)
            order.extend(cluster)
            filled += sum(part.size for part in cluster)
        return np.concatenate(order) if order else np.empty(0, dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches_from_order(self.row_of_node[self._node_order()])


SAMPLERS = {"graph": GraphClusterBatchSampler, "uniform": UniformBatchSampler}


def build_batch_sampler(
    name: str,
    graph: NodeGraph | None,
    node_ids: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    cluster_size: int | None = None,
    drop_last: bool = False,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
) -> _EpochBatchSampler:
    """Make the batch sampler called `name` (`"graph"` or `"uniform"`), sharded over `num_replicas`."""
    shard = {"drop_last": drop_last, "seed": seed, "num_replicas": num_replicas, "rank": rank}
    if name == "graph":
        if graph is None:
            raise ValueError("the 'graph' sampler needs the dataset graph.")
        return GraphClusterBatchSampler(graph, node_ids, batch_size, cluster_size=cluster_size, **shard)
    if name == "uniform":
        return UniformBatchSampler(node_ids, batch_size, **shard)
    raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")


def edges_per_node(edge_index: torch.Tensor, batch_size: int) -> float:
    """Edge density of a batch: undirected edges inside the batch per batch node (`edge_index` holds both
    directions, as [`NodeGraph.batch_edge_index`] returns it)."""
    return edge_index.size(1) / 2 / max(batch_size, 1)


def mean_batch_edge_density(sampler: _EpochBatchSampler, graph: NodeGraph, max_batches: int | None = None) -> float:
    """Mean [`edges_per_node`] over the batches of one epoch of `sampler` (or its first `max_batches`)."""
    densities = []
    for index, rows in enumerate(sampler):
        if max_batches is not None and index >= max_batches:
            break
        edge_index, _ = graph.batch_edge_index(sampler.node_ids[rows])
        densities.append(edges_per_node(edge_index, len(rows)))
    return float(np.mean(densities)) if densities else 0.0


@dataclass
class SlipDataCollator:
    """Stacks processed node rows into a SLIP batch and attaches the batch subgraph.

    Each feature is a mapping with `node_id`, `pixel_values` (`(3, H, W)`) or, on the tensor image path, `images`
    (`(3, H, W)` uint8, `slip_hf.pixels`), `input_ids` (and optionally `attention_mask`) and optionally
    `label` / `labels`. Texts of unequal length are padded with `tokenizer`. `images` are stacked to
    `(b, 3, H, W)` when their sizes agree and kept as a list otherwise; preparers that read `pixel_values`
    are then left to the trainer, which runs them after its pixel pipeline (the batch keeps the rows' `text`).

    Returns a dict with `pixel_values` `(b, 3, H, W)`, `input_ids` / `attention_mask` `(b, L)`, `labels` `(b,)`
    when present, `edge_index` `(2, 2 E_b)` in batch positions (both directions; empty without a graph),
    `edge_weight` `(2 E_b,)` when the graph has weights (the structural loss's positive weights), `node_ids`
    `(b,)`, `num_cut_edges` (edges to nodes outside the batch, dropped) and `simple_edges` (True with a graph: the
    edges are both directions of a simple graph, which the model then need not deduplicate). [`SlipTrainer`]
    removes `node_ids` and `num_cut_edges` before
    calling the model. `preparers` (`slip_hf.objectives.batch_preparers`) then add the fields of the enabled
    objectives beyond SLIP's (StructXLIP's edge maps, say), from the batch and the rows' raw `text`.

    Args:
        graph ([`NodeGraph`], *optional*): the dataset graph over `node_id_column`; `None` gives batches with no
            edges (the CLIP baseline).
        tokenizer (*optional*): pads `input_ids` of unequal length (`tokenizer.pad`); not needed when the rows are
            padded already.
        node_id_column (`str`, *optional*, defaults to `"node_id"`): the rows' node id field.
        preparers (`list[BatchPreparer]`, *optional*, defaults to `[]`): called as `preparer(batch, rows)`, each adds
            an enabled objective's fields to the batch in place (`slip_hf.objectives.batch_preparers(config, ...)`).
    """

    graph: NodeGraph | None = None
    tokenizer: Any = None
    node_id_column: str = "node_id"
    preparers: list = field(default_factory=list)

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("cannot collate an empty batch.")
        image_key = "images" if "images" in features[0] else "pixel_values"
        missing = {image_key, "input_ids", self.node_id_column} - set(features[0])
        if missing:
            raise KeyError(f"batch rows lack the column(s) {sorted(missing)}; got {sorted(features[0])}.")
        node_ids = torch.tensor([int(f[self.node_id_column]) for f in features], dtype=torch.long)
        if image_key == "images":  # the tensor image path: uint8, stacked when the sizes agree
            images = [torch.as_tensor(f["images"]) for f in features]
            stack = len({tuple(image.shape) for image in images}) == 1
            batch: dict[str, Any] = {"images": _stack_images(images) if stack else images}
        else:
            batch = {"pixel_values": torch.stack([torch.as_tensor(f["pixel_values"], dtype=torch.float32) for f in features])}
        batch.update(self._collate_text(features))
        label_key = "labels" if "labels" in features[0] else "label" if "label" in features[0] else None
        if label_key is not None:
            batch["labels"] = torch.tensor([int(f[label_key]) for f in features], dtype=torch.long)
        if self.graph is None:
            batch["edge_index"], batch["num_cut_edges"] = torch.empty((2, 0), dtype=torch.long), 0
        else:
            batch["edge_index"], edge_weight, batch["num_cut_edges"] = self.graph.batch_subgraph(node_ids.numpy())
            batch["simple_edges"] = True  # both directions of the simple graph, in range: see SlipModel.forward
            if edge_weight is not None:
                batch["edge_weight"] = edge_weight
        batch["node_ids"] = node_ids
        if self.preparers:
            if "text" not in features[0]:
                raise KeyError("the enabled objectives need each row's raw 'text' (NodeTransform passes it through).")
            for prepare in self.preparers:
                if prepare.needs_pixels and "pixel_values" not in batch:
                    batch["text"] = [str(f["text"]) for f in features]  # for the trainer, after the pixel pipeline
                else:
                    prepare(batch, list(features))
        return batch

    def _collate_text(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        text = [{k: f[k] for k in ("input_ids", "attention_mask") if k in f} for f in features]
        if self.tokenizer is not None:
            return dict(self.tokenizer.pad(text, return_tensors="pt"))
        lengths = {len(t["input_ids"]) for t in text}
        if len(lengths) > 1:
            raise ValueError(
                f"texts have different lengths {sorted(lengths)}: pass a tokenizer to pad them, or tokenize with "
                "padding='max_length'."
            )
        return {k: torch.from_numpy(np.stack([np.asarray(t[k], dtype=np.int64) for t in text])) for k in text[0]}


def _stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack `(3, H, W)` images into `(b, 3, H, W)`. Decoded images are channels-last views of `(H, W, 3)`
    arrays; stacking those buffers is one contiguous copy (a channels-last batch, which torch's resize kernels
    prefer), where a plain `stack` would gather them element by element (~20x slower)."""
    if all(image.permute(1, 2, 0).is_contiguous() for image in images):
        return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)
    return torch.stack(images)


__all__ = [
    "GraphClusterBatchSampler",
    "NodeGraph",
    "SlipDataCollator",
    "UniformBatchSampler",
    "build_batch_sampler",
    "edges_per_node",
    "mean_batch_edge_density",
]
