"""A run folder: what [`run_experiment`] records in it, and whether a later run may reuse or resume it.

A run writes, in this order:

1. `run_config.json`: its settings (model, data and training arguments, world size) and what it runs on (the
   versions of the stack, the processor and GPUs: `slip_hf.environment`), before training starts;
2. `checkpoint-*`: the Trainer's checkpoints while it trains, each renamed into place whole
   (`slip_hf.checkpoints`); a folder left incomplete by a kill does not count;
3. `trainer_state.json`: the Trainer's final state (steps, epochs, log), after training;
4. `<test split>_results.json` (`test_results.json`): the test metrics, last.

So a folder with test results holds a *finished* run, and a folder with checkpoints but no test results an
*interrupted* one, which resumes from its newest checkpoint. `slip-hf ablate` uses this: a table interrupted
after some of its runs picks up where it stopped, and re-running a finished table only rebuilds its tables.
A folder whose recorded settings differ from the run's is never reused: that is an error naming the settings.
"""

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from .checkpoints import last_complete_checkpoint
from .environment import run_environment

SETTINGS_FILE = "run_config.json"
STATE_FILE = "trainer_state.json"

RESULT_NEUTRAL_SETTINGS = frozenset({
    "output_dir", "logging_dir", "run_name", "resume_from_checkpoint", "report_to", "disable_tqdm", "plots",
    "push_to_hub", "hub_model_id", "hub_token", "hub_private_repo", "hub_strategy", "logs_to", "save_on_signal",
})
"""Settings that name where or how a run reports (or stops), not what it computes: they may differ between a run and
the folder it reuses."""

SETTINGS_ADDED_SINCE_0_3 = {"graph_loss_form": "auto"}
"""Settings that a run folder of slip_hf 0.3 does not record, with the value that computes what 0.3 computed: a
folder without them is the same run as one with these values."""


def results_file(folder: str | os.PathLike, split: str = "test") -> Path:
    """Where a run writes the metrics of its test split."""
    return Path(folder) / f"{split}_results.json"


def read_test_results(folder: str | os.PathLike, split: str = "test") -> tuple[str, dict[str, Any]]:
    """`(run name, test metrics)` from the results file of a run folder."""
    name, runs = next(iter(json.loads(results_file(folder, split).read_text()).items()))
    return name, runs[0]


def run_settings(model_args: Any, data_args: Any, training_args: Any, world_size: int) -> dict[str, Any]:
    """The settings a run records in `run_config.json`, as they read back from JSON, with the environment it runs
    in (`"environment"`: versions and hardware, which never stop a folder from being reused)."""
    settings = {"model": asdict(model_args), "data": asdict(data_args), "training": training_args.to_dict(),
                "world_size": world_size, "environment": run_environment(world_size)}
    return json.loads(json.dumps(settings, default=str))


def changed_settings(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`["name: recorded → current", ...]` for every setting that changes what a run computes."""
    changes = []
    for section in ("model", "data", "training"):
        old, new = recorded.get(section, {}), current.get(section, {})
        for key in sorted(set(old) | set(new)):
            unset = SETTINGS_ADDED_SINCE_0_3.get(key, "unset")
            if key not in RESULT_NEUTRAL_SETTINGS and old.get(key, unset) != new.get(key, unset):
                changes.append(f"{key}: {old.get(key, unset)!r} → {new.get(key, unset)!r}")
    if recorded.get("world_size") != current.get("world_size"):
        changes.append(f"world_size: {recorded.get('world_size')!r} → {current.get('world_size')!r}")
    return changes


def run_status(folder: str | os.PathLike, settings: dict[str, Any]) -> Literal["new", "interrupted", "finished"]:
    """Whether `folder` is free for a run with `settings` (`"new"`), holds the same run stopped before its test
    results (`"interrupted"`: resume from the newest checkpoint), or holds it finished (`"finished"`).

    Raises `ValueError` when the folder holds a run with other settings, or checkpoints whose settings were
    never recorded.
    """
    folder = Path(folder)
    finished = results_file(folder, settings["data"]["test_split"]).is_file()
    checkpoint = last_complete_checkpoint(folder)
    if not finished and checkpoint is None:
        return "new"
    if not (folder / SETTINGS_FILE).is_file():
        raise ValueError(f"{folder} holds a run without {SETTINGS_FILE} (its settings are unknown); pass another "
                         f"--output_dir, or --reuse_runs False to train it again.")
    changes = changed_settings(json.loads((folder / SETTINGS_FILE).read_text()), settings)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise ValueError(f"{folder} holds a run with other settings ({shown}); pass another --output_dir, or "
                         f"--reuse_runs False to train it again.")
    if finished and not (folder / STATE_FILE).is_file():
        raise ValueError(f"{folder} holds a finished run without {STATE_FILE} (written by slip_hf < 0.2.1); pass "
                         f"another --output_dir, or --reuse_runs False to train it again.")
    return "finished" if finished else "interrupted"


def finished_run(folder: str | os.PathLike, split: str = "test") -> dict[str, Any]:
    """`{"name", "test", "steps", "epochs"}` of a finished run folder."""
    name, test = read_test_results(folder, split)
    state = json.loads((Path(folder) / STATE_FILE).read_text())
    return {"name": name, "test": test, "steps": state["global_step"], "epochs": state["epoch"]}


__all__ = ["RESULT_NEUTRAL_SETTINGS", "SETTINGS_FILE", "STATE_FILE", "changed_settings", "finished_run", "read_test_results",
           "results_file", "run_settings", "run_status"]
