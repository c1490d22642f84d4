"""Loading the co-purchase graph dataset (local folder or Hub repo) and publishing it.

Config `<config>` holds the nodes and `<config>_edges` the edges. [`load_copurchase_graph`] reads both through
[`load_config`] (for a local folder: exactly the rows of its files now) and returns them with the graph views
the rest of slip_hf uses: a [`NodeGraph`] for the graph-aware batch sampler and a `torch_geometric.data.Data`
for GNN work.
"""

import os
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import torch
from datasets import Dataset, DatasetDict, concatenate_datasets

from ..graph_batching import NodeGraph
from ..hub_upload import upload_folder_to_hub
from ..positive_weights import config_edge_weights
from .loading import load_config
from .writing import SPLITS, edges_config_name


@dataclass
class CopurchaseGraph:
    """Nodes (one `Dataset` per split, node ids global) and the edge table of one config.

    After a temporal split ([`temporal_split`]) `edges` holds the training graph, the co-purchases first seen
    before `cut_time`, and `future_edges` the relations that appear from `cut_time` on (the node split is
    unchanged).
    """

    nodes: DatasetDict
    edges: Dataset
    future_edges: Dataset | None = None
    cut_time: int | None = None

    @property
    def num_nodes(self) -> int:
        return sum(split.num_rows for split in self.nodes.values())

    def all_nodes(self) -> Dataset:
        """Every split's nodes in one `Dataset` (train, validation, test order)."""
        return concatenate_datasets(list(self.nodes.values()))

    def node_table(self) -> Dataset:
        """Every node in one `Dataset`, row i = node i (node ids are 0..N-1 across the splits): what a node id, e.g.
        a PyG batch's `n_id`, indexes."""
        return self.all_nodes().sort("node_id")

    def node_graph(self, config=None) -> NodeGraph:
        """The undirected graph over `node_id` (the batch sampler's input), with the structural loss's positive
        weights when `config` (a [`SlipConfig`]) asks for them (`slip_hf.positive_weights`; recency is measured
        from the newest co-purchase of `edges`, so after a temporal split from before the cut)."""
        weight = config_edge_weights(config, self.edges) if config is not None else None
        return NodeGraph.from_edge_table(self.edges, self.num_nodes, weight=weight)

    def future_graph(self) -> NodeGraph | None:
        """The undirected graph of `future_edges`, or `None` without a temporal split."""
        return None if self.future_edges is None else NodeGraph.from_edge_table(self.future_edges, self.num_nodes)

    def temporal_split(self, cut: float | int | str) -> "CopurchaseGraph":
        """Split the edges by `first_time` at a cut time T: `edges` keeps those first co-purchased before T,
        `future_edges` gets the rest.

        Args:
            cut: a share in (0, 1) (T is the `first_time` below which that share of the edges lies), an ISO
                date or date-time (`"2022-06-01"`, UTC), or Unix milliseconds.
        """
        if self.future_edges is not None:
            raise ValueError("the graph is already split by time.")
        first_time = np.asarray(self.edges["first_time"], dtype=np.int64)
        cut_time = temporal_cut_time(cut, first_time)
        before = first_time < cut_time
        return CopurchaseGraph(
            self.nodes, self.edges.select(np.flatnonzero(before)), self.edges.select(np.flatnonzero(~before)), cut_time
        )

    def to_pyg(self):
        """A `torch_geometric.data.Data` with `edge_index` (both directions), `edge_weight` (co-buyer count),
        `y` (labels) and `train_mask` / `val_mask` / `test_mask`, indexed by `node_id`."""
        from torch_geometric.data import Data
        from torch_geometric.utils import to_undirected

        src = torch.as_tensor(np.asarray(self.edges["src"]), dtype=torch.long)
        dst = torch.as_tensor(np.asarray(self.edges["dst"]), dtype=torch.long)
        count = torch.as_tensor(np.asarray(self.edges["count"]), dtype=torch.float32)
        edge_index, edge_weight = to_undirected(torch.stack([src, dst]), count, num_nodes=self.num_nodes)
        y = torch.full((self.num_nodes,), -1, dtype=torch.long)
        masks = {}
        for split, mask_name in zip(SPLITS, ("train_mask", "val_mask", "test_mask")):
            mask = torch.zeros(self.num_nodes, dtype=torch.bool)
            if split in self.nodes:
                ids = torch.as_tensor(np.asarray(self.nodes[split]["node_id"]), dtype=torch.long)
                mask[ids] = True
                y[ids] = torch.as_tensor(np.asarray(self.nodes[split]["label"]), dtype=torch.long)
            masks[mask_name] = mask
        return Data(edge_index=edge_index, edge_weight=edge_weight, y=y, num_nodes=self.num_nodes, **masks)


