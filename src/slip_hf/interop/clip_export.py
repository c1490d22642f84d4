"""A trained SLIP model as a plain dual encoder of its backbone's own class: what every tool that speaks CLIP or
SigLIP loads.

Retrieval needs only the two towers, and SLIP's towers *are* a dual encoder of its family (`SlipModel.clip`: a
`CLIPModel`, `MetaClip2Model` or `SiglipModel`). The export writes them with transformers' own classes, so the
folder loads with

* `CLIPModel.from_pretrained(out_dir)` (or `SiglipModel`, `MetaClip2Model`) / `AutoModel` (safetensors weights, the
  family's processor, tokenizer and image processor, also as `preprocessor_config.json` for older readers);
* `pipeline("zero-shot-image-classification", model=out_dir)` (which pads SigLIP's texts to 64 itself);
* `sentence_transformers.SentenceTransformer(out_dir)`: `modules.json` names a sentence-transformers module at the
  folder's root (path `""`, as sentence-transformers 6 itself saves one: one copy of the weights serves both
  libraries): its CLIP module for CLIP, its generic `Transformer` for the others, told to pad texts by the
  backbone's rule (`processing_kwargs`); with `sentence_bert_config.json` and `config_sentence_transformers.json`;

and gives exactly the embeddings of `SlipModel.get_image_features` / `get_text_features`. The graph head (GAT,
fusion, classifier) is training-time structure and is left out; so is Structure-CLIP's knowledge encoder, which
`get_text_features` never uses. The model card points back to the SLIP model, its dataset and its measured
metrics.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..faults import disk_full, is_disk_full, parameter_bytes
from ..paths import require_folder
from ..run_folder import SETTINGS_FILE, read_test_results, results_file

SENTENCE_TRANSFORMERS_MODULE = "sentence_transformers.models.CLIPModel"
"""The module type in `modules.json` of a CLIP export: the name every sentence-transformers release since 2.0 resolves."""
SENTENCE_TRANSFORMERS_GENERIC_MODULE = "sentence_transformers.base.modules.transformer.Transformer"
"""The module type of the other families' exports: sentence-transformers 6's multimodal `Transformer`."""


@dataclass
class ClipExport:
    """What [`export_clip`] wrote: the folder, its files, and what it left out of the source model."""

    out_dir: Path
    files: list[str]
    source_type: str
    left_out: list[str] = field(default_factory=list)


def _load_source(model_dir: str):
    """`(dual encoder, SlipModel or None, model_type)` of a SLIP checkpoint or a plain dual encoder of a supported
    family; a one-line error for anything else."""
    from transformers import AutoConfig

    from ..backbones import backbone_for_model_type, supported_model_types
    from ..modeling_slip import SlipModel

    require_folder(model_dir, "model")
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"{model_dir}: not a model checkpoint that can be exported as a dual encoder ({' '.join(str(error).split())[:160]}).") from None
    if config.model_type == "slip":
        slip = SlipModel.from_pretrained(model_dir)
        return slip.clip, slip, "slip"
    if config.model_type in supported_model_types():
        return backbone_for_model_type(config.model_type).model_class(config.model_type).from_pretrained(model_dir), None, config.model_type
    raise ValueError(
        f"{model_dir} holds a `{config.model_type}` model: only SLIP checkpoints and dual encoders of the supported "
        f"families ({', '.join(supported_model_types())}) have towers to export."
    )


def export_clip(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    slip_repo: str | None = None,
    dataset_id: str | None = None,
    widget_image: str | None = None,
) -> ClipExport:
    """Write `model_dir`'s towers as a plain checkpoint of the backbone's own class in `out_dir` (`CLIPModel` for
    CLIP, `SiglipModel` for SigLIP and SigLIP 2, `MetaClip2Model` for MetaCLIP 2; see the module docstring).

    Args:
        model_dir: a SLIP (or plain dual encoder) checkpoint folder with its tokenizer and image processor, e.g. the output of
            `run_slip.py`.
        out_dir: the export folder (created; files of an earlier export are overwritten).
        slip_repo: where the SLIP model lives (a Hub id), for the card's link back; default: `model_dir`.
        dataset_id: the dataset the model was trained on, for the card; default: the one the run recorded.
        widget_image: an image URL for the Hub's zero-shot widget, whose candidate labels are the model's
            categories; without one the card has no widget.

    Returns:
        ClipExport: the export folder (`out_dir`), its `files`, the source model's type, and what of it was `left_out`
            (the graph stacks, the fusion and the classifier, which a plain dual encoder has no place for).

    Example:

    ```python
    from transformers import pipeline
    from slip_hf.interop import export_clip

    export = export_clip("runs/slip-electronics", "slip-electronics-clip")
    classify = pipeline("zero-shot-image-classification", model=str(export.out_dir))
    ```
    """
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    from ..backbones import backbone_for_config

    model_dir, out_dir = str(model_dir), Path(out_dir)
    clip, slip, source_type = _load_source(model_dir)
    backbone = backbone_for_config(clip.config)
    left_out = []
    if slip is not None:
        left_out.append("the graph head (GAT stacks, fusion, category classifier): training-time structure, not used "
                        "by get_image_features / get_text_features")
        if slip.knowledge_encoder is not None:
            left_out.append("Structure-CLIP's knowledge encoder: a plain dual encoder cannot hold it; retrieval embeddings do "
                            "not use it, so they are unchanged")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    image_processor = AutoImageProcessor.from_pretrained(model_dir)
    positions = clip.config.text_config.max_position_embeddings
    tokenizer.model_max_length = min(tokenizer.model_max_length, positions)  # pipelines then truncate to the tower
    text_kwargs = backbone.tokenizer_kwargs(clip.config) if backbone.pads_to_max_length else None
    card = export_card(model_dir, out_dir.name, slip_repo or model_dir, dataset_id, left_out, widget_image,
                       getattr(slip.config if slip is not None else clip.config, "id2label", None),
                       type(clip).__name__, backbone.processor_class, text_kwargs)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        clip.save_pretrained(out_dir)
        processor_class = getattr(transformers, backbone.processor_class)
        processor_class(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out_dir)
        image_processor.save_pretrained(out_dir)  # preprocessor_config.json, for readers that predate processor_config.json
        _write_sentence_transformers_files(out_dir, positions, text_kwargs)
        (out_dir / "README.md").write_text(card)
    except Exception as error:
        if not is_disk_full(error):
            raise
        raise disk_full("the export", out_dir, parameter_bytes(clip), then="run the same command again") from error
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    return ClipExport(out_dir, files, source_type, left_out)


def _write_sentence_transformers_files(out_dir: Path, max_seq_length: int, text_kwargs: dict | None) -> None:
    """`modules.json` (the module at the root), its `sentence_bert_config.json` and the model's
    `config_sentence_transformers.json`, as sentence-transformers writes them: its CLIP module for a CLIP, its
    generic `Transformer` told to tokenize by `text_kwargs` (SigLIP's padding to `max_length`) otherwise."""
    module = SENTENCE_TRANSFORMERS_MODULE if text_kwargs is None else SENTENCE_TRANSFORMERS_GENERIC_MODULE
    (out_dir / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": module}], indent=2))
    (out_dir / "sentence_bert_config.json").write_text(json.dumps({
        **({"processing_kwargs": {"text": text_kwargs}} if text_kwargs is not None else {}),
        "max_seq_length": max_seq_length,
        "transformer_task": "feature-extraction",
        "modality_config": {
            "text": {"method": "get_text_features", "method_output_name": "pooler_output"},
            "image": {"method": "get_image_features", "method_output_name": "pooler_output"},
        },
        "module_output_name": "sentence_embedding",
    }, indent=2))
    (out_dir / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "SentenceTransformer", "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine",
    }, indent=2))


