"""Evaluate a checkpoint (SLIP or plain CLIP) on a split of the co-purchase graph dataset.

One pass embeds the split's images and texts (no graph needed at inference); the metrics then come from the
embeddings: retrieval over the whole split as the candidate pool (Table 2), zero-shot and k-shot category
classification, the alignment score, the hop-distance similarity profile behind Fig. 5, and, given the
dataset graph, related-item retrieval (does an item's embedding find its co-purchase neighbours in the split?).
"""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image

from ..embedding import encode_images, encode_texts
from ..graph_batching import NodeGraph
from ..pixels import PixelPipeline
from ..processing import undecoded_images
from ..run_folder import results_file
from ..viewed_image import open_image
from .classification import few_shot_linear_probe, zero_shot_classification
from .graph_metrics import NodeEncoder, graph_metrics
from .retrieval import alignment_score, retrieval_metrics


@dataclass
class SplitEmbeddings:
    """l2-normalised embeddings of one split, row i = node `node_ids[i]`."""

    image: torch.Tensor
    text: torch.Tensor
    node_ids: np.ndarray
    labels: np.ndarray | None = None


@dataclass
class EvaluationConfig:
    """What [`evaluate_checkpoint`] computes."""

    text_column: str = "title"
    image_column: str = "image"
    label_column: str | None = "label"
    batch_size: int = 64
    max_text_length: int | None = None
    chunk_size: int = 2048
    zero_shot: bool = True
    prompt_templates: tuple[str, ...] = ("a photo of a {}.", "a product photo of a {}.", "{}")
    few_shot: tuple[int, ...] = (1, 5, 10)
    few_shot_draws: int = 3
    seed: int = 0
    related_hops: int = 1
    link_holdout: float = 0.5
    link_negatives: int = 100
    probe_epochs: int = 100
    image_pipeline: str = "tensor"
    """`"tensor"` (decode to uint8, preprocess batched on the model's device) or `"processor"` (the image processor)."""
    num_workers: int = 0
    """Data-loader processes that decode (and on the processor path preprocess) the images."""


class RowImage:
    """Row index -> the row's image, decoded (a picklable loader for the data workers of [`encode_images`]); an
    image that cannot be decoded is an error that names its node."""

    def __init__(self, dataset: Dataset, column: str):
        columns = [column] + (["node_id"] if "node_id" in dataset.column_names else [])
        self.dataset, self.column = undecoded_images(dataset.select_columns(columns), column), column

    def __call__(self, index: int) -> Image.Image:
        row = self.dataset[int(index)]
        try:
            return open_image(row[self.column])
        except ValueError as error:
            raise ValueError(f"node {row.get('node_id', index)}: {error}") from None


def embed_split(model, image_processor, tokenizer, dataset: Dataset, config: EvaluationConfig) -> SplitEmbeddings:
    """Embed every node of `dataset` (images lazily, one batch at a time)."""
    was_training = model.training
    model.eval()
    pipeline = PixelPipeline.from_image_processor(image_processor) if config.image_pipeline == "tensor" else None
    image = encode_images(
        model, image_processor, range(len(dataset)), config.batch_size,
        load_image=RowImage(dataset, config.image_column), desc="eval images",
        pixel_pipeline=pipeline, num_workers=config.num_workers,
    )
    text = encode_texts(
        model, tokenizer, list(dataset[config.text_column]), max(config.batch_size, 256),
        config.max_text_length, desc="eval texts",
    )
    model.train(was_training)
    labels = np.asarray(dataset[config.label_column]) if config.label_column and config.label_column in dataset.column_names else None
    node_ids = np.asarray(dataset["node_id"]) if "node_id" in dataset.column_names else np.arange(len(dataset))
    return SplitEmbeddings(image, text, node_ids, labels)