def temporal_cut_time(cut: float | int | str, first_time: np.ndarray) -> int:
    """The cut time T in Unix ms for [`CopurchaseGraph.temporal_split`]'s `cut` (a share in (0, 1), an ISO
    date, or Unix ms)."""
    if isinstance(cut, str):
        try:
            value = float(cut)
        except ValueError:
            try:
                stamp = datetime.fromisoformat(cut)
            except ValueError:
                raise ValueError(f"temporal cut {cut!r} is neither a share in (0, 1), an ISO date, nor Unix ms.") from None
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
            return int(stamp.timestamp() * 1000)
        return temporal_cut_time(value, first_time)
    if 0 < cut < 1:
        if not first_time.size:
            raise ValueError("a temporal cut given as a share needs edges.")
        return int(np.sort(first_time)[min(first_time.size - 1, int(round(cut * first_time.size)))])
    if cut >= 1 and float(cut).is_integer():
        return int(cut)
    raise ValueError(f"temporal cut {cut!r} is neither a share in (0, 1), an ISO date, nor Unix ms.")


def load_copurchase_graph(
    path_or_repo: str | os.PathLike, config_name: str, temporal_cut: float | int | str | None = None, **load_kwargs
) -> CopurchaseGraph:
    """Load one config's nodes and edges from a local dataset folder (exactly the rows of its files now) or a
    Hub repo id (`datasets.load_dataset`); with `temporal_cut`, split the edges by time
    ([`CopurchaseGraph.temporal_split`]).

    Args:
        path_or_repo (`str | os.PathLike`): a folder written by `slip-hf build-dataset` / `import-graph`, or a Hub
            dataset id (`you/amazon-copurchase-mm`).
        config_name (`str`): the node config (`electronics`; `graph` for `import-graph`); its edges are the
            `<config>_edges` config.
        temporal_cut (`float | int | str`, *optional*): a share of the edges in (0, 1), an ISO date, or Unix
            milliseconds; the edges first seen from then on become `future_edges`.
        **load_kwargs (`Any`): passed to `datasets.load_dataset` (`cache_dir`, `revision`, ...).

    Returns:
        [`CopurchaseGraph`]: `nodes` (a `DatasetDict` of the splits, global node ids 0..N-1), `edges` (`src`, `dst`,
            `count`, `first_time`, `last_time`) and, with `temporal_cut`, `future_edges` and `cut_time`.

    Raises:
        ValueError: if the node ids are not 0..N-1, or an edge refers to a node id that the node table does not have.

    Example:

    ```python
    from slip_hf.data import load_copurchase_graph

    graph = load_copurchase_graph("you/amazon-copurchase-mm", "electronics")
    graph.nodes["train"][0]["title"], graph.edges.num_rows
    ```
    """
    nodes = load_config(path_or_repo, config_name, **load_kwargs)
    edges = load_config(path_or_repo, edges_config_name(config_name), split="train", **load_kwargs)
    graph = CopurchaseGraph(nodes, edges)
    ids = np.sort(np.concatenate([np.asarray(split["node_id"]) for split in nodes.values()]))
    if not np.array_equal(ids, np.arange(ids.size)):
        raise ValueError(f"{path_or_repo}/{config_name}: node ids are not 0..N-1 across the splits.")
    if edges.num_rows:
        top = max(int(np.max(edges["src"])), int(np.max(edges["dst"])))
        if top >= ids.size:
            raise ValueError(f"{path_or_repo}/{config_name}: an edge refers to node {top}, but there are {ids.size} nodes.")
    return graph if temporal_cut is None else graph.temporal_split(temporal_cut)


def push_dataset_to_hub(
    dataset_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload amazon-copurchase-mm",
) -> str:
    """Upload a built dataset folder (parquet files, card, stats), or an embeddings folder (`slip-hf embed`), to a
    dataset repo, leaving out intermediate files. Returns the commit URL.

    Raises:
        ValueError: an embeddings folder whose run has not finished (it would upload half of it).
    """
    from ..search.record import RECORD, WORK, read_record

    if any(os.path.isfile(os.path.join(dataset_dir, *parts)) for parts in ((RECORD,), (WORK, RECORD))):
        read_record(dataset_dir)
    return upload_folder_to_hub(
        dataset_dir, repo_id, "dataset", private=private, token=token,
        ignore_patterns=[".work/*", ".work/**"], commit_message=commit_message,
    )


__all__ = ["CopurchaseGraph", "load_copurchase_graph", "push_dataset_to_hub", "temporal_cut_time"]
