"""The paper's ablations, several seeds each, printed in its layout with mean ± std:

* Table 3, batch size: for each batch size, the CLIP fine-tuning baseline ("w/o G") and SLIP ("w/ G");
* Table 4, components at one batch size: CLIP fine-tune; + Graph only; + Graph + Aux; + Graph + Aux without
  discriminative learning rates (layer decay 1.0);
* temporal: a temporal split (train on the co-purchases before the cut, predict the ones after it): CLIP,
  SLIP and SLIP with recency- or count-weighted positives (`slip_hf.positive_weights`);
* objectives: one row per set of objectives (`slip_hf.objectives`): CLIP, SLIP, StructXLIP, SLIP +
  StructXLIP, SLIP + Structure-CLIP and all three, with the references' weights; with `aro_dir`, each run is
  also scored on an ARO-format benchmark (`slip-hf make-structure-benchmark` writes a product one);
* graph_loss_on: CLIP, and SLIP with the structural loss on Z (the paper), on the CLIP embeddings E, or both.

Every run is [`run_experiment`] with the same recipe (model, data, schedule) and only the ablated setting
changed, so the rows differ by exactly what their label says. Table 3 can give every batch size the same
number of optimizer steps (`equal_steps`) and scale the learning rates with the batch (`lr_scaling`), so that
batch size is not confounded with training length. Every table ends with the leaderboard of its rows
(`slip_hf.evaluation.leaderboard`): each task's headline number, mean ± std, and a figure. Run again into the
same folder, a table reads back its finished runs and resumes a stopped one (`slip_hf.run_folder`).
"""

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoConfig

from .evaluation.aro import aro_columns, macro_unavailable
from .evaluation.leaderboard import leaderboard_table, write_leaderboard
from .experiment import DataArguments, ModelArguments, run_experiment
from .objectives import enabled_objectives
from .run_folder import SETTINGS_FILE, finished_run, run_settings, run_status
from .trainer import SlipTrainingArguments

logger = logging.getLogger(__name__)

COMPONENT_VARIANTS = {
    # name: (run folder, baseline, aux head, discriminative LR)
    "CLIP fine-tune (baseline)": ("clip", "clip", False, True),
    "+ Graph only": ("graph", "slip", False, True),
    "+ Graph + Aux": ("graph_aux", "slip", True, True),
    "+ Graph + Aux, no DLR": ("graph_aux_no_dlr", "slip", True, False),
}
STRUCTXLIP_WEIGHTS = {"lambda_structxlip_global": 0.5, "lambda_structxlip_local": 0.1, "lambda_structxlip_consistency": 0.05}
STRUCTURE_CLIP_SETTINGS = {"lambda_structure_clip_margin": 1.0, "lambda_structure_clip_hinge": 1.0, "use_knowledge_encoder": True}
OBJECTIVE_SETS = {
    # name: (run folder, changes to the recipe)
    "CLIP": ("objectives_clip", {"baseline": "clip"}),
    "SLIP": ("objectives_slip", {"baseline": "slip"}),
    "StructXLIP": ("objectives_structxlip", {"baseline": "clip", **STRUCTXLIP_WEIGHTS}),
    "SLIP + StructXLIP": ("objectives_slip_structxlip", {"baseline": "slip", **STRUCTXLIP_WEIGHTS}),
    "SLIP + Structure-CLIP": ("objectives_slip_structure_clip", {"baseline": "slip", **STRUCTURE_CLIP_SETTINGS}),
    "SLIP + StructXLIP + Structure-CLIP": (
        "objectives_all", {"baseline": "slip", **STRUCTXLIP_WEIGHTS, **STRUCTURE_CLIP_SETTINGS}
    ),
}
TEMPORAL_VARIANTS = {
    # name: (run folder, changes to the recipe); every row trains on the edges before the cut
    "CLIP": ("temporal_clip", {"baseline": "clip"}),
    "SLIP": ("temporal_slip", {"baseline": "slip"}),
    "SLIP, recency-decayed positives": ("temporal_slip_decay", {"baseline": "slip", "positive_recency": "decay"}),
    "SLIP, recency window": ("temporal_slip_window", {"baseline": "slip", "positive_recency": "window"}),
    "SLIP, count-weighted positives": ("temporal_slip_count", {"baseline": "slip", "positive_count_weighting": "log"}),
}
GRAPH_LOSS_VARIANTS = {
    # name: (run folder, changes to the recipe)
    "CLIP": ("graph_loss_clip", {"baseline": "clip"}),
    "SLIP, loss on Z (paper)": ("graph_loss_z", {"baseline": "slip", "graph_loss_on": "z"}),
    "SLIP, loss on E": ("graph_loss_e", {"baseline": "slip", "graph_loss_on": "e"}),
    "SLIP, loss on Z and E": ("graph_loss_both", {"baseline": "slip", "graph_loss_on": "both"}),
}
TABLES = ("batch_size", "components", "both", "objectives", "temporal", "graph_loss_on")
_COLUMNS = (
    ("i2t", "mrr_i2t", 3), ("t2i", "mrr_t2i", 3), ("Mean", "mrr", 3), ("Med", "median_rank", 1),
    ("Mean rank", "mean_rank", 1), ("@1", "recall_at_1", 3), ("@5", "recall_at_5", 3), ("@10", "recall_at_10", 3),
)


