"""One table of evidence: every method's headline number on every task, mean ± std over its seeds.

A *run* is the test-split results of one training run (`test_results.json` of a run folder, or what
`run_experiment` returns). Runs are grouped into *methods*: [`read_runs`] groups run folders by the settings
each recorded in `run_config.json` (everything but the seed and the folder), so the seeds of one setting form
one row. [`leaderboard_table`] then writes one column per task, best mean in bold:

| task | column | from the run's results |
|---|---|---|
| same-item retrieval (Table 2) | MRR, R@1 | `retrieval` |
| related items | MRR of the mean embedding | `related_items.mean` |
| link prediction | MRR of the mean embedding, of Z and of the GraphSAGE probe | `link_prediction` |
| classification | zero-shot and 5-shot accuracy | `zero_shot`, `few_shot` |
| ARO (when scored) | macro accuracy per task | `aro` |

A number a run does not have (Z for CLIP, a probe that collapsed, ARO's macro without a group of 25 cases)
is never averaged in: the cell says what is missing. Each run folder's environment (versions and hardware,
`slip_hf.environment`) goes into `leaderboard.json`, and the table gets a footnote naming what differs when
its runs came from different versions or machines.
"""

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..environment import describe_environment, environment_differences
from ..run_folder import SETTINGS_FILE, read_test_results, results_file
from .aro import macro_unavailable

HEADLINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Same-item MRR", ("retrieval", "mrr")),
    ("Same-item R@1", ("retrieval", "recall_at_1")),
    ("Related MRR (mean)", ("related_items", "mean", "mrr")),
    ("Link MRR (mean)", ("link_prediction", "mean", "mrr")),
    ("Link MRR (Z)", ("link_prediction", "Z", "mrr")),
    ("Link MRR (probe)", ("link_prediction", "probe", "mrr")),
    ("Zero-shot acc", ("zero_shot", "accuracy")),
    ("5-shot acc", ("few_shot", "5shot_accuracy")),
)
"""Column name and the path of its number in a run's results; higher is better in every column."""

# Settings that differ between the seeds of one method, or only name where a run was written.
_PER_RUN_SETTINGS = {"seed", "data_seed", "run_name", "output_dir", "logging_dir", "resume_from_checkpoint", "hub_model_id"}


