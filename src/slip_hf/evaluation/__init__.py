"""Evaluation of SLIP and CLIP checkpoints: Table 2's retrieval metrics, zero-/few-shot classification, the
alignment score, and the paper's figures."""

from pathlib import Path

from .classification import few_shot_linear_probe, zero_shot_classification
from .plots import plot_retrieval_grid, plot_similarity_by_hop, similarity_by_hop, write_figures
from .retrieval import alignment_score, metrics_from_ranks, retrieval_metrics, retrieval_ranks
from .runner import (
    EvaluationConfig,
    SplitEmbeddings,
    embed_split,
    evaluate_checkpoint,
    evaluate_embeddings,
    retrieval_table,
    write_report,
)


def retrieval_metric_path() -> str:
    """Local path of the `evaluate` module: `evaluate.load(retrieval_metric_path())`."""
    return str(Path(__file__).parent / "cross_modal_retrieval" / "cross_modal_retrieval.py")


__all__ = [
    "EvaluationConfig",
    "SplitEmbeddings",
    "alignment_score",
    "embed_split",
    "evaluate_checkpoint",
    "evaluate_embeddings",
    "few_shot_linear_probe",
    "metrics_from_ranks",
    "plot_retrieval_grid",
    "plot_similarity_by_hop",
    "retrieval_metric_path",
    "retrieval_metrics",
    "retrieval_ranks",
    "retrieval_table",
    "similarity_by_hop",
    "write_figures",
    "write_report",
    "zero_shot_classification",
]