def export_card(model_dir: str, name: str, slip_repo: str, dataset_id: str | None, left_out: list[str],
                widget_image: str | None, id2label: dict | None, model_class: str = "CLIPModel",
                processor_class: str = "CLIPProcessor", text_kwargs: dict | None = None) -> str:
    """The export's model card: how to load it in each library, where it comes from, and the SLIP model's
    measured test metrics (from its `test_results.json`) when the run wrote them."""
    from huggingface_hub import ModelCardData

    config_file = Path(model_dir) / SETTINGS_FILE
    metrics = ""
    if results_file(model_dir).is_file():
        run_name, test = read_test_results(model_dir)
        retrieval = test["retrieval"]
        related = test.get("related_items", {}).get("mean", {})
        metrics = (f"\nMeasured on the test split by the SLIP run ({run_name}): same-item retrieval MRR "
                   f"{retrieval['mrr']:.4f}, R@1 {retrieval['recall_at_1']:.4f}, R@10 {retrieval['recall_at_10']:.4f}"
                   + (f"; related-item MRR (mean embedding) {related['mrr']:.4f}" if related else "")
                   + ". These are the embeddings of this export: the towers are the same weights.\n")
    if dataset_id is None and config_file.is_file():
        dataset_id = json.loads(config_file.read_text()).get("data", {}).get("dataset_name")
    labels = [str(label) for _, label in sorted((id2label or {}).items(), key=lambda item: int(item[0]))][:8]
    widget = [{"src": widget_image, "candidate_labels": ", ".join(labels)}] if widget_image and labels else None
    data = ModelCardData(
        license="apache-2.0", library_name="transformers", pipeline_tag="zero-shot-image-classification",
        tags=[model_class.removesuffix("Model").lower(), "sentence-transformers", "slip", "vision-language", "co-purchase"],
        base_model=slip_repo if "/" in slip_repo and not os.path.exists(slip_repo) else None,
        datasets=[dataset_id] if dataset_id and "/" in dataset_id and not os.path.exists(dataset_id) else None,
        widget=widget,
    )
    left = "".join(f"\n* {item}" for item in left_out)
    return f"""---
{data.to_yaml()}
---

# {name}

The CLIP towers of the SLIP model `{slip_repo}`, trained with `slip_hf` on
{f"`{dataset_id}`" if dataset_id else "a co-purchase graph"}, as a plain `{model_class}`. Any tool that loads it loads
the towers, and the embeddings are exactly those of the SLIP model's `get_image_features` / `get_text_features`.
{_padding_note(text_kwargs)}
{metrics}
```python
from transformers import pipeline
classifier = pipeline("zero-shot-image-classification", model="{name}")
classifier(image, candidate_labels=["usb charger", "phone case"])

from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{name}")
image_embeddings, text_embeddings = model.encode([image]), model.encode(["usb charger"])

from transformers import {model_class}, {processor_class}
model, processor = {model_class}.from_pretrained("{name}"), {processor_class}.from_pretrained("{name}")
text_inputs = processor(text=["usb charger"], {_processor_text_args(text_kwargs)}return_tensors="pt")
```

Left out of the SLIP model:{left or " nothing."}

The graph-aware parts (node embeddings Z, link prediction) need the SLIP model itself: `AutoModel.from_pretrained(
"{slip_repo}", trust_remote_code=True)`, with torch_geometric installed.
"""


def _padding_note(text_kwargs: dict | None) -> str:
    if text_kwargs is None:
        return ""
    return (f"\nIts text tower was trained on texts padded to {text_kwargs['max_length']} tokens and pools the last position: "
            f"tokenize with `padding=\"max_length\", max_length={text_kwargs['max_length']}`, or the vectors differ.\n")


def _processor_text_args(text_kwargs: dict | None) -> str:
    if text_kwargs is None:
        return "padding=True, "
    return f'padding="max_length", max_length={text_kwargs["max_length"]}, truncation=True, '


__all__ = ["SENTENCE_TRANSFORMERS_GENERIC_MODULE", "SENTENCE_TRANSFORMERS_MODULE", "ClipExport", "export_card", "export_clip"]