def _lookup(results: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def headline_values(results: Mapping[str, Any]) -> dict[str, float | str | None]:
    """`{column: value}` for one run: a float, `"collapsed"` for a link probe whose scores were constant, `"n/a"`
    for ARO's macro without a group of enough cases, or `None` when the run has no such number."""
    values: dict[str, float | str | None] = {}
    for column, path in HEADLINES:
        value = _lookup(results, path)
        if value is None and path[0] == "link_prediction" and (_lookup(results, path[:2]) or {}).get("collapsed"):
            value = "collapsed"
        values[column] = value
    aro = results.get("aro") or {}  # {"<task> macro": accuracy, "<task> all": accuracy}, as the ablation records it
    for column in sorted(c for c in aro if c.endswith(" macro")):
        macro = aro[column]
        values[column] = "n/a" if macro is None or (isinstance(macro, float) and math.isnan(macro)) else macro
    return values


def _columns(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
    """The headline columns that some run has, in `HEADLINES` order, then the ARO columns."""
    present: set[str] = set()
    for runs in rows.values():
        for run in runs:
            present |= {c for c, v in headline_values(run).items() if v is not None}
    order = [c for c, _ in HEADLINES]
    return [c for c in order if c in present] + sorted(present - set(order))


def leaderboard_summary(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """`{method: {column: {"mean", "std", "n", "missing"}}}`: the statistics behind the table and the figure.
    `n` counts the seeds that have a number; `missing` says why the others do not ("collapsed", "n/a")."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for method, runs in rows.items():
        per_run = [headline_values(run) for run in runs]
        summary[method] = {}
        for column in _columns(rows):
            numbers = [v[column] for v in per_run if isinstance(v.get(column), (int, float))]
            reasons = sorted({v[column] for v in per_run if isinstance(v.get(column), str)})
            summary[method][column] = {
                "mean": float(np.mean(numbers)) if numbers else None, "std": float(np.std(numbers)) if numbers else None,
                "n": len(numbers), "runs": len(runs), "missing": reasons,
            }
            if "n/a" in reasons:  # ARO's macro without a large enough group: the overall accuracy instead
                overall = [(run.get("aro") or {}).get(column.replace(" macro", " all")) for run in runs]
                summary[method][column]["overall"] = float(np.mean([v for v in overall if v is not None] or [np.nan]))
    return summary


def _cell(column: str, stats: Mapping[str, Any], best: bool) -> str:
    if stats["mean"] is None:
        if "collapsed" in stats["missing"]:
            return "probe collapsed (constant scores)"
        if "n/a" in stats["missing"]:
            return f"{macro_unavailable(column.removesuffix(' macro'))[:-1]}; overall {stats['overall']:.3f})"
        return "-"
    text = f"{stats['mean']:.3f}" + (f" ± {stats['std']:.3f}" if stats["n"] > 1 else "")
    text = f"**{text}**" if best else text
    if stats["n"] < stats["runs"]:
        text += f" ({stats['runs'] - stats['n']} of {stats['runs']} {'/'.join(stats['missing']) or 'missing'})"
    return text


def leaderboard_table(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Markdown: one row per method (`rows[method]` = its runs' results), one column per headline number,
    mean ± std over the runs, the best mean of each column in bold."""
    summary = leaderboard_summary(rows)
    columns = _columns(rows)
    means = {c: [s[c]["mean"] for s in summary.values() if s[c]["mean"] is not None] for c in columns}
    # the best mean in bold, unless every method has the same one
    best = {c: max(m) if len(m) > 1 and not np.allclose(m, m[0]) else None for c, m in means.items()}
    lines = ["| Method | Seeds | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for method, stats in summary.items():
        cells = [_cell(c, stats[c], None not in (stats[c]["mean"], best[c]) and bool(np.isclose(stats[c]["mean"], best[c])))
                 for c in columns]
        lines.append(f"| {method} | {len(rows[method])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_leaderboard(rows: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Path:
    """Small multiples: one panel per headline number, with its own scale (MRRs near 0.1 and accuracies near 1
    would flatten each other on one axis), one bar per method in the same colour in every panel, ± std error
    bars, and the value over each bar; a missing number says why (none, collapsed, n/a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = leaderboard_summary(rows)
    columns = _columns(rows)
    methods = list(summary)
    ncols = min(4, len(columns))
    nrows = -(-len(columns) // ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows + 0.4 + 0.25 * ((len(methods) + 2) // 3)),
                                squeeze=False)
    colours = plt.get_cmap("tab10").colors
    positions = np.arange(len(methods))
    for panel, column in zip(axes.flat, columns):
        stats = [summary[method][column] for method in methods]
        means = [s["mean"] if s["mean"] is not None else 0.0 for s in stats]
        errors = [s["std"] if s["std"] is not None else 0.0 for s in stats]
        bars = panel.bar(positions, means, 0.75, yerr=errors, capsize=3, color=[colours[i % 10] for i in positions])
        top = max([m + e for m, e in zip(means, errors)] + [1e-3])
        for bar, s, mean, error in zip(bars, stats, means, errors):
            if s["mean"] is None:
                why = "collapsed" if "collapsed" in s["missing"] else "n/a" if "n/a" in s["missing"] else "none"
                panel.text(bar.get_x() + bar.get_width() / 2, 0.02 * top, why, rotation=90, ha="center", va="bottom", fontsize=7)
            else:
                panel.text(bar.get_x() + bar.get_width() / 2, mean + error + 0.02 * top, f"{mean:.3f}", ha="center", va="bottom",
                           fontsize=6.5, rotation=90 if len(methods) > 4 else 0)
        panel.set_title(column, fontsize=9)
        panel.set_ylim(0, top * (1.35 if len(methods) > 4 else 1.2))
        panel.set_xticks([])
        panel.grid(axis="y", alpha=0.3)
        panel.tick_params(axis="y", labelsize=7)
    for panel in list(axes.flat)[len(columns):]:
        panel.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % 10]) for i in positions]
    labels = [f"{method} ({len(rows[method])} seed{'s' if len(rows[method]) != 1 else ''})" for method in methods]
    figure.legend(handles, labels, loc="lower center", ncol=min(len(methods), 3), fontsize=8, frameon=False)
    figure.suptitle("slip_hf leaderboard: mean ± std over seeds (higher is better in every panel)", fontsize=10)
    figure.tight_layout(rect=(0, 0.05 + 0.03 * ((len(methods) + 2) // 3), 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def run_environments(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """`{method: [environment, ...]}`: the distinct environments its runs recorded (`{}` for a run without one)."""
    distinct: dict[str, list[dict[str, Any]]] = {}
    for method, runs in rows.items():
        for run in runs:
            environment = run.get("_environment") or {}
            if environment not in distinct.setdefault(method, []):
                distinct[method].append(environment)
    return distinct


def environment_footnote(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """A markdown footnote when the runs came from different versions or hardware (naming what differs), else
    the one environment they share; empty when no run recorded one."""
    environments = [environment for found in run_environments(rows).values() for environment in found]
    unique = [e for i, e in enumerate(environments) if e not in environments[:i]]
    if not any(unique):
        return ""
    differing = environment_differences(unique)
    if differing:
        return (f"Note: these runs came from different environments (differing: {', '.join(differing)}); "
                f"see `leaderboard.json` for each method's.")
    return f"All runs: {describe_environment(unique[0])}."


def write_leaderboard(rows: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | os.PathLike,
                      title: str = "Leaderboard") -> tuple[str, Path, Path]:
    """`leaderboard.md`, `leaderboard.png` and `leaderboard.json` in `out_dir`; returns the markdown and the two
    paths. The JSON holds `{"methods": leaderboard_summary(rows), "environments": run_environments(rows)}`.

    Args:
        rows (`Mapping[str, Sequence[Mapping]]`): each method's runs' test results (one per seed), as
            [`read_runs`] returns them or as `test_results.json` holds them.
        out_dir (`str | os.PathLike`): the folder to write (created if missing).
        title (`str`, *optional*, defaults to `"Leaderboard"`): the markdown's heading.

    Returns:
        tuple[str, Path, Path]: the markdown (a table of every method on every task, mean ± std over seeds, and a
            footnote where the runs' environments differ), the `.md` path and the `.png` path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    footnote = environment_footnote(rows)
    markdown = f"## {title}\n\n{leaderboard_table(rows)}\n" + (f"\n{footnote}\n" if footnote else "")
    markdown_path, figure_path = out_dir / "leaderboard.md", out_dir / "leaderboard.png"
    markdown_path.write_text(markdown)
    summary = {"methods": leaderboard_summary(rows), "environments": run_environments(rows)}
    (out_dir / "leaderboard.json").write_text(json.dumps(summary, indent=1))
    plot_leaderboard(rows, figure_path)
    return markdown, markdown_path, figure_path


def _settings(config: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A run's recorded settings without those that differ between seeds or only name its folder."""
    flat = {**config.get("model", {}), **config.get("data", {}), **config.get("training", {})}
    text = str(folder)
    return {k: v for k, v in flat.items()
            if k not in _PER_RUN_SETTINGS and not (isinstance(v, str) and text and text in v)}


def read_run(folder: str | os.PathLike) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """`(name, settings, test results)` of a run folder written by `run_slip.py` / `slip-hf train` / `ablate`; the
    results carry the folder as `_folder` and what the run ran on as `_environment` (`{}` if unrecorded)."""
    folder = Path(folder)
    config_file = folder / SETTINGS_FILE
    for path in (results_file(folder), config_file):
        if not path.is_file():
            raise FileNotFoundError(f"run {folder}: no {path.name} (a folder written by run_slip.py, slip-hf train or ablate).")
    name, results = read_test_results(folder)
    config = json.loads(config_file.read_text())
    return name, _settings(config, folder.resolve()), {**results, "_folder": str(folder), "_environment": config.get("environment", {})}


def read_runs(folders: Sequence[str | os.PathLike]) -> dict[str, list[dict[str, Any]]]:
    """Run folders grouped into methods: runs whose recorded settings agree (all but the seed) form one method,
    named by the run's name (`SLIP`, `CLIP (fine-tuned)`, an ablation row's label) plus, where several methods
    share a name, the settings that tell them apart.

    Args:
        folders (`Sequence[str | os.PathLike]`): run folders written by `run_slip.py` or `slip-hf ablate` (each with
            `run_config.json` and `test_results.json`).

    Returns:
        dict[str, list[dict]]: each method's label and its runs' test results (with `_environment`), one per seed,
            as [`write_leaderboard`] takes them.

    Raises:
        FileNotFoundError: for a folder that is not a finished run (one line naming the missing file).
    """
    groups: dict[str, tuple[str, dict, list[dict]]] = {}
    for folder in folders:
        name, settings, results = read_run(folder)
        key = json.dumps(settings, sort_keys=True, default=str)
        groups.setdefault(key, (name, settings, []))[2].append(results)
    by_name: dict[str, list[tuple[dict, list[dict]]]] = {}
    for name, settings, results in groups.values():
        by_name.setdefault(name, []).append((settings, results))
    rows: dict[str, list[dict[str, Any]]] = {}
    for name, members in by_name.items():
        differing = sorted({k for s, _ in members for k in s if len({json.dumps(m.get(k), default=str) for m, _ in members}) > 1})
        for settings, results in members:
            label = name if len(members) == 1 else f"{name} ({', '.join(f'{k}={settings.get(k)}' for k in differing[:3])})"
            rows[label] = results
    return rows


__all__ = ["HEADLINES", "environment_footnote", "headline_values", "leaderboard_summary", "leaderboard_table",
           "plot_leaderboard", "read_run", "read_runs", "run_environments", "write_leaderboard"]
