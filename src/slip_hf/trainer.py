"""`SlipTrainer`: `transformers.Trainer` with graph-aware batches, the SLIP objective and its optimizer."""

import dataclasses
import functools
import json
import logging
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback
from transformers.trainer_utils import seed_worker

from .checkpoints import AtomicCheckpoints
from .distributed import GlobalBatch, global_batch_edge_index
from .evaluation.retrieval import retrieval_metrics
from .faults import PreemptionNotice, workers_ignoring_notice
from .graph_batching import NodeGraph, SlipDataCollator, build_batch_sampler, edges_per_node
from .objectives import OBJECTIVES, ObjectiveWeightSchedule, batch_preparers
from .optimization import slip_parameter_groups
from .pixels import PixelPipeline

logger = logging.getLogger(__name__)


def usable_cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask, which a scheduler or container may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _bf16_device_available() -> bool:
    """Whether bf16 can run on an accelerator (CUDA, XPU, NPU, MPS, XLA), as `TrainingArguments` asks."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return is_torch_bf16_gpu_available() or is_torch_xla_available()


def _node_ids(dataset) -> np.ndarray:
    """The `node_id` column without the dataset's transform: reading it through `with_transform` would decode and
    preprocess every image of the split, in the main process, each time a loader is made."""
    plain = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    return np.asarray(plain["node_id"])


# Training arguments that, when set, override the model config's field of the same name.
_CONFIG_OVERRIDES = ("hops", "hop_mode", *(f"lambda_{name}" for name in OBJECTIVES))
# Collator outputs that describe the batch rather than feed the model.
_BATCH_METADATA = ("node_ids", "num_cut_edges")


def apply_config_overrides(config, args: "SlipTrainingArguments") -> None:
    """Write the training arguments that override model settings (`hops`, `hop_mode`, every `lambda_<name>`)
    into the model config, so that the saved model records how it was trained."""
    for name in _CONFIG_OVERRIDES:
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))


@dataclass
class SlipTrainingArguments(TrainingArguments):
    """[`TrainingArguments`] plus what the SLIP recipe (§6.1) needs. Paper values: `learning_rate` 1.6e-4
    (Table 4; §6.1 says 1e-5, see `slip_hf.optimization`), `layer_lr_decay` 0.8, `graph_learning_rate` 4e-3,
    `warmup_steps` 500 with linear decay, `num_train_epochs` 50, `early_stopping_patience` 10 (delta 0.001)."""

    layer_lr_decay: float = field(
        default=0.8, metadata={"help": "Per-layer LR factor of the CLIP towers (discriminative LR); 1.0 disables it."}
    )
    layer_lr_decay_direction: str = field(
        default="shallower_lower",
        metadata={
            "help": "'shallower_lower': lr * decay**k below the top layer (usual layer-wise decay; Table 4). "
            "'shallower_higher': lr / decay**k (the wording of §6.1)."
        },
    )
    graph_learning_rate: float = field(
        default=4e-3, metadata={"help": "LR of the GAT stacks, fusion, classifier and graph temperature."}
    )
    hops: int | None = field(default=None, metadata={"help": "Override the model's hop threshold h (Eq. 2)."})
    hop_mode: str | None = field(default=None, metadata={"help": "Override the model's hop mode: within | exact."})
    lambda_clip: float | None = field(default=None, metadata={"help": "Override the model's lambda_clip (CLIP InfoNCE, Eq. 1)."})
    lambda_graph: float | None = field(default=None, metadata={"help": "Override the model's lambda_graph (Eq. 7)."})
    lambda_aux: float | None = field(default=None, metadata={"help": "Override the model's lambda_aux (Eq. 7)."})
    lambda_structxlip_global: float | None = field(
        default=None, metadata={"help": "StructXLIP: edge map <-> structure-centric caption InfoNCE (reference 0.5; 0 = off)."}
    )
    lambda_structxlip_local: float | None = field(
        default=None, metadata={"help": "StructXLIP: caption chunks <-> edge-map regions (reference 0.1; 0 = off)."}
    )
    lambda_structxlip_consistency: float | None = field(
        default=None, metadata={"help": "StructXLIP: RGB <-> edge-map embedding consistency (reference 0.05; 0 = off)."}
    )
    lambda_structure_clip_margin: float | None = field(
        default=None, metadata={"help": "Structure-CLIP: true caption vs its scene-graph negative, margin loss (reference 1; 0 = off)."}
    )
    lambda_structure_clip_hinge: float | None = field(
        default=None, metadata={"help": "Structure-CLIP: hinge contrastive loss on knowledge-enhanced texts (reference 1; 0 = off)."}
    )
    lambda_structure_clip_negclip: float | None = field(
        default=None, metadata={"help": "Structure-CLIP: InfoNCE with the negatives as extra text candidates (NegCLIP; 0 = off)."}
    )
    objective_schedule: list[str] = field(
        default_factory=list,
        metadata={"help": "Objectives whose weight follows the per-epoch warm-up + cosine decay with a floor "
                  "(StructXLIP's schedule), e.g. structxlip_global structxlip_local structxlip_consistency."},
    )
    schedule_warmup_epochs: int = field(default=1, metadata={"help": "Schedule: linear warm-up epochs."})
    schedule_decay_start: int = field(default=1, metadata={"help": "Schedule: epoch where the cosine decay starts."})
    schedule_decay_end: int = field(default=8, metadata={"help": "Schedule: epoch where the decay reaches the floor."})
    schedule_floor: float = field(default=0.5, metadata={"help": "Schedule: final factor of the weight."})
    batch_sampler: str = field(
        default="graph",
        metadata={"help": "'graph': batches of BFS clusters (dense subgraphs); 'uniform': random batches."},
    )
    cluster_size: int | None = field(
        default=None, metadata={"help": "Nodes per BFS cluster of the graph sampler (default batch_size // 8)."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without improvement (paper: 10); needs evaluation."},
    )
    early_stopping_threshold: float = field(
        default=0.001, metadata={"help": "Minimum improvement that resets the early-stopping patience."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: the collator needs `node_id`, which the model does not take."}
    )
    global_clip_loss: bool = field(
        default=True,
        metadata={"help": "With several processes, compute the CLIP loss over the global batch (all-gathered "
                  "embeddings, N - 1 negatives per anchor) instead of each process's local batch."},
    )
    global_graph_loss: bool = field(
        default=True,
        metadata={"help": "With several processes, run the GAT and the structural loss on the global batch's subgraph, "
                  "edges between nodes of different processes included (needs global_clip_loss)."},
    )
    gather_with_grad: bool = field(
        default=True,
        metadata={"help": "Differentiable all-gather: gradients equal the single-process ones on the global batch. "
                  "False: cheaper backward, each process's encoders get only their own loss share (approximate)."},
    )
    local_loss: bool = field(
        default=True,
        metadata={"help": "Each process computes its own anchor rows against the global batch: O(local x global) "
                  "memory. False: every process computes all rows (O(global^2))."},
    )
    save_on_signal: str | None = field(
        default=None,
        metadata={"help": "A signal that, like SIGTERM (always caught), finishes the current step, saves a complete "
                  "checkpoint and stops the run with exit code 128 + the signal's number: e.g. SIGUSR1 for SLURM's "
                  "--signal=USR1@120. Resume with --resume_from_checkpoint True."},
    )
    logs_to: str = field(
        default="terminal",
        metadata={"help": "Where the Trainer's log lines ({'loss': ...}, {'eval_loss': ...}) go: 'terminal' (transformers' "
                  "default, written between the progress bar's updates) or 'file': one JSON line each in the run's "
                  "trainer_log.jsonl, the terminal keeping one progress bar per run (the demo and the ablations)."},
    )
    retrieval_eval: bool = field(
        default=True,
        metadata={"help": "At each evaluation, also rank the eval split's image-text pairs (eval_mrr, eval_recall_at_k, "
                  "...); use metric_for_best_model='mrr' to select checkpoints by validation MRR."},
    )

    def __post_init__(self):
        if (self.bf16 or self.bf16_full_eval) and not self.use_cpu and not _bf16_device_available():
            raise ValueError("bf16 needs a GPU or a CPU with bf16 support; pass --bf16 False or --use_cpu")
        super().__post_init__()
        cores = usable_cpu_count()
        if self.dataloader_num_workers > cores:
            logger.warning(
                f"dataloader_num_workers={self.dataloader_num_workers} is more than the {cores} CPU core(s) this process "
                f"may use: the workers share them and feed the model no faster; --dataloader_num_workers {cores} or fewer "
                "is enough here."
            )
            # torch says the same at every loader start, in a paragraph
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        if self.save_on_signal is not None:
            from .faults import signal_number

            signal_number(self.save_on_signal)  # a one-line error now, not at the first step
        if self.logs_to not in ("terminal", "file"):
            raise ValueError(f"logs_to must be 'terminal' or 'file', got {self.logs_to!r}.")
        if self.batch_sampler not in ("graph", "uniform"):
            raise ValueError(f"batch_sampler must be 'graph' or 'uniform', got {self.batch_sampler!r}.")
        if self.global_graph_loss and not self.global_clip_loss:
            raise ValueError("global_graph_loss needs global_clip_loss (the graph path uses the gathered embeddings).")
        unknown = set(self.objective_schedule) - set(OBJECTIVES)
        if unknown:
            raise ValueError(f"objective_schedule names unknown objectives {sorted(unknown)}; known: {sorted(OBJECTIVES)}.")
        if self.early_stopping_patience is not None and not self.load_best_model_at_end:
            raise ValueError(
                "early_stopping_patience needs load_best_model_at_end=True (with matching eval/save strategies), "
                "as transformers' EarlyStoppingCallback does."
            )


class SlipTrainer(AtomicCheckpoints, Trainer):
    """[`Trainer`] for [`SlipModel`].

    * batches come from the graph-aware sampler (`args.batch_sampler`), with each batch's subgraph attached by
      [`SlipDataCollator`];
    * with several processes, each global batch is sharded over them and the losses are those of the global
      batch (`global_clip_loss`, `global_graph_loss`; see `slip_hf.distributed`);
    * the loss is the model's total over its enabled objectives; every `loss_<objective>`, the batch edge density
      (`edges_per_node`) and `positive_pairs` are averaged between logging steps and logged with `loss`;
    * the optimizer uses discriminative learning rates for CLIP and `graph_learning_rate` for the graph head;
    * `EarlyStoppingCallback` is added when `args.early_stopping_patience` is set.

    Args:
        model ([`SlipModel`]): the model to train; its config takes the loss weights and hops of `args`
            (`apply_config_overrides`).
        args ([`SlipTrainingArguments`], *optional*): the run's settings; default: `SlipTrainingArguments(output_dir=
            "slip_output")`.
        graph ([`NodeGraph`], *optional*): the dataset graph over the `node_id` column of the datasets; needed with
            `args.batch_sampler="graph"` (the default), and with the weights when the model weighs its positives.
        data_collator (*optional*): default: a [`SlipDataCollator`] over `graph` with `processing_class` as the
            tokenizer and the model's objectives' preparers.
        train_dataset (`datasets.Dataset`, *optional*): the training nodes (`node_id`, `input_ids` or the text,
            `pixel_values` or `images`, optionally `labels`), as `slip_hf.processing` prepares them.
        eval_dataset (`datasets.Dataset`, *optional*): the validation nodes, likewise.
        processing_class (*optional*): the tokenizer, as in [`Trainer`].
        callbacks (`list[TrainerCallback]`, *optional*): added to [`Trainer`]'s; an `EarlyStoppingCallback` is added
            when `args.early_stopping_patience` is set.
        image_processor (*optional*): the model's image processor; objectives that render images from the batch
            (StructXLIP's edge maps) need it when the trainer builds the data collator.
        pixel_pipeline ([`PixelPipeline`], *optional*): the tensor image path (`slip_hf.pixels`): batches carry
            decoded uint8 `images` and the trainer turns them into `pixel_values` on the training device with this
            pipeline (built with `PixelPipeline.from_image_processor`); with `augment_images`, training batches get
            per-sample seeded random resized crops and flips (seeded by the run's seed, the epoch and the node id).
        augment_images (`bool`, *optional*, defaults to `False`): draw those crops and flips for training batches.
        **kwargs (`Any`): passed to [`Trainer`].
    """

    def __init__(
        self,
        model=None,
        args: SlipTrainingArguments | None = None,
        graph: NodeGraph | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        callbacks: list | None = None,
        image_processor=None,
        pixel_pipeline: PixelPipeline | None = None,
        augment_images: bool = False,
        **kwargs,
    ):
        if args is None:
            args = SlipTrainingArguments(output_dir="slip_output")
        if not isinstance(args, SlipTrainingArguments):
            raise TypeError("SlipTrainer needs SlipTrainingArguments.")
        if graph is None and args.batch_sampler == "graph":
            raise ValueError("SlipTrainer with batch_sampler='graph' needs `graph` (a NodeGraph).")
        self.graph = graph
        self.pixel_pipeline = pixel_pipeline
        self._train_pixels = dataclasses.replace(pixel_pipeline, augment=augment_images, seed=args.seed) if pixel_pipeline else None
        self._train_batch_sampler = None
        if model is not None:
            apply_config_overrides(model.config, args)
            if model.config.weights_positives and graph is not None and graph.weight is None:
                raise ValueError(
                    "the model weighs its positives (positive_recency / positive_count_weighting) but the graph has no "
                    "weights: build it with CopurchaseGraph.node_graph(model.config)."
                )
        if data_collator is None:
            preparers = batch_preparers(model.config, processing_class, image_processor) if model is not None else []
            data_collator = SlipDataCollator(graph, tokenizer=processing_class, preparers=preparers)
        callbacks = list(callbacks or [])
        self.preemption = PreemptionNotice([args.save_on_signal] if args.save_on_signal else [])
        callbacks.append(self.preemption)
        if args.early_stopping_patience is not None:
            callbacks.append(EarlyStoppingCallback(args.early_stopping_patience, args.early_stopping_threshold))
        if args.objective_schedule:
            callbacks.append(ObjectiveWeightSchedule(
                args.objective_schedule, args.schedule_warmup_epochs, args.schedule_decay_start, args.schedule_decay_end,
                args.schedule_floor,
            ))
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )
        if args.logs_to == "file":
            self.remove_callback(PrinterCallback)
            if self.pop_callback(ProgressCallback) is not None:
                self.add_callback(BarOnlyProgressCallback)
            self.add_callback(LogFileCallback)
        # SlipModel computes its loss from the batch alone; labels are optional.
        self.can_return_loss = True
        # running sums on the training device: adding a tensor there costs no host sync, `.item()` each step would
        self._loss_part_sums: dict[str, torch.Tensor] = {}
        self._loss_part_counts: dict[str, int] = defaultdict(int)
        self._eval_embeddings: dict[str, list[torch.Tensor]] | None = None
        self._eval_loaders: dict[str, DataLoader] = {}

    # -- data -------------------------------------------------------------------------------------------
    def _graph_dataloader(self, dataset, batch_size: int, seed: int, is_training: bool) -> DataLoader:
        if "node_id" not in dataset.column_names:
            raise ValueError(f"the dataset needs a 'node_id' column; it has {dataset.column_names}.")
        num_processes = self.accelerator.num_processes
        batch_sampler = build_batch_sampler(
            self.args.batch_sampler,
            self.graph,
            _node_ids(dataset),
            batch_size,
            cluster_size=self.args.cluster_size,
            drop_last=self.args.dataloader_drop_last,
            seed=seed,
            num_replicas=num_processes,
            rank=self.accelerator.process_index,
        )
        if is_training:
            self._train_batch_sampler = batch_sampler  # its epoch seeds the augmentation of the tensor image path
        loader = DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=self.data_collator, **self._loader_options())
        if num_processes == 1:
            return self.accelerator.prepare(loader)
        # The sampler already gives each process its slice of every global batch: accelerate must only move
        # batches to the device, not shard them again.
        return prepare_data_loader(loader, self.args.device, num_processes=1, process_index=0, put_on_device=True)

    def _loader_options(self) -> dict[str, Any]:
        """The `DataLoader` settings of `TrainingArguments`, as `Trainer` passes them: workers seeded per worker
        and per rank (`seed_worker(worker_id, num_workers, rank)`, transformers 5's signature), pinned memory on
        CUDA, persistent workers, prefetch factor, start method and order. Workers ignore the preemption notice's
        signals, which a scheduler may send to the whole process group: the main process finishes the step."""
        args, workers = self.args, self.args.dataloader_num_workers
        options: dict[str, Any] = {"num_workers": workers, "pin_memory": args.dataloader_pin_memory and torch.cuda.is_available()}
        if not args.dataloader_in_order:  # DataLoader's `in_order` exists from torch 2.6 on; True is its default
            options["in_order"] = False
        if workers > 0:
            options.update(
                persistent_workers=args.dataloader_persistent_workers,
                prefetch_factor=args.dataloader_prefetch_factor,
                **workers_ignoring_notice(functools.partial(seed_worker, num_workers=workers, rank=args.process_index),
                                          self.preemption.numbers, args.dataloader_multiprocessing_context),
            )
        return options

    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("SlipTrainer: training requires a train_dataset.")
        return self._graph_dataloader(self.train_dataset, self._train_batch_size, self.args.seed, is_training=True)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else eval_dataset
        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("SlipTrainer: evaluation requires an eval_dataset.")
        # With persistent workers, every evaluation reuses one loader (and its workers), as `Trainer` does.
        key = eval_dataset if isinstance(eval_dataset, str) else "eval" if eval_dataset is None else None
        if key is not None and self.args.dataloader_persistent_workers and key in self._eval_loaders:
            return self._eval_loaders[key]
        # A fixed seed: every evaluation sees the same batches, so eval losses are comparable across epochs.
        loader = self._graph_dataloader(dataset, self.args.eval_batch_size, seed=self.args.seed + 1, is_training=False)
        if key is not None and self.args.dataloader_persistent_workers:
            self._eval_loaders[key] = loader
        return loader

    def get_test_dataloader(self, test_dataset) -> DataLoader:
        return self.get_eval_dataloader(test_dataset)

    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Move the batch to the device; on the tensor image path, make its `pixel_values` there and run the
        objectives' preparers that read them."""
        inputs = super()._prepare_inputs(inputs)
        if "images" not in inputs:
            return inputs
        if self.pixel_pipeline is None:
            raise ValueError("the batch holds uint8 `images` (the tensor image path): give SlipTrainer a pixel_pipeline.")
        images, texts = inputs.pop("images"), inputs.pop("text", None)
        training = self.model.training
        pipeline = self._train_pixels if training else self.pixel_pipeline
        epoch = self._train_batch_sampler.epoch if training and self._train_batch_sampler is not None else 0
        keys = inputs["node_ids"].tolist() if pipeline.augment else None
        inputs["pixel_values"] = pipeline(images, keys=keys, epoch=epoch, device=self.args.device)
        deferred = [prepare for prepare in getattr(self.data_collator, "preparers", []) if prepare.needs_pixels]
        if deferred:
            rows = [{"text": text} for text in texts]
            for prepare in deferred:
                prepare(inputs, rows)
        return inputs

    # -- loss -------------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Eq. 7 from [`SlipModel`]; each part is a per-batch mean, so gradient accumulation averages them."""
        node_ids = inputs.get("node_ids")
        inputs = {k: v for k, v in inputs.items() if k not in _BATCH_METADATA}
        if self.accelerator.num_processes > 1 and self.args.global_clip_loss:
            edge_index = edge_weight = None
            if self.args.global_graph_loss and self.graph is not None and self.accelerator.unwrap_model(model).config.use_graph:
                edge_index, edge_weight, _ = global_batch_edge_index(self.graph, node_ids)
            inputs["global_batch"] = GlobalBatch(edge_index, self.args.gather_with_grad, self.args.local_loss, edge_weight,
                                                 simple_edges=True)  # NodeGraph.batch_subgraph's edges
        outputs = model(**inputs, return_loss=True)
        if model.training:
            self._record_loss_parts(outputs, inputs)
        elif self._eval_embeddings is not None:  # kept for the retrieval metrics of `evaluation_loop`
            self._eval_embeddings["image"].append(outputs.image_embeds.detach().float())
            self._eval_embeddings["text"].append(outputs.text_embeds.detach().float())
            self._eval_embeddings["node_ids"].append(node_ids.to(outputs.image_embeds.device))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The SLIP loss of an eval batch, whether or not it carries `labels` (the CLIP baseline has none, and
        `Trainer.prediction_step` would then call the model without asking for a loss). Per-batch logits are
        not returned: their shapes differ from batch to batch."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        """The eval loss as usual (per-batch logits are not gathered: their shapes differ from batch to batch),
        plus, with `args.retrieval_eval`, Table 2's retrieval metrics over the whole eval split, computed from
        the embeddings of that same pass."""
        self._eval_embeddings = {"image": [], "text": [], "node_ids": []} if self.args.retrieval_eval else None
        try:
            output = super().evaluation_loop(dataloader, description, True, ignore_keys, metric_key_prefix)
            if self._eval_embeddings and self._eval_embeddings["image"]:
                image, text, node_ids = (self._gather_eval(self._eval_embeddings[name]) for name in ("image", "text", "node_ids"))
                # sharded samplers may repeat a few nodes to even out the ranks: rank each pair once
                _, first = np.unique(node_ids.cpu().numpy(), return_index=True)
                metrics = retrieval_metrics(image[first].cpu(), text[first].cpu())
                for name in ("mrr", "mrr_i2t", "mrr_t2i", "median_rank", "mean_rank", "recall_at_1", "recall_at_5", "recall_at_10"):
                    output.metrics[f"{metric_key_prefix}_{name}"] = metrics[name]
        finally:
            self._eval_embeddings = None
        return output

    def _gather_eval(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate one process's eval tensors and gather them from all processes (uneven lengths allowed)."""
        local = torch.cat(parts)
        if self.accelerator.num_processes == 1:
            return local
        lengths = self.accelerator.gather(torch.tensor([local.size(0)], device=local.device))
        padded = self.accelerator.gather(self.accelerator.pad_across_processes(local, dim=0))
        width = int(lengths.max())
        return torch.cat([padded[rank * width : rank * width + int(n)] for rank, n in enumerate(lengths.tolist())])

    def _record_loss_parts(self, outputs, inputs: dict[str, Any]) -> None:
        parts = {f"loss_{name}": getattr(outputs, f"loss_{name}") for name in OBJECTIVES}
        parts["positive_pairs"] = outputs.num_positive_pairs
        batch_size = inputs["pixel_values"].size(0)
        parts["edges_per_node"] = edges_per_node(inputs["edge_index"], batch_size) if "edge_index" in inputs else None
        for name, value in parts.items():
            if value is None:
                continue
            value = value.detach().float() if torch.is_tensor(value) else torch.tensor(float(value))
            value = value.to(self.args.device, non_blocking=True)
            self._loss_part_sums[name] = self._loss_part_sums[name] + value if name in self._loss_part_sums else value
            self._loss_part_counts[name] += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the mean loss parts since the last training log to the training logs (one device-to-host copy
        per logging step, not one per training step)."""
        if "loss" in logs and self._loss_part_counts:
            for name, total in self._loss_part_sums.items():
                mean = total / self._loss_part_counts[name]
                logs[name] = round(float(self.accelerator.gather(mean.reshape(1)).mean()), 6)
            self._loss_part_sums.clear()
            self._loss_part_counts.clear()
        super().log(logs, start_time)

    # -- optimizer --------------------------------------------------------------------------------------
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """AdamW (or `args.optim`) over [`slip_parameter_groups`]: discriminative CLIP LRs, graph-head LR."""
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = slip_parameter_groups(
                opt_model,
                base_lr=self.args.learning_rate,
                graph_lr=self.args.graph_learning_rate,
                weight_decay=self.args.weight_decay,
                decay_parameter_names=self.get_decay_parameter_names(opt_model),
                layer_decay=self.args.layer_lr_decay,
                direction=self.args.layer_lr_decay_direction,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **optimizer_kwargs)
        return self.optimizer


class BarOnlyProgressCallback(ProgressCallback):
    """transformers' progress bars without the log lines it writes between their updates (`--logs_to file`)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return


class LogFileCallback(TrainerCallback):
    """Appends each log line to `<output_dir>/trainer_log.jsonl` (`--logs_to file`); `trainer_state.json` keeps
    them too."""

    LOG_FILE = "trainer_log.jsonl"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, self.LOG_FILE), "a") as log_file:
                log_file.write(json.dumps({"step": state.global_step, **logs}) + "\n")


__all__ = ["BarOnlyProgressCallback", "LogFileCallback", "SlipTrainer", "SlipTrainingArguments", "apply_config_overrides"]
