"""Model cards for trained SLIP checkpoints, generated from the run's own numbers, and Hub upload."""

import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .environment import describe_environment
from .evaluation.runner import classification_table, graph_metric_sections, retrieval_table
from .hub_upload import upload_folder_to_hub

_RETRIEVAL_METRICS = ("mrr", "mrr_i2t", "mrr_t2i", "recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "mean_rank")
_GRAPH_EVAL_RESULTS = (
    # results key, task name, metrics in the model-index (one entry per embedding)
    ("related_items", "Related-item retrieval", ("mrr", "hits_at_10", "ndcg_at_10")),
    ("link_prediction", "Link prediction", ("mrr", "hits_at_50")),
)


def build_model_card(
    results: Mapping[str, Any],
    *,
    model_name: str,
    base_model: str | None,
    dataset_id: str,
    dataset_config: str,
    hyperparameters: Mapping[str, Any],
    comparison: Mapping[str, list[Mapping[str, Any]]] | None = None,
    split: str = "test",
    environment: Mapping[str, Any] | None = None,
) -> ModelCard:
    """A `ModelCard` whose YAML `model-index` and tables carry `results` (from `evaluate_checkpoint`).

    Args:
        results: this model's metrics on `split`.
        model_name: the repo or folder name.
        base_model: the CLIP checkpoint it was initialised from (hub id), if any.
        dataset_id, dataset_config: where the data came from.
        hyperparameters: shown in the card (training arguments that matter).
        comparison: other models' runs (e.g. the CLIP baseline) for the tables, as `{name: [results, ...]}`.
        split: the split `results` were measured on.
        environment: what the run ran on (`slip_hf.environment.run_environment`), shown under "Training
            environment"; `None` leaves the section out.
    """
    eval_results = [
        EvalResult(
            task_type="feature-extraction",
            task_name="Cross-modal retrieval",
            dataset_type=dataset_id,
            dataset_name=f"{dataset_id} ({dataset_config})",
            dataset_config=dataset_config,
            dataset_split=split,
            metric_type=metric,
            metric_value=round(float(results["retrieval"][metric]), 4),
        )
        for metric in _RETRIEVAL_METRICS
    ]
    for key, task_name, metrics in _GRAPH_EVAL_RESULTS:
        for kind, values in results.get(key, {}).items():
            if values.get("collapsed"):  # no score to report (see graph_metrics)
                continue
            eval_results += [
                EvalResult(
                    task_type=key.replace("_", "-"), task_name=task_name, dataset_type=dataset_id,
                    dataset_name=f"{dataset_id} ({dataset_config})", dataset_config=dataset_config, dataset_split=split,
                    metric_type=metric, metric_name=f"{metric} ({kind})", metric_value=round(float(values[metric]), 4),
                )
                for metric in metrics
            ]
    data = ModelCardData(
        language=["en"],
        license="apache-2.0",
        # transformers loads it (remote code, `auto_map`); no pipeline takes a SlipModel, so no pipeline_tag or
        # widget: `slip-hf export --format clip` makes the CLIP checkpoint that pipelines load
        library_name="transformers",
        tags=["slip", "clip", "graph-neural-network", "vision-language", "contrastive-learning", "co-purchase", "custom_code"],
        datasets=[dataset_id] if "/" in dataset_id else None,
        base_model=base_model if base_model and "/" in base_model and not os.path.exists(base_model) else None,
        model_name=model_name,
        eval_results=eval_results,
    )
    runs = {model_name: [results], **(comparison or {})}
    params = "\n".join(f"| `{key}` | {value} |" for key, value in hyperparameters.items())
    environment_section = f"\n## Training environment\n\n{describe_environment(dict(environment))}\n" if environment else ""
    body = f"""
# {model_name}

A SLIP model (Structure-aware Language-Image Pretraining): a CLIP dual encoder fine-tuned with CLIP's InfoNCE,
a structural contrastive loss over co-purchase neighbours (computed on node embeddings from one graph
attention stack per modality), and an auxiliary category loss. Trained with
`slip_hf` on `{dataset_id}` (config `{dataset_config}`).
{f"Initialised from `{base_model}`." if base_model else ""}

Retrieval needs no graph: the dual encoder's towers give the embeddings. The model loads without slip_hf through its
remote code (torch_geometric is the one extra requirement):
`AutoModel.from_pretrained("{model_name}", trust_remote_code=True)`. For pipelines and sentence-transformers,
`slip-hf export --model_dir {model_name} --format clip --out_dir {model_name}-clip` writes the towers as a plain
checkpoint of the backbone's own class (`CLIPModel`, `SiglipModel`, ...) with the same embeddings. Texts are
tokenized by the backbone's rule (`text_tokenizer_kwargs`: SigLIP pads to 64 tokens, as it was trained).

```python
import torch
from transformers import AutoImageProcessor, AutoTokenizer
from slip_hf import SlipModel
from slip_hf.backbones import text_tokenizer_kwargs

model = SlipModel.from_pretrained("{model_name}").eval()
tokenizer = AutoTokenizer.from_pretrained("{model_name}")
processor = AutoImageProcessor.from_pretrained("{model_name}")
with torch.no_grad():
    tokens = tokenizer(["wireless earbuds"], return_tensors="pt", **text_tokenizer_kwargs(model.config))
    text = model.get_text_features(**tokens).pooler_output
    image = model.get_image_features(**processor(images=[pil_image], return_tensors="pt")).pooler_output
score = torch.nn.functional.cosine_similarity(text, image)
```

## Results on the {split} split

Candidate pool: every node of the split ({results.get("num_nodes", "?")} image-text pairs). MRR, median/mean
rank and Recall@k as in Table 2 of the SLIP paper.

{retrieval_table(runs)}

{classification_table(runs)}
{graph_metric_sections(runs, heading='###')}
## Training hyper-parameters

| argument | value |
|---|---|
{params}
{environment_section}
## Citation

```bibtex
@misc{{lu2025slip,
  title  = {{SLIP: Structural-aware Language-Image Pretraining for Vision-Language Alignment}},
  author = {{Lu, Wenbo}},
  year   = {{2025}}
}}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def push_model_to_hub(model_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a saved model folder (weights, config, tokenizer, image processor, card, result files) to a model
    repo, without training checkpoints. Returns the commit URL."""
    return upload_folder_to_hub(
        model_dir, repo_id, "model", private=private, token=token,
        ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**"], commit_message="Upload SLIP model",
    )


__all__ = ["build_model_card", "push_model_to_hub"]
