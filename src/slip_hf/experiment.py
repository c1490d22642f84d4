"""One SLIP (or CLIP-baseline) experiment from three argument dataclasses: load the graph dataset, build the
model, train with [`SlipTrainer`], evaluate the best checkpoint on the test split, write the results, the
plots and the model card.

`training/run_slip.py`, `slip-hf train`, the demo and the ablations all call [`run_experiment`].
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import DatasetDict
from safetensors.torch import save_file
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, set_seed

from .checkpoints import resume_checkpoint, save_final_model
from .data.hub import load_copurchase_graph
from .evaluation.plots import write_figures
from .evaluation.runner import EvaluationConfig, evaluate_checkpoint, write_report
from .model_card import build_model_card, push_model_to_hub
from .modeling_slip import SlipModel
from .objectives import enabled_objectives, needs_scene_graphs, objective_weights
from .paths import require_folder
from .pixels import PixelPipeline
from .processing import NodeTransform, RandomResizedCropFlip, undecoded_images
from .run_folder import SETTINGS_FILE, results_file, run_settings
from .trainer import SlipTrainer, SlipTrainingArguments, apply_config_overrides


@dataclass
class ModelArguments:
    """Which model to train."""

    model_name_or_path: str = field(
        default="openai/clip-vit-base-patch16",
        metadata={"help": "A dual encoder to start from (hub id or folder: CLIP, MetaCLIP 2, SigLIP, fixed-resolution SigLIP 2, "
                  "e.g. google/siglip2-base-patch16-224), or a SLIP checkpoint to continue."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer; default: the model's."})
    image_processor_name: str | None = field(default=None, metadata={"help": "Image processor; default: the model's."})
    baseline: Literal["slip", "clip"] = field(
        default="slip",
        metadata={"help": "'clip': the paper's fine-tuning baseline, the dual encoder alone with its own loss (no graph "
                  "path, no aux head, same schedule), whatever the backbone."},
    )
    aux_head: bool = field(default=True, metadata={"help": "Train the auxiliary category classifier (Eq. 6)."})
    graph_num_layers: int = field(default=2, metadata={"help": "GAT layers per modality."})
    graph_hidden_size: int = field(default=512, metadata={"help": "GAT layer width."})
    graph_num_heads: int = field(default=4, metadata={"help": "GAT attention heads."})
    graph_dropout: float = field(default=0.1, metadata={"help": "GAT dropout."})
    graph_loss_exclude_self: bool = field(default=False, metadata={"help": "SupCon-style Eq. 5 denominator (without the anchor)."})
    graph_loss_on: Literal["z", "e", "both"] = field(
        default="z",
        metadata={"help": "What the structural loss pulls together: 'z' the node embeddings Z (the paper), 'e' the CLIP "
                  "image and text embeddings used at query time, 'both' the mean of the two terms."},
    )
    graph_loss_form: Literal["auto", "infonce", "sigmoid"] = field(
        default="auto",
        metadata={"help": "The structural loss's form: 'infonce' (Eq. 5: softmax over the batch, neighbours positive; the "
                  "paper), 'sigmoid' (SigLIP's pairwise sigmoid with a learned bias, neighbours positive), or 'auto': "
                  "the backbone's own (InfoNCE on CLIP, sigmoid on SigLIP)."},
    )
    use_knowledge_encoder: bool = field(
        default=False, metadata={"help": "Structure-CLIP's Knowledge-Enhanced Encoder over each text's scene-graph triples."}
    )
    positive_recency: Literal["none", "window", "decay"] = field(
        default="none",
        metadata={"help": "Recency-aware positives of the structural loss, from each edge's last co-purchase: 'window' "
                  "(only edges bought within --positive_recency_days of the newest one) or 'decay' (half-life)."},
    )
    positive_recency_days: float = field(default=365.0, metadata={"help": "Window length or half-life, in days."})
    positive_count_weighting: Literal["none", "log", "linear"] = field(
        default="none", metadata={"help": "Count-weighted positives: x log(1 + co-buyers) or x co-buyers."}
    )


@dataclass
class DataArguments:
    """Which data to train and evaluate on."""

    dataset_name: str = field(
        default="amazon-copurchase-mm", metadata={"help": "Hub repo id or local folder of the co-purchase graph dataset."}
    )
    dataset_config: str = field(default="electronics", metadata={"help": "Dataset config (category)."})
    text_column: str = field(default="title", metadata={"help": "Text modality: 'title' (paper) or 'description'."})
    image_column: str = field(default="image", metadata={"help": "Image column."})
    label_column: str = field(default="label", metadata={"help": "Category label column (aux loss, zero-shot)."})
    max_text_length: int | None = field(
        default=None, metadata={"help": "Tokens per text; default: the text tower's positions (77 for OpenAI's CLIPs)."}
    )
    augment: bool = field(default=True, metadata={"help": "Random resized crop + flip on training images."})
    few_shot: list[int] = field(default_factory=lambda: [1, 5, 10], metadata={"help": "k of the k-shot linear probes."})
    test_split: str = field(default="test", metadata={"help": "Split evaluated at the end ('' to skip)."})
    plots: bool = field(default=True, metadata={"help": "Write the hop-similarity and retrieval-grid plots."})
    temporal_cut: str | None = field(
        default=None,
        metadata={"help": "Temporal split: train on the co-purchases first seen before the cut, evaluate link prediction "
                  "on the ones after it. A share of the edges (0.8), an ISO date (2022-06-01) or Unix ms."},
    )
    image_pipeline: Literal["tensor", "processor"] = field(
        default="tensor",
        metadata={"help": "'tensor' (default): data workers only decode images to uint8; resizing, augmentation and "
                  "normalisation run batched in torch on the training device (slip_hf.pixels), ~5x less CPU per sample, "
                  "and a resumed run replays the same crops. 'processor': the CLIP image processor in the data workers, "
                  "for checking against a processor, not for training speed."},
    )
    graph_pool: Literal["split", "all"] = field(
        default="split", metadata={"help": "Pool of the related-item and link-prediction metrics: the test split or every item."}
    )


def _load_model(model_args: ModelArguments, num_labels: int, id2label: dict[int, str]) -> SlipModel:
    config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    if config.model_type == "slip":
        return SlipModel.from_pretrained(model_args.model_name_or_path)
    is_baseline = model_args.baseline == "clip"
    use_aux = model_args.aux_head and not is_baseline and num_labels > 0
    return SlipModel.from_dual_encoder(
        model_args.model_name_or_path,
        use_graph=not is_baseline,
        graph_num_layers=model_args.graph_num_layers,
        graph_hidden_size=model_args.graph_hidden_size,
        graph_num_heads=model_args.graph_num_heads,
        graph_dropout=model_args.graph_dropout,
        graph_loss_exclude_self=model_args.graph_loss_exclude_self,
        graph_loss_on=model_args.graph_loss_on,
        graph_loss_form=model_args.graph_loss_form,
        use_knowledge_encoder=model_args.use_knowledge_encoder,
        positive_recency=model_args.positive_recency,
        positive_recency_days=float(model_args.positive_recency_days),
        positive_count_weighting=model_args.positive_count_weighting,
        lambda_graph=0.0 if is_baseline else 0.05,
        lambda_aux=0.1 if use_aux else 0.0,
        **({"num_labels": num_labels, "id2label": id2label} if use_aux else {}),
    )


def _text_length(requested: int | None, model: SlipModel) -> int:
    """Tokens per text: `requested`, or the text tower's positions when not given (an error when it has fewer, or
    when the backbone was trained on texts padded to all its positions, as SigLIP was, and `requested` is another)."""
    positions = model.config.get_text_config().max_position_embeddings
    if requested is not None and requested > positions:
        raise ValueError(f"max_text_length {requested} is more than the text tower's {positions} positions; pass "
                         f"--max_text_length {positions} or less.")
    backbone = model.config.backbone
    if requested is not None and requested != positions and backbone.pads_to_max_length:
        raise ValueError(f"max_text_length {requested}: a {backbone.family} text tower was trained on texts padded to its "
                         f"{positions} positions and pools the last one; another length gives other vectors. Leave "
                         f"--max_text_length unset (or {positions}).")
    return requested or positions


def run_experiment(
    model_args: ModelArguments, data_args: DataArguments, training_args: SlipTrainingArguments, run_name: str | None = None
) -> dict[str, Any]:
    """Train and evaluate; returns `{"train": ..., "validation": ..., "test": metrics, "output_dir", "files"}`.

    The best checkpoint by validation MRR is kept when `training_args.load_best_model_at_end` is set (the
    recipes do), and training resumes from `training_args.resume_from_checkpoint` (`True` = the last one in
    `output_dir`). The folder records the run as `slip_hf.run_folder` describes: its settings before training,
    the Trainer's state after it, the test results last.

    Args:
        model_args ([`ModelArguments`]): the CLIP or SLIP checkpoint to start from, and the graph head.
        data_args ([`DataArguments`]): the dataset (folder or Hub id), its columns, and what to evaluate.
        training_args ([`SlipTrainingArguments`]): the run's settings (`output_dir`, batch sizes, loss weights, ...).
        run_name (`str`, *optional*): the method's name in the results and the leaderboard; default: "SLIP", or
            "CLIP (fine-tuned)" with `model_args.baseline="clip"`.

    Example:

    ```python
    from slip_hf.experiment import parse_arguments, run_experiment

    results = run_experiment(*parse_arguments(["training/recipes/slip_electronics_vitb16.yaml", "--max_steps", "10"]))
    results["test"]["retrieval"]["mrr"]
    ```
    """
    require_folder(model_args.model_name_or_path, "model")
    set_seed(training_args.seed)
    output_dir = Path(training_args.output_dir)
    graph_data = load_copurchase_graph(data_args.dataset_name, data_args.dataset_config, temporal_cut=data_args.temporal_cut)
    nodes = graph_data.nodes
    label_feature = nodes["train"].features.get(data_args.label_column)
    class_names = list(getattr(label_feature, "names", []) or [])

    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    image_processor = AutoImageProcessor.from_pretrained(model_args.image_processor_name or model_args.model_name_or_path)
    model = _load_model(model_args, len(class_names), dict(enumerate(class_names)))
    model.config.backbone.check_tokenizer(tokenizer, model.config.clip_config)
    apply_config_overrides(model.config, training_args)
    settings = run_settings(model_args, data_args, training_args, training_args.world_size)  # as requested
    data_args = dataclasses.replace(data_args, max_text_length=_text_length(data_args.max_text_length, model))
    graph = graph_data.node_graph(model.config)  # with the positive weights the config asks for
    scene_graphs = needs_scene_graphs(model.config)
    if scene_graphs:  # Structure-CLIP: parse every text once (cached by `datasets`)
        from .objectives.structure_clip_inputs import annotate_scene_graphs

        nodes = DatasetDict({
            name: annotate_scene_graphs(split, data_args.text_column, model.config.structure_clip_replace_attributes)
            if name in ("train", "validation") else split
            for name, split in nodes.items()
        })

    tensor_path = data_args.image_pipeline == "tensor"

    def transform(augment: bool) -> NodeTransform:
        return NodeTransform(
            image_processor, tokenizer, text_column=data_args.text_column, image_column=data_args.image_column,
            max_length=data_args.max_text_length, label_column=data_args.label_column if model.classifier is not None else None,
            image_augmentation=RandomResizedCropFlip() if augment and not tensor_path else None,
            extra_columns=("negative_caption", "triples") if scene_graphs else (), decode_only=tensor_path,
        )

    def prepared(split: str, augment: bool):
        return undecoded_images(nodes[split], data_args.image_column).with_transform(transform(augment))

    train = prepared("train", data_args.augment)
    validation = prepared("validation", False) if "validation" in nodes else None
    trainer = SlipTrainer(
        model=model, args=training_args, graph=graph, train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
        image_processor=image_processor,
        pixel_pipeline=PixelPipeline.from_image_processor(image_processor) if tensor_path else None,
        augment_images=data_args.augment,
    )
    resume = resume_checkpoint(training_args.resume_from_checkpoint, output_dir, trainer)
    if trainer.is_world_process_zero():  # the folder now holds this run (`slip_hf.run_folder`)
        output_dir.mkdir(parents=True, exist_ok=True)
        if data_args.test_split:  # results of an earlier run in this folder no longer describe it
            stale = results_file(output_dir, data_args.test_split)
            stale.unlink(missing_ok=True)
            stale.with_suffix(".md").unlink(missing_ok=True)
        (output_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    train_output = trainer.train(resume_from_checkpoint=resume)
    preempted = trainer.preemption.preempted(output_dir)
    if preempted is not None:  # a notice: the checkpoint is saved, the rest of the run is the resumed run's
        raise preempted
    save_final_model(trainer, output_dir)
    trainer.save_state()
    image_processor.save_pretrained(str(output_dir))
    results: dict[str, Any] = {
        "train": train_output.metrics, "output_dir": str(output_dir), "files": {}, "objectives": enabled_objectives(model.config)
    }
    results["log_history"], results["steps"] = trainer.state.log_history, trainer.state.global_step
    if validation is not None and training_args.eval_strategy != "no":
        results["validation"] = {k: v for k, v in trainer.evaluate().items()}

    if data_args.test_split and trainer.is_world_process_zero():
        name = run_name or ("CLIP (fine-tuned)" if model_args.baseline == "clip" else "SLIP")
        config = EvaluationConfig(
            text_column=data_args.text_column, image_column=data_args.image_column, label_column=data_args.label_column,
            max_text_length=data_args.max_text_length, few_shot=tuple(data_args.few_shot), seed=training_args.seed,
            batch_size=training_args.per_device_eval_batch_size, image_pipeline=data_args.image_pipeline,
            num_workers=training_args.dataloader_num_workers,
        )
        test = nodes[data_args.test_split]
        pool = graph_data.all_nodes() if data_args.graph_pool == "all" else None
        metrics, embeddings = evaluate_checkpoint(
            trainer.model, image_processor, tokenizer, test, config, nodes["train"], graph, graph_data.future_graph(), pool
        )
        if graph_data.cut_time is not None:
            metrics["graph_protocol"]["temporal_cut_time"] = graph_data.cut_time
        results["test"] = metrics
        json_path, markdown_path = write_report({name: [metrics]}, output_dir, data_args.test_split)
        results["files"].update(results_json=str(json_path), results_markdown=str(markdown_path))
        save_file(
            {"image": embeddings.image.contiguous(), "text": embeddings.text.contiguous(), "node_ids": torch.as_tensor(embeddings.node_ids)},
            str(output_dir / f"{data_args.test_split}_embeddings.safetensors"),
        )
        if data_args.plots:
            results["files"].update(write_figures(
                {name: (embeddings.image, embeddings.text, embeddings.node_ids)}, test, graph, output_dir,
                text_column=data_args.text_column, image_column=data_args.image_column, seed=training_args.seed,
            ))
        hyperparameters = {
            "baseline": model_args.baseline, "learning_rate": training_args.learning_rate,
            "layer_lr_decay": training_args.layer_lr_decay, "layer_lr_decay_direction": training_args.layer_lr_decay_direction,
            "graph_learning_rate": training_args.graph_learning_rate, "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "num_train_epochs": training_args.num_train_epochs, "warmup_steps": training_args.warmup_steps,
            "batch_sampler": training_args.batch_sampler, "hops": trainer.model.config.hops, "seed": training_args.seed,
            **({"temporal_cut": data_args.temporal_cut} if data_args.temporal_cut else {}),
            **{key: getattr(trainer.model.config, key) for key in ("positive_recency", "positive_count_weighting")
               if getattr(trainer.model.config, key) != "none"},
            **({"graph_loss_on": trainer.model.config.graph_loss_on} if trainer.model.config.graph_loss_on != "z" else {}),
            **{f"lambda_{name}": weight for name, weight in objective_weights(trainer.model.config).items() if weight},
        }
        card = build_model_card(
            metrics, model_name=output_dir.name, base_model=model_args.model_name_or_path,
            dataset_id=data_args.dataset_name, dataset_config=data_args.dataset_config, hyperparameters=hyperparameters,
            split=data_args.test_split, environment=settings["environment"],
        )
        card.save(output_dir / "README.md")
        results["files"]["model_card"] = str(output_dir / "README.md")
        if training_args.push_to_hub and training_args.hub_model_id:
            results["hub_commit"] = push_model_to_hub(output_dir, training_args.hub_model_id, private=bool(training_args.hub_private_repo), token=training_args.hub_token)
    return results


def parse_arguments(
    argv: list[str] | None = None, prog: str | None = None, extra: tuple[type, ...] = (), recipe_section: tuple[type, ...] = ()
) -> tuple:
    """Parse `(*extra, ModelArguments, DataArguments, SlipTrainingArguments)` from the command line; a leading
    `.yaml`/`.json` recipe (`slip_hf.recipe`) gives defaults that later flags override
    (`run_slip.py recipes/electronics.yaml --num_train_epochs 5`). The recipe's `ablation:` section is checked
    against `recipe_section` (default: `extra`) and parsed only when those are among `extra`."""
    import sys

    from transformers import HfArgumentParser

    from .recipe import Recipe, is_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = (ModelArguments, DataArguments, SlipTrainingArguments)
    if argv and is_recipe(argv[0]):
        section = recipe_section or extra
        argv = Recipe.load(argv[0]).flags(arguments, section, with_ablation=bool(extra)) + argv[1:]
    parser = HfArgumentParser((*extra, *arguments), prog=prog)
    return tuple(parser.parse_args_into_dataclasses(argv))


__all__ = ["DataArguments", "ModelArguments", "parse_arguments", "run_experiment"]
