"""Checkpoints that survive a kill at any instant.

`transformers.Trainer` writes the weights, the optimizer, the scheduler, the RNG states and
`trainer_state.json` straight into `checkpoint-N`, and resuming takes the highest N whatever it holds: a job
killed mid-save (a pre-empted GPU, an out-of-memory kill) leaves a folder that stops every later resume until a
person deletes it (transformers issues 35525 and 35782). slip_hf saves differently:

1. [`AtomicCheckpoints`] (mixed into `SlipTrainer`) lets the Trainer write the whole checkpoint into a staging
   folder next to the run's checkpoints (`.partial-checkpoint-N/checkpoint-N`), flushes every file, records
   their names and sizes in `slip_checkpoint.json`, and only then renames the folder to `checkpoint-N`: a
   rename within one file system is atomic, so `checkpoint-N` appears whole or not at all. Under
   `accelerate launch` every process writes its part (its RNG state) first, and the main process alone renames.
   Old checkpoints are rotated (`save_total_limit`) only after the rename, so the last complete checkpoint is
   never deleted in favour of one still being written.
2. Resuming ([`last_complete_checkpoint`]: `--resume_from_checkpoint True`, `slip_hf.run_folder`,
   `slip-hf ablate`) takes the newest *complete* checkpoint and skips the others with one warning line each,
   naming the file that is missing or truncated. A checkpoint with `slip_checkpoint.json` is complete when
   every file it lists has its recorded size; one written by slip_hf 0.2.x (no such file) is complete when
   `trainer_state.json`, the weights, `optimizer.pt`, `scheduler.pt` and an RNG state are all there and
   whole (JSON that parses, safetensors whose header accounts for every byte, torch archives whose index is
   readable). A checkpoint edited by hand is never loaded with a fresh optimizer: without `optimizer.pt` it
   does not count.
3. The final model of a run ([`save_final_model`]) is also written into a staging folder and each file moved
   into the run folder with an atomic rename: a kill leaves the previous file or the new one, never half of it.
4. A checkpoint or final model that finds the device full or over quota raises `slip_hf.faults.DiskFull` (one
   line: what, where, needed against free, the newest complete checkpoint, the command that resumes), its staged
   folder removed; the checkpoints before it stay complete.
"""

import json
import logging
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .faults import disk_full, folder_bytes, is_disk_full, parameter_bytes

logger = logging.getLogger(__name__)

MANIFEST = "slip_checkpoint.json"
"""Written into a checkpoint last, before the rename: its files and their sizes."""

STAGING_PREFIX = ".partial-"
"""Staging folders are `<run>/.partial-<name>`; no reader of checkpoints looks at them."""

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_LEGACY_REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def _fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_problem(path: Path) -> str | None:
    """Why the file at `path` is not whole (`"model.safetensors is truncated (...)"`), or `None`. Checks what
    each kind of file can tell about its own length: safetensors headers, torch's zip archives, JSON."""
    name = path.name
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    try:
        if name.endswith(".safetensors"):
            with open(path, "rb") as handle:
                header_length = struct.unpack("<Q", handle.read(8))[0]
                if 8 + header_length > size:
                    return f"{name} is truncated ({size} bytes, its header alone needs {8 + header_length})"
                header = json.loads(handle.read(header_length))
            data_end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
            if 8 + header_length + data_end != size:
                return f"{name} is truncated ({size} of {8 + header_length + data_end} bytes)"
        elif name.endswith((".pt", ".pth", ".bin")):
            with zipfile.ZipFile(path) as archive:  # torch.save's format; the index sits at the end of the file
                archive.infolist()
        elif name.endswith(".json"):
            json.loads(path.read_text())
    except (struct.error, ValueError, KeyError, TypeError, zipfile.BadZipFile, UnicodeDecodeError):
        return f"{name} is truncated or corrupt ({size} bytes)"
    return None


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete checkpoint (the first missing or truncated file), or `None`.

    Args:
        folder (`str | os.PathLike`): a `checkpoint-N` folder: written by slip_hf 0.3+ (checked against its
            `slip_checkpoint.json`: every file listed, at its size) or by 0.2.x (no manifest: the weights,
            `optimizer.pt`, `scheduler.pt`, an RNG state and `trainer_state.json` present and whole).

    Returns:
        str | None: one line such as `"model.safetensors is truncated (1000 of 2330 bytes)"`, or `None` when the
            checkpoint is complete.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError):
            return f"{MANIFEST} is truncated or corrupt"
        for name, size in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} is truncated ({path.stat().st_size} of {size} bytes)"
        return None
    # written by slip_hf 0.2.x, in place: whole when every file a resume needs is there and whole
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        return "model.safetensors is missing"
    rng_states = sorted(folder.glob("rng_state*.pth"))
    if not rng_states:
        return "rng_state.pth is missing"
    for path in [*(folder / name for name in _LEGACY_REQUIRED), *weights, *rng_states]:
        problem = file_problem(path)
        if problem:
            return problem
    return None


