"""`amazon-copurchase-mm`: the multimodal co-purchase graph dataset of SLIP, built from Amazon Reviews 2023.

    from slip_hf.data import BuildConfig, build_dataset, load_copurchase_graph
    result = build_dataset(BuildConfig(category="Electronics", raw_dir="raw/", out_dir="amazon-copurchase-mm"))
    graph = load_copurchase_graph("amazon-copurchase-mm", "electronics")
"""

from .builder import BuildConfig, BuildResult, build_dataset, summary_table
from .hub import CopurchaseGraph, load_copurchase_graph, push_dataset_to_hub
from .loading import load_config
from .synthetic import generate_synthetic_raw

__all__ = [
    "BuildConfig",
    "BuildResult",
    "CopurchaseGraph",
    "build_dataset",
    "generate_synthetic_raw",
    "load_config",
    "load_copurchase_graph",
    "push_dataset_to_hub",
    "summary_table",
]
