"""The paper's ablations, several seeds each, printed in its layout with mean ± std:

* Table 3, batch size: for each batch size, the CLIP fine-tuning baseline ("w/o G") and SLIP ("w/ G");
* Table 4, components at one batch size: CLIP fine-tune; + Graph only; + Graph + Aux; + Graph + Aux without
  discriminative learning rates (layer decay 1.0);
* temporal: a temporal split (train on the co-purchases before the cut, predict the ones after it): CLIP,
  SLIP and SLIP with recency- or count-weighted positives (`slip_hf.positive_weights`);
* objectives: one row per set of objectives (`slip_hf.objectives`): CLIP, SLIP, StructXLIP, SLIP +
  StructXLIP, SLIP + Structure-CLIP and all three, with the references' weights; with `aro_dir`, each run is
  also scored on an ARO-format benchmark (`slip-hf make-structure-benchmark` writes a product one).

Every run is [`run_experiment`] with the same recipe (model, data, schedule) and only the ablated setting
changed, so the rows differ by exactly what their label says.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .experiment import DataArguments, ModelArguments, run_experiment
from .trainer import SlipTrainingArguments

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
                  "objective set of OBJECTIVE_SETS: CLIP, SLIP, StructXLIP, Structure-CLIP and their combinations), or "
                  "'temporal' (a temporal split, --temporal_cut, default 0.8: CLIP, SLIP and SLIP with recency- and "
                  "count-weighted positives, scored on the relations that appear after the cut)."},
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds per row."})
    batch_sizes: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024], metadata={"help": "Table 3's batch sizes."})
    objective_sets: list[str] = field(
        default_factory=lambda: list(OBJECTIVE_SETS), metadata={"help": "Rows of the objectives table (names of OBJECTIVE_SETS)."}
    )
    aro_dir: str | None = field(
        default=None, metadata={"help": "Also score every run of the objectives table on this ARO-format folder."}
    )


def _cell(values: list[float], digits: int) -> str:
    return f"{np.mean(values):.{digits}f}" + (f" ± {np.std(values):.{digits}f}" if len(values) > 1 else "")


def _row(prefix: list[str], results: list[dict]) -> str:
    cells = [_cell([r["retrieval"][key] for r in results], digits) for _, key, digits in _COLUMNS]
    return "| " + " | ".join(prefix + cells) + " |"


def batch_size_table(rows: dict[tuple[int, str], list[dict]]) -> str:
    """Table 3: `rows[(batch_size, "w/o G" | "w/ G")]` -> markdown."""
    header = "| Batch | Graph | MRR " + " | ".join(name for name, _, _ in _COLUMNS) + " |"
    lines = [header, "|---:|---|" + "---:|" * len(_COLUMNS)]
    lines += [_row([f"{size:,}", graph], results) for (size, graph), results in rows.items()]
    return "\n".join(lines)


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
        cells = [_cell([r["aro"][task] for r in results], 3) for task in tasks]
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
            present = [r["link_prediction"][kind] for r in results if kind in r.get("link_prediction", {})]
            cells += [_cell([p["mrr"] for p in present], 3), _cell([p["hits_at_50"] for p in present], 3)] if present else ["-", "-"]
        cells.append(_cell([r["related_items"]["text"]["mrr"] for r in results], 3))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run(model_args, data_args, training_args, out: Path, label: str, seed: int, **changes) -> dict:
    model_changes = {k: v for k, v in changes.items() if k in {f.name for f in dataclasses.fields(ModelArguments)}}
    training_changes = {k: v for k, v in changes.items() if k not in model_changes}
    run_dir = out / label / f"seed{seed}"
    args = dataclasses.replace(training_args, output_dir=str(run_dir), seed=seed, data_seed=seed, **training_changes)
    result = run_experiment(dataclasses.replace(model_args, **model_changes), dataclasses.replace(data_args, plots=False), args, run_name=label)
    return {**result["test"], "objectives": result["objectives"]}


def _with_aro(result: dict, run_dir: Path, aro_dir: str | None, max_length: int) -> dict:
    if aro_dir:
        from .evaluation.aro import evaluate_aro

        scores = evaluate_aro(str(run_dir), aro_dir, max_length=max_length)
        result["aro"] = {f"{task} {kind}": value for task, r in scores.items()
                         for kind, value in (("macro", r.macro_accuracy), ("all", r.accuracy))}
    return result


def run_ablation(
    ablation: AblationArguments, model_args: ModelArguments, data_args: DataArguments, training_args: SlipTrainingArguments
) -> dict[str, Any]:
    """Run the requested tables; returns their markdown and raw results and writes `ablation_results.{json,md}`."""
    if ablation.table not in ("batch_size", "components", "both", "objectives", "temporal"):
        raise ValueError(f"table must be 'batch_size', 'components', 'both', 'objectives' or 'temporal', got {ablation.table!r}.")
    out = Path(training_args.output_dir)
    report, raw = [], {}
    if ablation.table in ("batch_size", "both"):
        rows: dict[tuple[int, str], list[dict]] = {}
        for size in ablation.batch_sizes:
            for graph, baseline in (("w/o G", "clip"), ("w/ G", "slip")):
                label = f"batch{size}-{'graph' if baseline == 'slip' else 'nograph'}"
                rows[(size, graph)] = [
                    _run(model_args, data_args, training_args, out, label, seed, baseline=baseline, per_device_train_batch_size=size)
                    for seed in ablation.seeds
                ]
        report.append("## Batch size (Table 3)\n\n" + batch_size_table(rows))
        raw["batch_size"] = {f"{size} {graph}": results for (size, graph), results in rows.items()}
    if ablation.table in ("components", "both"):
        rows_c: dict[str, list[dict]] = {}
        for name, (label, baseline, aux, dlr) in COMPONENT_VARIANTS.items():
            decay = training_args.layer_lr_decay if dlr else 1.0
            rows_c[name] = [
                _run(model_args, data_args, training_args, out, label, seed, baseline=baseline, aux_head=aux, layer_lr_decay=decay)
                for seed in ablation.seeds
            ]
        report.append(f"## Components at batch {training_args.per_device_train_batch_size} (Table 4)\n\n" + components_table(rows_c))
        raw["components"] = rows_c
    if ablation.table == "objectives":
        unknown = set(ablation.objective_sets) - set(OBJECTIVE_SETS)
        if unknown:
            raise ValueError(f"unknown objective sets {sorted(unknown)}; choose from {list(OBJECTIVE_SETS)}.")
        rows_o = {
            name: [
                _with_aro(_run(model_args, data_args, training_args, out, label, seed, **changes), out / label / f"seed{seed}",
                          ablation.aro_dir, data_args.max_text_length or 77)
                for seed in ablation.seeds
            ]
            for name, (label, changes) in OBJECTIVE_SETS.items() if name in ablation.objective_sets
        }
        report.append(f"## Objectives at batch {training_args.per_device_train_batch_size}\n\n" + objectives_table(rows_o))
        raw["objectives"] = rows_o
    if ablation.table == "temporal":
        temporal_data = dataclasses.replace(data_args, temporal_cut=data_args.temporal_cut or "0.8")
        rows_t = {
            name: [_run(model_args, temporal_data, training_args, out, label, seed, **changes) for seed in ablation.seeds]
            for name, (label, changes) in TEMPORAL_VARIANTS.items()
        }
        report.append(
            f"## Temporal split at {temporal_data.temporal_cut} (train on the relations before the cut, predict the new ones)"
            f"\n\n" + temporal_table(rows_t)
        )
        raw["temporal"] = rows_t
    markdown = "\n\n".join(report) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation_results.md").write_text(markdown)
    (out / "ablation_results.json").write_text(json.dumps(raw, indent=1))
    return {"markdown": markdown, "results": raw}


__all__ = [
    "COMPONENT_VARIANTS",
    "OBJECTIVE_SETS",
    "TEMPORAL_VARIANTS",
    "AblationArguments",
    "batch_size_table",
    "components_table",
    "objectives_table",
    "run_ablation",
    "temporal_table",
]