def evaluate_embeddings(
    evaluated: SplitEmbeddings,
    config: EvaluationConfig,
    train: SplitEmbeddings | None = None,
    class_names: Sequence[str] | None = None,
    encode_prompts=None,
    graph: NodeGraph | None = None,
    future_graph: NodeGraph | None = None,
    encode_nodes: NodeEncoder | None = None,
    pool: SplitEmbeddings | None = None,
) -> dict[str, Any]:
    """All metrics from embeddings: `retrieval`, `alignment`, with labels `zero_shot` (needs `class_names`
    and `encode_prompts`) and `few_shot` (needs `train`), and with the dataset `graph` (the known relations;
    `future_graph`: those after a temporal cut) the graph-aware `related_items`, `link_prediction` and
    `graph_protocol` of [`graph_metrics`] over `pool` (default: the evaluated split), with Z from
    `encode_nodes` for a model with a graph path."""
    results: dict[str, Any] = {
        "retrieval": retrieval_metrics(evaluated.image, evaluated.text, chunk_size=config.chunk_size),
        "alignment": alignment_score(evaluated.image, evaluated.text),
    }
    if evaluated.labels is not None and class_names and config.zero_shot and encode_prompts is not None:
        results["zero_shot"] = zero_shot_classification(
            evaluated.image, evaluated.labels, class_names, encode_prompts, config.prompt_templates
        )
    if evaluated.labels is not None and train is not None and train.labels is not None and config.few_shot:
        results["few_shot"] = few_shot_linear_probe(
            train.image, train.labels, evaluated.image, evaluated.labels, config.few_shot, config.few_shot_draws, seed=config.seed
        )
    if graph is not None:
        pool = pool or evaluated
        results.update(graph_metrics(
            pool.image, pool.text, pool.node_ids, graph, future_graph, hops=config.related_hops,
            link_holdout=config.link_holdout, link_negatives=config.link_negatives, probe_epochs=config.probe_epochs,
            chunk_size=config.chunk_size, seed=config.seed, encode_nodes=encode_nodes,
        ))
    return results


