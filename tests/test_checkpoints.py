"""Checkpoints that survive a kill at any instant: the paper recipe as written (its 8 data workers, the default
tensor image path, saving and evaluating every epoch, `save_total_limit: 2`, the best model at the end), killed
with SIGKILL at every stage of a save, resumes with `--resume_from_checkpoint True` to the weights of an
uninterrupted run, byte for byte. Checkpoints edited by hand or written by slip_hf 0.2.x are judged by their
files, and a skipped one is one warning line naming the file."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from slip_hf.checkpoints import (
    MANIFEST,
    checkpoint_problem,
    complete_checkpoints,
    file_problem,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPE = ROOT / "training" / "recipes" / "slip_electronics_vitb16.yaml"

# Runs training/run_slip.py as a user does, with one save method patched to SIGKILL the process at KILL_STAGE of
# the save at KILL_STEP (the final save for "final"): no cleanup and no flush, as a pre-empted job dies.
_KILLABLE = """
import os, runpy, signal, sys
from pathlib import Path
from transformers import Trainer, TrainerState
stage, step = os.environ["KILL_STAGE"], int(os.environ.get("KILL_STEP", "0"))
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def checkpointing(trainer, path):
    return trainer.state.global_step == step and "checkpoint-" in str(path)
save_model, save_optimizer, save_state = Trainer.save_model, Trainer._save_optimizer_and_scheduler, TrainerState.save_to_json
def patched_save_model(self, output_dir=None, _internal_call=False):
    if stage == "folder" and checkpointing(self, output_dir):
        os.makedirs(output_dir, exist_ok=True)
        die()
    save_model(self, output_dir, _internal_call)
    if stage == "weights" and checkpointing(self, output_dir):
        die()
    if stage == "final" and not _internal_call:  # the run's model: half of the weights on disk, then the kill
        weights = Path(output_dir) / "model.safetensors"
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
        die()
def patched_save_optimizer(self, output_dir):
    save_optimizer(self, output_dir)
    if stage == "optimizer" and checkpointing(self, output_dir):
        die()
def patched_save_state(self, json_path):
    if stage == "state" and self.global_step == step and "checkpoint-" in json_path:
        die()
    save_state(self, json_path)
