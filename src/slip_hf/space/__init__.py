"""The Hub face of a trained model: a Gradio page for search, graph neighbours and model comparison
(`slip-hf serve`, `hub/space/`)."""

from .app import SpacePage, build_space, load_space
from .catalog import Catalog, Neighbour
from .index import ModelIndex, load_index

__all__ = ["Catalog", "ModelIndex", "Neighbour", "SpacePage", "build_space", "load_index", "load_space"]