def evaluate_checkpoint(
    model,
    image_processor,
    tokenizer,
    eval_dataset: Dataset,
    config: EvaluationConfig | None = None,
    train_dataset: Dataset | None = None,
    graph: NodeGraph | None = None,
    future_graph: NodeGraph | None = None,
    pool_dataset: Dataset | None = None,
) -> tuple[dict[str, Any], SplitEmbeddings]:
    """Embed `eval_dataset` (and `train_dataset` for the few-shot probes) and compute every metric; with
    `graph` (and `future_graph` after a temporal split) the graph-aware ones too, over `pool_dataset` (e.g.
    every split) instead of `eval_dataset` when given, and with Z when the model has a graph path.

    Args:
        model ([`SlipModel`] or `CLIPModel`): the model to evaluate (in eval mode while it embeds).
        image_processor (`BaseImageProcessor`): the model's image processor (its pixel settings drive the tensor path
            too).
        tokenizer (`PreTrainedTokenizerBase`): the model's tokenizer.
        eval_dataset (`datasets.Dataset`): the split to evaluate (`node_id`, title, image, optionally the label).
        config ([`EvaluationConfig`], *optional*): columns, batch size, text length, few-shot sizes, seed and image
            path; default: `EvaluationConfig()`.
        train_dataset (`datasets.Dataset`, *optional*): the training split, for the few-shot linear probes.
        graph ([`NodeGraph`], *optional*): the observed co-purchase graph, for the graph-aware metrics (related
            items, similarity by hop, link prediction, Z).
        future_graph ([`NodeGraph`], *optional*): after a temporal split, the edges first seen from the cut on, which
            link prediction then scores.
        pool_dataset (`datasets.Dataset`, *optional*): the nodes the graph-aware metrics rank over (e.g. every split,
            `--graph_pool all`); default: `eval_dataset`.

    Returns:
        tuple[dict, SplitEmbeddings]: the metrics (`retrieval`, `classification`, `related_items`, `graph`,
            `link_prediction`, ..., as `test_results.json` holds them) and the embeddings of `eval_dataset` (image,
            text, and Z when the model has a graph path).
    """
    config = config or EvaluationConfig()
    evaluated = embed_split(model, image_processor, tokenizer, eval_dataset, config)
    train = embed_split(model, image_processor, tokenizer, train_dataset, config) if train_dataset is not None and config.few_shot else None
    pool = embed_split(model, image_processor, tokenizer, pool_dataset, config) if graph is not None and pool_dataset is not None else None
    class_names = None
    if config.label_column and config.label_column in eval_dataset.features:
        class_names = getattr(eval_dataset.features[config.label_column], "names", None)

    def encode_prompts(prompts: list[str]) -> torch.Tensor:
        return encode_texts(model, tokenizer, prompts, 256, config.max_text_length, desc="prompts")

    def encode_nodes(image: torch.Tensor, text: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            return model.get_node_features(image, text, edge_index).float().cpu()
        finally:
            model.train(was_training)

    has_graph_path = getattr(getattr(model, "config", None), "use_graph", False)
    metrics = evaluate_embeddings(
        evaluated, config, train, class_names, encode_prompts, graph, future_graph,
        encode_nodes if has_graph_path else None, pool,
    )
    metrics["num_nodes"] = int(evaluated.node_ids.size)
    return metrics, evaluated


def _mean_std(values: Sequence[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def retrieval_table(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Table 2's layout (MRR i2t / t2i / mean, median and mean rank, R@1/5/10), one row per model, each cell the
    mean ± std over the model's runs (seeds)."""
    columns = [
        ("MRR i2t", "mrr_i2t", 3), ("MRR t2i", "mrr_t2i", 3), ("MRR mean", "mrr", 3),
        ("Rank med", "median_rank", 1), ("Rank mean", "mean_rank", 1),
        ("R@1", "recall_at_1", 3), ("R@5", "recall_at_5", 3), ("R@10", "recall_at_10", 3),
    ]
    lines = ["| Method | " + " | ".join(name for name, _, _ in columns) + " |", "|---|" + "---:|" * len(columns)]
    for model, results in runs.items():
        cells = [_mean_std([r["retrieval"][key] for r in results], digits) for _, key, digits in columns]
        lines.append(f"| {model} ({len(results)} run{'s' if len(results) > 1 else ''}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def classification_table(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Alignment, zero-shot and few-shot accuracy per model (mean ± std over runs)."""
    first = next(iter(runs.values()))[0]
    keys = [("alignment", None, "alignment")]
    if "zero_shot" in first:
        keys.append(("zero-shot acc", "zero_shot", "accuracy"))
    for key in first.get("few_shot", {}):
        if key.endswith("shot_accuracy"):
            keys.append((f"{key.split('shot')[0]}-shot acc", "few_shot", key))
    lines = ["| Method | " + " | ".join(name for name, _, _ in keys) + " |", "|---|" + "---:|" * len(keys)]
    for model, results in runs.items():
        cells = [_mean_std([r[group][key] if group else r[key] for r in results], 3) for _, group, key in keys]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


GRAPH_TABLES = {
    "related_items": (
        "Related items: each pool item ranks the others; its graph neighbours are the relevant ones (Z: over the "
        "pool's known edges, transductive)",
        [("MRR", "mrr"), ("Hits@1", "hits_at_1"), ("Hits@10", "hits_at_10"), ("Hits@50", "hits_at_50"),
         ("NDCG@10", "ndcg_at_10"), ("Recall@50", "recall_at_50")],
    ),
    "link_prediction": (
        "Link prediction: held-out edges (random, or the new ones after a temporal cut) against seeded non-edges; "
        "cosine of each embedding, Z over the observed edges, a GraphSAGE probe on image + text",
        [("MRR", "mrr"), ("Hits@10", "hits_at_10"), ("Hits@50", "hits_at_50"), ("Hits@100", "hits_at_100")],
    ),
}
"""Title and columns of the graph-aware tables: related-item retrieval and zero-shot link prediction."""


def graph_metric_table(runs: Mapping[str, Sequence[Mapping[str, Any]]], key: str = "related_items") -> str:
    """`key`'s metrics (see `GRAPH_TABLES`) per model and embedding, mean ± std over runs; empty when no run
    has them."""
    _, columns = GRAPH_TABLES[key]
    lines = ["| Method | Embedding | " + " | ".join(name for name, _ in columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for model, results in runs.items():
        if key not in results[0]:
            continue
        for kind in results[0][key]:
            scored = [r[key][kind] for r in results if not r[key].get(kind, {}).get("collapsed")]
            if not scored:  # a probe whose scores were constant ranks nothing: no number to print
                lines.append(f"| {model} | {kind} | probe collapsed (constant scores) |" + " |" * (len(columns) - 1))
                continue
            cells = [_mean_std([r[metric] for r in scored], 3) for _, metric in columns]
            note = f" ({len(results) - len(scored)} of {len(results)} runs: probe collapsed)" if len(scored) < len(results) else ""
            lines.append(f"| {model} | {kind}{note} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def graph_metric_sections(runs: Mapping[str, Sequence[Mapping[str, Any]]], heading: str = "##") -> str:
    """Every graph-aware table the runs have, each under `heading` and its title (see `GRAPH_TABLES`)."""
    tables = ((title, graph_metric_table(runs, key)) for key, (title, _) in GRAPH_TABLES.items())
    return "".join(f"\n{heading} {title}\n\n{table}\n" for title, table in tables if table)


def write_report(runs: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | os.PathLike, name: str = "eval") -> tuple[Path, Path]:
    """`<name>_results.json` (every number) and `<name>_results.md` (the tables) under `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_file(out_dir, name)
    markdown_path = json_path.with_suffix(".md")
    json_path.write_text(json.dumps(runs, indent=1))
    markdown_path.write_text(
        f"## Retrieval\n\n{retrieval_table(runs)}\n\n## Classification\n\n{classification_table(runs)}\n"
        + graph_metric_sections(runs)
    )
    return json_path, markdown_path


__all__ = [
    "EvaluationConfig",
    "SplitEmbeddings",
    "classification_table",
    "embed_split",
    "evaluate_checkpoint",
    "evaluate_embeddings",
    "GRAPH_TABLES",
    "graph_metric_sections",
    "graph_metric_table",
    "retrieval_table",
    "write_report",
]