def checkpoint_step(folder: str | os.PathLike) -> int | None:
    """N of a `checkpoint-N` folder, else `None`."""
    match = _CHECKPOINT.match(Path(folder).name)
    return int(match.group(1)) if match else None


def complete_checkpoints(run_dir: str | os.PathLike, warn: bool = True) -> list[Path]:
    """The complete `checkpoint-N` folders of `run_dir`, oldest first; with `warn`, one warning line for each
    folder skipped, naming it and the file that is missing or truncated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    folders = sorted((p for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None), key=checkpoint_step)
    complete = []
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            complete.append(folder)
        elif warn:
            logger.warning("skipping incomplete checkpoint %s: %s", folder, problem)
    return complete


def last_complete_checkpoint(run_dir: str | os.PathLike, warn: bool = True) -> Path | None:
    """The newest complete checkpoint of `run_dir` (see [`complete_checkpoints`]), or `None`.

    Args:
        run_dir (`str | os.PathLike`): a run's output folder, holding `checkpoint-N` folders.
        warn (`bool`, *optional*, defaults to `True`): log one warning line per newer checkpoint skipped, naming
            its problem ([`checkpoint_problem`]).

    Returns:
        Path | None: the folder to resume from, or `None` when there is none.

    Example:

    ```python
    >>> from slip_hf.checkpoints import last_complete_checkpoint
    >>> last_complete_checkpoint("runs/slip-electronics")   # checkpoint-300 was cut off by a kill; logged:
    >>> # skipping incomplete checkpoint runs/slip-electronics/checkpoint-300: model.safetensors is truncated (...)
    PosixPath('runs/slip-electronics/checkpoint-200')
    ```
    """
    found = complete_checkpoints(run_dir, warn)
    return found[-1] if found else None


def resume_checkpoint(requested: str | bool | None, run_dir: str | os.PathLike, trainer: Any) -> str | None:
    """What `Trainer.train(resume_from_checkpoint=...)` gets for `--resume_from_checkpoint requested`.

    `None`/`False`/`"false"`: `None` (train from the start). `True`/`"true"`/`"last"`: the newest complete checkpoint
    of `run_dir`; the main process decides and every process takes its answer. A path: that checkpoint, if it is
    complete.

    Args:
        requested (`str | bool | None`): the `resume_from_checkpoint` argument as given.
        run_dir (`str | os.PathLike`): the run's output folder.
        trainer ([`SlipTrainer`]): the trainer that will resume (its process count and main process decide who
            looks and who is told).

    Returns:
        str | None: the checkpoint folder to resume from, or `None` to train from the start.

    Raises:
        ValueError: (one line) when no complete checkpoint exists, or the one named is incomplete.
    """
    if requested is None or requested is False or (isinstance(requested, str) and requested.lower() in ("false", "")):
        return None
    if requested is True or (isinstance(requested, str) and requested.lower() in ("true", "last")):
        newest = last_complete_checkpoint(run_dir) if trainer.args.should_save else None
        chosen = [str(newest) if newest is not None else None]
        if trainer.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(chosen)
        if chosen[0] is None:
            raise ValueError(f"--resume_from_checkpoint True: {run_dir} holds no complete checkpoint to resume from.")
        return chosen[0]
    problem = checkpoint_problem(requested)
    if problem:
        raise ValueError(f"--resume_from_checkpoint {requested}: not a complete checkpoint ({problem}).")
    return str(requested)


def write_manifest(folder: Path) -> None:
    """Flush every file of `folder` and record their sizes in `slip_checkpoint.json` (itself flushed)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = path.stat().st_size
    temporary = folder / f"{MANIFEST}.tmp"
    temporary.write_text(json.dumps({"files": files}, indent=1))
    _fsync(temporary)
    os.replace(temporary, folder / MANIFEST)
    _fsync(folder)