Trainer.save_model, Trainer._save_optimizer_and_scheduler = patched_save_model, patched_save_optimizer
TrainerState.save_to_json = patched_save_state
sys.argv = ["run_slip.py", *sys.argv[1:]]
runpy.run_path(os.environ["RUN_SLIP"], run_name="__main__")
"""


def _run(output_dir: Path, recipe_clip: str, dataset: Path, *extra: str, stage: str = "none", step: int = 0):
    """The paper recipe as written; overridden only: the model, the dataset, the folder, 4 steps, the CPU for bf16.
    102 training nodes in batches of 128: one step per epoch, so a checkpoint (and an evaluation) per step."""
    flags = [str(PAPER_RECIPE), "--model_name_or_path", recipe_clip, "--dataset_name", str(dataset),
             "--output_dir", str(output_dir), "--max_steps", "4", "--use_cpu", "True", *extra]
    env = {**os.environ, "KILL_STAGE": stage, "KILL_STEP": str(step), "RUN_SLIP": str(ROOT / "training" / "run_slip.py")}
    return subprocess.run([sys.executable, "-c", _KILLABLE, *flags], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(recipe_clip, graph_dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = _run(out, recipe_clip, graph_dataset_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_uninterrupted_run_writes_whole_checkpoints_with_a_manifest(uninterrupted):
    checkpoints = sorted(uninterrupted.glob("checkpoint-*"))
    assert 1 <= len(checkpoints) <= 3  # save_total_limit 2, plus the best one when it is older
    for folder in checkpoints:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= set(files)
        assert checkpoint_problem(folder) is None
    assert not list(uninterrupted.glob(".partial-*"))
    used = json.loads((uninterrupted / "run_config.json").read_text())
    assert used["data"]["image_pipeline"] == "tensor" and used["training"]["dataloader_num_workers"] == 8


@pytest.mark.parametrize("stage", ["folder", "weights", "optimizer", "state", "final"])
def test_a_kill_at_any_stage_of_a_save_resumes_to_the_uninterrupted_weights(stage, uninterrupted, recipe_clip,
                                                                             graph_dataset_dir, tmp_path):
    out = tmp_path / "run"
    killed = _run(out, recipe_clip, graph_dataset_dir, stage=stage, step=3)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (out / "test_results.json").exists()
    # whatever the stage, every checkpoint that has its final name is whole
    assert all(checkpoint_problem(folder) is None for folder in out.glob("checkpoint-*"))
    if stage == "final":  # every checkpoint was saved
        assert (out / "checkpoint-4").is_dir()
    else:  # the checkpoint being saved never appeared under its name; the one before it is the newest
        assert not (out / "checkpoint-3").exists() and (out / "checkpoint-2").is_dir()
    if stage == "final":  # the half-written weights never reached the run folder
        assert not (out / "model.safetensors").exists() or file_problem(out / "model.safetensors") is None
    resumed = _run(out, recipe_clip, graph_dataset_dir, "--resume_from_checkpoint", "True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _same_weights(out, uninterrupted)  # every tensor, to the last bit
    first, second = (json.loads((run / "test_results.json").read_text()) for run in (uninterrupted, out))
    assert first == second
    assert not list(out.glob(".partial-*"))  # the staging folders of the killed save are gone


def _checkpoint(folder: Path, manifest: bool = True) -> Path:
    """A small whole checkpoint: weights, optimizer, scheduler, RNG state, trainer state."""
    folder.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(folder / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"state": torch.ones(16)}, folder / name)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": int(folder.name.split("-")[1])}))
    if manifest:
        write_manifest(folder)
    return folder


def test_hand_edited_and_legacy_checkpoints_are_judged_by_their_files(tmp_path, caplog):
    whole = _checkpoint(tmp_path / "checkpoint-2")
    legacy = _checkpoint(tmp_path / "checkpoint-4", manifest=False)  # slip_hf 0.2.x: written in place
    truncated = _checkpoint(tmp_path / "checkpoint-6")
    with open(truncated / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    legacy_truncated = _checkpoint(tmp_path / "checkpoint-8", manifest=False)
    with open(legacy_truncated / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    legacy_no_optimizer = _checkpoint(tmp_path / "checkpoint-10", manifest=False)
    (legacy_no_optimizer / "optimizer.pt").unlink()  # would resume with a fresh optimizer: never counts
    legacy_cut_optimizer = _checkpoint(tmp_path / "checkpoint-12", manifest=False)
    data = (legacy_cut_optimizer / "optimizer.pt").read_bytes()
    (legacy_cut_optimizer / "optimizer.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "checkpoint-14").mkdir()  # killed right after the folder was made, by a 0.2.x run
    with caplog.at_level(logging.WARNING, logger="slip_hf.checkpoints"):
        assert complete_checkpoints(tmp_path) == [whole, legacy]
    lines = [record.getMessage() for record in caplog.records]
    size = (whole / "model.safetensors").stat().st_size
    assert lines == [
        f"skipping incomplete checkpoint {truncated}: model.safetensors is truncated (100 of {size} bytes)",
        f"skipping incomplete checkpoint {legacy_truncated}: model.safetensors is truncated (100 of {size} bytes)",
        f"skipping incomplete checkpoint {legacy_no_optimizer}: optimizer.pt is missing",
        f"skipping incomplete checkpoint {legacy_cut_optimizer}: optimizer.pt is truncated or corrupt ({len(data) // 2} bytes)",
        f"skipping incomplete checkpoint {tmp_path / 'checkpoint-14'}: model.safetensors is missing",
    ]


def test_resume_skips_a_hand_truncated_checkpoint_with_one_line_and_an_explicit_one_is_an_error(
        uninterrupted, recipe_clip, graph_dataset_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    for name in ("test_results.json", "model.safetensors"):
        (out / name).unlink()
    newest = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    with open(newest / "model.safetensors", "r+b") as handle:
        handle.truncate(1000)
    explicit = _run(tmp_path / "other", recipe_clip, graph_dataset_dir, "--resume_from_checkpoint", str(newest))
    assert explicit.returncode == 2 and "Traceback" not in explicit.stderr
    assert f"--resume_from_checkpoint {newest}: not a complete checkpoint (model.safetensors is truncated" in explicit.stderr
    resumed = _run(out, recipe_clip, graph_dataset_dir, "--resume_from_checkpoint", "True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    skipped = [line for line in resumed.stderr.splitlines() if "skipping incomplete checkpoint" in line]
    assert len(skipped) == 1 and f"{newest}: model.safetensors is truncated (1000 of" in skipped[0]
    assert _same_weights(out, uninterrupted)  # resumed from the checkpoint before it, to the same weights