@dataclass
class AblationArguments:
    """What to ablate (the recipe's other arguments are shared by every run)."""

    table: str = field(
        default="components",
        metadata={"help": "'batch_size' (Table 3), 'components' (Table 4), 'both', 'objectives' (one row per "
                  "objective set of OBJECTIVE_SETS: CLIP, SLIP, StructXLIP, Structure-CLIP and their combinations), "
                  "'temporal' (a temporal split, --temporal_cut, default 0.8: CLIP, SLIP and SLIP with recency- and "
                  "count-weighted positives, scored on the relations that appear after the cut), or 'graph_loss_on' "
                  "(CLIP, and SLIP with the structural loss on Z, on the CLIP embeddings E, or both)."},
    )
    equal_steps: int | None = field(
        default=None,
        metadata={"help": "Table 3: train every batch size for this many optimizer steps (instead of the recipe's epochs), "
                  "so that a larger batch is not also a shorter training."},
    )
    lr_scaling: str = field(
        default="none",
        metadata={"help": "Table 3: scale the learning rates (CLIP and graph head) with the batch size b against the "
                  "recipe's batch b0: 'none', 'linear' (x b / b0) or 'sqrt' (x sqrt(b / b0))."},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds per row."})
    batch_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024], metadata={"help": "Table 3's batch sizes."})
    objective_sets: list[str] = field(
        default_factory=lambda: list(OBJECTIVE_SETS), metadata={"help": "Rows of the objectives table (names of OBJECTIVE_SETS)."}
    )
    aro_dir: str | None = field(
        default=None, metadata={"help": "Also score every run of the objectives table on this ARO-format folder."}
    )
    reuse_runs: bool = field(
        default=True,
        metadata={"help": "Read back the runs already finished in output_dir and resume interrupted ones from their "
                  "newest checkpoint, so a stopped table picks up where it stopped (a folder holding a run with other "
                  "settings is an error). False trains every run from scratch."},
    )


def _cell(values: list[float], digits: int) -> str:
    return f"{np.mean(values):.{digits}f}" + (f" ± {np.std(values):.{digits}f}" if len(values) > 1 else "")


def _shared(values: list, digits: int) -> str:
    """A setting of a row's runs: one value when they agree (steps, epochs), mean ± std otherwise, "-" if unknown."""
    if any(v is None for v in values):
        return "-"
    return f"{values[0]:.{digits}f}" if np.allclose(values, values[0]) else _cell(values, digits)


def _aro_cell(values: list[float], column: str) -> str:
    """An ARO accuracy over seeds; a macro average that no run could compute says why instead of `nan`."""
    numbers = [v for v in values if not np.isnan(v)]
    if not numbers:
        return macro_unavailable(column.rsplit(" ", 1)[0])
    return _cell(numbers, 3) + (f" ({len(values) - len(numbers)} runs n/a)" if len(numbers) < len(values) else "")


def _row(prefix: list[str], results: list[dict]) -> str:
    cells = [_cell([r["retrieval"][key] for r in results], digits) for _, key, digits in _COLUMNS]
    return "| " + " | ".join(prefix + cells) + " |"