def _move_into_place(staged: Path, final: Path) -> None:
    """Rename the whole `staged` folder to `final` (replacing an earlier attempt at the same step)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staged, final)
    _fsync(final.parent)


class AtomicCheckpoints:
    """`transformers.Trainer` mixin: checkpoints written into a staging folder and renamed into place whole
    (see the module docstring). Put it before `Trainer` in the bases."""

    _staging_dir: Path | None = None

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)  # type: ignore[misc]
        return str(self._staging_dir) if self._staging_dir is not None else run_dir

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(super()._get_output_dir(trial))  # type: ignore[misc]
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging, final = run_dir / f"{STAGING_PREFIX}{name}", run_dir / name
        main = self.args.should_save
        try:
            self._save_staged_checkpoint(model, trial, run_dir, name, staging, final, main)
        except (OSError, RuntimeError) as error:
            needed = _checkpoint_bytes(run_dir, self.model)
            if not is_disk_full(error, run_dir, needed):
                raise
            if main:
                shutil.rmtree(staging, ignore_errors=True)
            raise disk_full(f"checkpoint {name}", run_dir, needed, run_dir) from error

    def _save_staged_checkpoint(self, model: Any, trial: Any, run_dir: Path, name: str, staging: Path, final: Path,
                                main: bool) -> None:
        if main:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed attempt at this step left
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # rotate only once it is whole
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        finally:
            self._staging_dir, self.args.save_total_limit = None, limit
        staged = staging / name
        if self.state.best_model_checkpoint == str(staged):
            self.state.best_model_checkpoint = str(final)
            if main:  # the checkpoint's own state names where the checkpoint will be
                self.state.save_to_json(str(staged / "trainer_state.json"))
        self.accelerator.wait_for_everyone()  # every process's files (its RNG state) are written
        if main:
            write_manifest(staged)
            _move_into_place(staged, final)
            staging.rmdir()
            # by modification time, as the Trainer rotates: an incomplete folder a killed run left goes first
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()


def _checkpoint_bytes(run_dir: Path, model: Any) -> int:
    """What a checkpoint of this run takes: the newest complete one's size, or the weights and AdamW's two moments."""
    newest = folder_bytes(last_complete_checkpoint(run_dir, warn=False))
    if newest:
        return newest
    return 3 * parameter_bytes(model)


def save_final_model(trainer: Any, output_dir: str | os.PathLike) -> None:
    """`trainer.save_model(output_dir)`, with each file written into a staging folder first and renamed into
    `output_dir`: a kill leaves each file as it was or whole, and a full disk is one [`DiskFull`] line (the staged
    files removed)."""
    output_dir = Path(output_dir)
    staging = output_dir / f"{STAGING_PREFIX}model"
    main = trainer.args.should_save
    try:
        if main:
            shutil.rmtree(staging, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(staging))
        if main:
            for path in sorted(p for p in staging.iterdir() if p.is_file()):
                _fsync(path)
                os.replace(path, output_dir / path.name)
            _fsync(output_dir)
            shutil.rmtree(staging)
    except (OSError, RuntimeError) as error:
        needed = parameter_bytes(trainer.model)
        if not is_disk_full(error, output_dir, needed):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        raise disk_full("the final model", output_dir, needed, output_dir) from error
    trainer.accelerator.wait_for_everyone()


__all__ = ["MANIFEST", "AtomicCheckpoints", "checkpoint_problem", "checkpoint_step", "complete_checkpoints",
           "file_problem", "last_complete_checkpoint", "resume_checkpoint", "save_final_model", "write_manifest"]
