"""A trained SLIP model and its dataset in the tools people already use: a plain CLIP checkpoint for transformers'
pipelines, `CLIPModel` and sentence-transformers ([`export_clip`]), and the graph with node features for
torch_geometric's `NeighborLoader` ([`pyg_graph`], [`neighbor_loader`]). The SLIP model itself loads without slip_hf through remote code
(`slip_hf.remote_code`)."""

from .clip_export import ClipExport, export_clip
from .pyg import CSRNeighborSampler, neighbor_loader, pyg_graph

__all__ = ["CSRNeighborSampler", "ClipExport", "export_clip", "neighbor_loader", "pyg_graph"]