def batch_size_table(rows: dict[tuple[int, str], list[dict]]) -> str:
    """Table 3: `rows[(batch_size, "w/o G" | "w/ G")]` -> markdown, with each row's optimizer steps, epochs and
    learning rate (as the runs recorded them in `schedule`)."""
    header = "| Batch | Graph | Steps | Epochs | LR | MRR " + " | ".join(name for name, _, _ in _COLUMNS) + " |"
    lines = [header, "|---:|---|---:|---:|---:|" + "---:|" * len(_COLUMNS)]
    for (size, graph), results in rows.items():
        schedule = [r.get("schedule", {}) for r in results]
        steps = _shared([s.get("steps") for s in schedule], 0)
        epochs = _shared([s.get("epochs") for s in schedule], 2)
        rate = f"{schedule[0]['learning_rate']:.3g}" if "learning_rate" in schedule[0] else "-"
        lines.append(_row([f"{size:,}", graph, steps, epochs, rate], results))
    return "\n".join(lines)


def scaled_learning_rate(rate: float, batch_size: int, reference: int, scaling: str) -> float:
    """`rate` for `batch_size` when `reference` is the recipe's batch: unchanged, x b / b0 or x sqrt(b / b0)."""
    if scaling not in ("none", "linear", "sqrt"):
        raise ValueError(f"lr_scaling must be 'none', 'linear' or 'sqrt', got {scaling!r}.")
    ratio = batch_size / reference
    return rate * {"none": 1.0, "linear": ratio, "sqrt": ratio**0.5}[scaling]


def table3_caption(ablation: "AblationArguments", reference: int, epochs: float) -> str:
    """What Table 3's rows share: the training length, and how the learning rate follows the batch."""
    length = (f"every row trains {ablation.equal_steps} optimizer steps (equal steps; epochs differ)" if ablation.equal_steps
              else f"every row trains {epochs:g} epochs (so a larger batch also means fewer steps)")
    rates = {"none": "the recipe's learning rates at every batch size",
             "linear": f"learning rates scaled linearly with the batch: lr(b) = lr x b / {reference}",
             "sqrt": f"learning rates scaled with the square root of the batch: lr(b) = lr x sqrt(b / {reference})"}
    return f"{length}; {rates[ablation.lr_scaling]}."


def components_table(rows: dict[str, list[dict]]) -> str:
    """Table 4: `rows[variant]` -> markdown with the G / Aux / DLR marks."""
    header = "| Variant | G | Aux | DLR | MRR " + " | ".join(name for name, _, _ in _COLUMNS) + " |"
    lines = [header, "|---|:-:|:-:|:-:|" + "---:|" * len(_COLUMNS)]
    for name, results in rows.items():
        _, baseline, aux, dlr = COMPONENT_VARIANTS[name]
        marks = ["✓" if baseline == "slip" else "-", "✓" if aux else "-", "✓" if dlr else "-"]
        lines.append(_row([name, *marks], results))
    return "\n".join(lines)


def objectives_table(rows: dict[str, list[dict]]) -> str:
    """One row per objective set: `rows[name]` -> markdown with the enabled objectives, and the ARO-format
    benchmark's macro accuracies when the runs were scored on one."""
    tasks = sorted({task for results in rows.values() for task in results[0].get("aro", {})})
    header = "| Objectives | Enabled | MRR " + " | ".join(name for name, _, _ in _COLUMNS) + "".join(f" | {t}" for t in tasks) + " |"
    lines = [header, "|---|---|" + "---:|" * (len(_COLUMNS) + len(tasks))]
    for name, results in rows.items():
        row = _row([name, ", ".join(results[0].get("objectives", []))], results)
        cells = [_aro_cell([r["aro"][task] for r in results], task) for task in tasks]
        lines.append(row + "".join(f" {cell} |" for cell in cells))
    return "\n".join(lines)


