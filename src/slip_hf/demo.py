"""The embedded end-to-end demo (the README's first command): on a fresh machine, without a GPU or the Hub,
go from raw Amazon-schema files to the paper's comparison table.

1. generate the embedded synthetic raw data ([`generate_synthetic_raw`]);
2. build the co-purchase graph dataset with the real builder ([`build_dataset`]);
3. make a tiny randomly initialised dual encoder checkpoint, CLIP or SigLIP (`--backbone`; tokenizer trained on the
   training titles);
4. train the fine-tuning baseline (the dual encoder with its own loss) and SLIP from it with identical schedules,
   for each seed (the Trainer's log lines go to each run's `trainer_log.jsonl`; the terminal shows one bar a run);
5. evaluate every run on the test split and print Table 2 (retrieval) and the classification table as
   mean ± std over the seeds; draw Fig. 5 (similarity by hop) and Fig. 4 (a retrieval grid) for both models.

Everything lands in `out_dir`; a second run reuses the raw data when it was generated with the same
settings, and the builder's step cache.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file

from .data import BuildConfig, build_dataset, generate_synthetic_raw, summary_table
from .data.hub import load_copurchase_graph
from .data.loading import load_config
from .evaluation.plots import write_figures
from .evaluation.runner import write_report
from .experiment import DataArguments, ModelArguments, run_experiment
from .toy import FAMILIES, write_tiny_checkpoint
from .trainer import SlipTrainingArguments

MODELS = {"CLIP (fine-tuned)": "clip", "SLIP (graph + aux)": "slip"}
"""The compared methods of the CLIP demo: name -> `ModelArguments.baseline`."""
SIGLIP_MODELS = {"SigLIP (fine-tuned)": "clip", "SLIP on SigLIP (graph + aux)": "slip"}
"""The same with a SigLIP backbone (`--backbone siglip`)."""


@dataclass
class DemoConfig:
    """Size and schedule of the demo; every field is a flag of `slip-hf demo`."""

    out_dir: str = field(default="slip_demo", metadata={"help": "Everything goes here (raw data, dataset, runs, plots)."})
    backbone: str = field(default="clip", metadata={"help": "The tiny dual encoder's family: 'clip' (InfoNCE) or 'siglip' "
                                                            "(pairwise sigmoid loss, texts padded to their full length)."})
    graph_loss_form: str = field(default="auto", metadata={"help": "The structural loss's form: 'auto' (the backbone's: "
                                                                   "Eq. 5 on CLIP, sigmoid on SigLIP), 'infonce' or 'sigmoid'."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One CLIP and one SLIP run per seed."})
    num_bundles: int = field(default=120, metadata={"help": "Synthetic complement bundles (3 product lines of 6 items each)."})
    image_size: int = field(default=32, metadata={"help": "Image side seen by the tiny CLIP."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the tiny CLIP towers."})
    num_layers: int = field(default=2, metadata={"help": "Layers per tiny CLIP tower."})
    epochs: int = field(default=20, metadata={"help": "Training epochs of every run."})
    batch_size: int = field(default=128, metadata={"help": "Nodes per batch (graph-aware sampler for both models)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "CLIP learning rate (random init: no layer decay)."})
    graph_learning_rate: float = field(default=4e-3, metadata={"help": "Graph-head learning rate (paper: 4e-3)."})
    lambda_graph: float = field(default=0.05, metadata={"help": "Weight of the structural loss (paper: 0.05)."})
    lambda_aux: float = field(default=0.1, metadata={"help": "Weight of the category loss (paper: 0.1)."})
    hops: int = field(default=1, metadata={"help": "Hop threshold of the positives (paper: 1)."})
    label_depth: int = field(default=2, metadata={"help": "Category level of the labels (2 = product type)."})


def _phase(name: str, start: float) -> float:
    now = time.perf_counter()
    print(f"[{now - start:6.0f} s] {name}", flush=True)
    return now


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo; returns the per-model test results and the paths of what it wrote."""
    if config.backbone not in FAMILIES:
        raise ValueError(f"--backbone must be one of {', '.join(FAMILIES)}, got {config.backbone!r}.")
    start = time.perf_counter()
    out = Path(config.out_dir)
    models = SIGLIP_MODELS if config.backbone == "siglip" else MODELS
    raw_dir, dataset_dir, clip_dir = out / "raw", out / "dataset", out / f"{config.backbone}-init"
    generation = {"num_bundles": config.num_bundles, "image_size": 64, "seed": 0}
    marker = raw_dir / "demo_generation.json"
    if not (marker.exists() and json.loads(marker.read_text()) == generation):
        _phase("1/5 generating the synthetic Amazon-schema raw data", start)
        generate_synthetic_raw(raw_dir, **generation)
        marker.write_text(json.dumps(generation))
    _phase("2/5 building the co-purchase graph dataset", start)
    build = build_dataset(
        BuildConfig(raw_dir=str(raw_dir), out_dir=str(dataset_dir), image_size=64, label_depth=config.label_depth, min_class_size=10,
                    allow_local_files=True,  # the generated images are local files
                    on_bad_lines="skip")  # the generated metadata holds a planted broken line
    )
    print(summary_table(build.steps))
    print(f"-> {build.num_nodes} nodes, {build.num_edges} edges, splits {build.stats['splits']}; "
          f"same product line by hop: {json.dumps({k: round(v, 3) for k, v in build.stats['graph_signal'].items()})}")

    _phase(f"3/5 making the tiny {config.backbone} checkpoint (random init, tokenizer trained on the training titles)", start)
    train_titles = load_config(dataset_dir, "electronics", split="train")["title"]
    write_tiny_checkpoint(
        str(clip_dir), train_titles, image_size=config.image_size, hidden_size=config.hidden_size,
        num_layers=config.num_layers, projection_dim=config.hidden_size, family=config.backbone,
    )

    runs: dict[str, list[dict]] = {name: [] for name in models}
    run_dirs: dict[str, Path] = {}
    prefix = "" if config.backbone == "clip" else f"{config.backbone}-"
    for seed in config.seeds:
        for name, baseline in models.items():
            _phase(f"4/5 training {name}, seed {seed}", start)
            run_dir = out / "runs" / f"{prefix}{baseline}-seed{seed}"
            training_args = SlipTrainingArguments(
                output_dir=str(run_dir), seed=seed, data_seed=seed, num_train_epochs=config.epochs,
                per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=256,
                learning_rate=config.learning_rate, layer_lr_decay=1.0, graph_learning_rate=config.graph_learning_rate,
                weight_decay=0.05, warmup_steps=0.1, lr_scheduler_type="linear", eval_strategy="epoch",
                save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="mrr",
                greater_is_better=True, early_stopping_patience=10, logging_strategy="epoch", report_to="none",
                lambda_graph=config.lambda_graph, lambda_aux=config.lambda_aux, hops=config.hops, logs_to="file", disable_tqdm=False,
            )
            model_args = ModelArguments(
                model_name_or_path=str(clip_dir), baseline=baseline, graph_hidden_size=2 * config.hidden_size, graph_num_heads=4,
                graph_loss_form=config.graph_loss_form,
            )
            data_args = DataArguments(
                dataset_name=str(dataset_dir), dataset_config="electronics", max_text_length=32, few_shot=[1, 5], plots=False,
            )
            result = run_experiment(model_args, data_args, training_args, run_name=name)
            runs[name].append(result["test"])
            run_dirs.setdefault(name, run_dir)
            print(f"   test MRR {result['test']['retrieval']['mrr']:.3f}, "
                  f"best validation MRR {result['validation']['eval_mrr']:.3f}", flush=True)

    _phase("5/5 comparing on the test split", start)
    json_path, markdown_path = write_report(runs, out, "demo" if config.backbone == "clip" else f"demo-{config.backbone}")
    plots = _comparison_plots(dataset_dir, run_dirs, out)
    report = (
        f"# Test split: {build.stats['splits']['test']} image-text pairs as the candidate pool, "
        f"{len(config.seeds)} seed(s)\n\n{markdown_path.read_text()}"
    )
    print("\n" + report)
    mean_mrr = {name: float(np.mean([r["retrieval"]["mrr"] for r in results])) for name, results in runs.items()}
    print(f"Results: {json_path}, {markdown_path}; plots: {', '.join(plots.values())}")
    print(f"Demo finished in {time.perf_counter() - start:.0f} s.")
    (out / "demo_config.json").write_text(json.dumps(asdict(config), indent=1))
    return {"runs": runs, "mean_mrr": mean_mrr, "files": {"json": str(json_path), "markdown": str(markdown_path), **plots}}


def _comparison_plots(dataset_dir: Path, run_dirs: dict[str, Path], out: Path) -> dict[str, str]:
    """Fig. 5 and Fig. 4 with the first seed's models side by side."""
    graph_data = load_copurchase_graph(dataset_dir, "electronics")
    embeddings = {name: load_file(str(path / "test_embeddings.safetensors")) for name, path in run_dirs.items()}
    models = {name: (e["image"], e["text"], e["node_ids"].numpy()) for name, e in embeddings.items()}
    return write_figures(models, graph_data.nodes["test"], graph_data.node_graph(), out)


__all__ = ["DemoConfig", "run_demo"]