def temporal_table(rows: dict[str, list[dict]]) -> str:
    """One row per temporal variant: same-item MRR, then link prediction of the new relations (MRR and Hits@50
    per embedding) and related items (text MRR)."""
    kinds: list[str] = []
    for results in rows.values():
        kinds += [k for k in results[0].get("link_prediction", {}) if k not in kinds]
    header = "| Variant | Same-item MRR | " + " | ".join(f"Link {k} MRR | Link {k} H@50" for k in kinds) + " | Related text MRR |"
    lines = [header, "|---|---:|" + "---:|---:|" * len(kinds) + "---:|"]
    for name, results in rows.items():
        cells = [_cell([r["retrieval"]["mrr"] for r in results], 3)]
        for kind in kinds:
            present = [r["link_prediction"][kind] for r in results
                       if kind in r.get("link_prediction", {}) and not r["link_prediction"][kind].get("collapsed")]
            cells += [_cell([p["mrr"] for p in present], 3), _cell([p["hits_at_50"] for p in present], 3)] if present else ["-", "-"]
        cells.append(_cell([r["related_items"]["text"]["mrr"] for r in results], 3))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run(model_args, data_args, training_args, out: Path, label: str, seed: int, reuse: bool, **changes) -> dict:
    """One row's run for one seed in `out/label/seed<seed>`; with `reuse`, a finished run there is read back
    and an interrupted one resumes from its newest checkpoint (`slip_hf.run_folder`)."""
    model_changes = {k: v for k, v in changes.items() if k in {f.name for f in dataclasses.fields(ModelArguments)}}
    training_changes = {k: v for k, v in changes.items() if k not in model_changes}
    run_dir = out / label / f"seed{seed}"
    args = dataclasses.replace(training_args, output_dir=str(run_dir), seed=seed, data_seed=seed, **training_changes)
    model_args, data_args = dataclasses.replace(model_args, **model_changes), dataclasses.replace(data_args, plots=False)
    status = run_status(run_dir, run_settings(model_args, data_args, args, args.world_size)) if reuse else "new"
    if status == "finished":
        run = finished_run(run_dir, data_args.test_split)
        test, steps, epochs = run["test"], run["steps"], run["epochs"]
        objectives = enabled_objectives(AutoConfig.from_pretrained(run_dir))
        logger.info("%s: reusing the finished run in %s", label, run_dir)
    else:
        if status == "interrupted":
            args = dataclasses.replace(args, resume_from_checkpoint=True)
            logger.info("%s: resuming the interrupted run in %s", label, run_dir)
        result = run_experiment(model_args, data_args, args, run_name=label)
        test, steps, epochs, objectives = result["test"], result["steps"], result["train"].get("epoch"), result["objectives"]
    schedule = {"steps": steps, "epochs": epochs, "learning_rate": args.learning_rate,
                "graph_learning_rate": args.graph_learning_rate, "batch_size": args.per_device_train_batch_size}
    environment = json.loads((run_dir / SETTINGS_FILE).read_text()).get("environment", {})  # the leaderboard's footnote
    return {**test, "objectives": objectives, "schedule": schedule, "run_dir": str(run_dir), "run_status": status,
            "_environment": environment}


def _with_aro(result: dict, run_dir: Path, aro_dir: str | None, max_length: int) -> dict:
    if aro_dir:
        result["aro"] = aro_columns(str(run_dir), aro_dir, max_length)
    return result


def run_ablation(
    ablation: AblationArguments, model_args: ModelArguments, data_args: DataArguments, training_args: SlipTrainingArguments
) -> dict[str, Any]:
    """Run the requested tables; returns their markdown and raw results and writes `ablation_results.{json,md}`,
    and each table's leaderboard (`leaderboard.{md,png,json}`, in a folder per table when there are two)."""
    if ablation.table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(repr(t) for t in TABLES)}, got {ablation.table!r}.")
    if ablation.equal_steps is not None and ablation.equal_steps < 1:
        raise ValueError(f"equal_steps must be >= 1, got {ablation.equal_steps}.")
    scaled_learning_rate(1.0, 1, 1, ablation.lr_scaling)  # rejects an unknown scaling before any run
    out = Path(training_args.output_dir)
    report, raw, boards = [], {}, {}

    def runs(label: str, data=data_args, **changes) -> list[dict]:
        return [_run(model_args, data, training_args, out, label, seed, ablation.reuse_runs, **changes) for seed in ablation.seeds]

    if ablation.table in ("batch_size", "both"):
        rows: dict[tuple[int, str], list[dict]] = {}
        reference = training_args.per_device_train_batch_size
        for size in ablation.batch_sizes:
            schedule = {"per_device_train_batch_size": size,
                        "learning_rate": scaled_learning_rate(training_args.learning_rate, size, reference, ablation.lr_scaling),
                        "graph_learning_rate": scaled_learning_rate(training_args.graph_learning_rate, size, reference,
                                                                    ablation.lr_scaling)}
            if ablation.equal_steps:
                schedule["max_steps"] = ablation.equal_steps
            for graph, baseline in (("w/o G", "clip"), ("w/ G", "slip")):
                rows[(size, graph)] = runs(f"batch{size}-{'graph' if baseline == 'slip' else 'nograph'}", baseline=baseline, **schedule)
        caption = table3_caption(ablation, reference, training_args.num_train_epochs)
        report.append(f"## Batch size (Table 3)\n\n{caption}\n\n" + batch_size_table(rows))
        raw["batch_size"] = {f"{size} {graph}": results for (size, graph), results in rows.items()}
        boards["batch_size"] = {f"batch {size:,}, {graph}": results for (size, graph), results in rows.items()}
    if ablation.table in ("components", "both"):
        rows_c: dict[str, list[dict]] = {}
        for name, (label, baseline, aux, dlr) in COMPONENT_VARIANTS.items():
            decay = training_args.layer_lr_decay if dlr else 1.0
            rows_c[name] = runs(label, baseline=baseline, aux_head=aux, layer_lr_decay=decay)
        report.append(f"## Components at batch {training_args.per_device_train_batch_size} (Table 4)\n\n" + components_table(rows_c))
        raw["components"] = boards["components"] = rows_c
    if ablation.table == "objectives":
        unknown = set(ablation.objective_sets) - set(OBJECTIVE_SETS)
        if unknown:
            raise ValueError(f"unknown objective sets {sorted(unknown)}; choose from {list(OBJECTIVE_SETS)}.")
        rows_o = {
            name: [_with_aro(result, Path(result["run_dir"]), ablation.aro_dir, data_args.max_text_length or 77)
                   for result in runs(label, **changes)]
            for name, (label, changes) in OBJECTIVE_SETS.items() if name in ablation.objective_sets
        }
        report.append(f"## Objectives at batch {training_args.per_device_train_batch_size}\n\n" + objectives_table(rows_o))
        raw["objectives"] = boards["objectives"] = rows_o
    if ablation.table == "temporal":
        temporal_data = dataclasses.replace(data_args, temporal_cut=data_args.temporal_cut or "0.8")
        rows_t = {name: runs(label, data=temporal_data, **changes) for name, (label, changes) in TEMPORAL_VARIANTS.items()}
        report.append(
            f"## Temporal split at {temporal_data.temporal_cut} (train on the relations before the cut, predict the new ones)"
            f"\n\n" + temporal_table(rows_t)
        )
        raw["temporal"] = boards["temporal"] = rows_t
    if ablation.table == "graph_loss_on":
        rows_g = {name: runs(label, **changes) for name, (label, changes) in GRAPH_LOSS_VARIANTS.items()}
        report.append(f"## Structural loss on Z, on E or both, at batch {training_args.per_device_train_batch_size}\n\n"
                      + leaderboard_table(rows_g))
        raw["graph_loss_on"] = boards["graph_loss_on"] = rows_g
    out.mkdir(parents=True, exist_ok=True)
    for name, rows_b in boards.items():  # each table ends with the leaderboard of its rows
        markdown, _, _ = write_leaderboard(rows_b, out / name if len(boards) > 1 else out, f"Leaderboard: {name}")
        report.append(markdown.rstrip("\n"))
    statuses = [result["run_status"] for rows_b in boards.values() for results in rows_b.values() for result in results]
    report.append(f"{len(statuses)} runs: {statuses.count('new')} trained, {statuses.count('interrupted')} resumed from "
                  f"their newest checkpoint, {statuses.count('finished')} read back (finished earlier in {out}).")
    markdown = "\n\n".join(report) + "\n"
    (out / "ablation_results.md").write_text(markdown)
    (out / "ablation_results.json").write_text(json.dumps(raw, indent=1))
    return {"markdown": markdown, "results": raw}


__all__ = [
    "COMPONENT_VARIANTS",
    "GRAPH_LOSS_VARIANTS",
    "OBJECTIVE_SETS",
    "TEMPORAL_VARIANTS",
    "AblationArguments",
    "batch_size_table",
    "components_table",
    "objectives_table",
    "run_ablation",
    "scaled_learning_rate",
    "temporal_table",
]
