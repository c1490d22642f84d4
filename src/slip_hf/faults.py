"""What a long run meets on a cluster: a preemption notice, and a full disk.

**A preemption notice.** SLURM (`--signal`), Kubernetes and spot instances send SIGTERM (or a chosen signal), then
kill the job after a grace period of 30 s to a few minutes. transformers' Trainer dies at once and loses every step
since its last checkpoint. [`PreemptionNotice`] (a `TrainerCallback` that `SlipTrainer` installs) catches SIGTERM
and `--save_on_signal`'s signal instead: the current optimizer step finishes, a complete checkpoint is written
through the atomic path of `slip_hf.checkpoints`, and the run raises [`Preempted`], which `slip-hf` turns into one
line and the exit code `128 + signal number` (143 for SIGTERM, 138 for SIGUSR1: what a shell reports for a job
ended by that signal). Under `accelerate launch` the processes agree at every step end (one all-reduce of a flag
over a CPU group, no GPU sync), so all stop after the same step and exactly one checkpoint is written. A second
signal during the save changes nothing: the checkpoint is renamed into place whole or not at all, and the previous
one stays the newest complete one until then. A notice during the last step's evaluation and save stops the run
before its final model and test evaluation (the resumed run writes them from that step's checkpoint), and an
ablation table before its next run. Data workers ignore those signals ([`workers_ignoring_notice`]: they
start with them blocked and ignore them before unblocking), so a notice sent to the whole process group does not
kill them mid-step, nor in their first milliseconds.

**A full disk.** A checkpoint, the final model or a run's results that cannot be written because the device is full
(`ENOSPC`) or over quota (`EDQUOT`) raise [`DiskFull`]: one line with what was being written and where, the space it
needed against the space free, the newest complete checkpoint, and the command that resumes; the staged folder is
removed. torch reports a full disk from its C++ writer as a `RuntimeError` ("unexpected pos", "iostream error"):
[`is_disk_full`] recognises those when the device has less room than the write needed.
"""

import copy
import errno
import functools
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a device without room: no space left, disk quota exceeded."""
_TORCH_WRITE_FAILURES = ("unexpected pos", "iostream error", "PytorchStreamWriter failed", "file write failed")


class Preempted(Exception):
    """A run stopped by a preemption notice after saving its checkpoint; `exit_code` is `128 + signal`."""

    def __init__(self, signal_name: str, exit_code: int, checkpoint: str | None, seconds: float, resume: str):
        self.signal_name, self.exit_code, self.checkpoint, self.seconds, self.resume = (
            signal_name, exit_code, checkpoint, seconds, resume)
        saved = f"saved {checkpoint}" if checkpoint else "no checkpoint could be saved"
        super().__init__(f"{signal_name} received: finished the step, {saved} {seconds:.1f} s after the signal; "
                         f"resume with: {resume}")


class DiskFull(OSError):
    """Writing failed because the device is full or over quota (an `OSError` with `errno.ENOSPC`)."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that started this process, with `--resume_from_checkpoint True` (once); an ablation's own
    command as it was (`slip-hf ablate` resumes the runs of its table by itself)."""
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else "run_slip.py"
    program = "slip-hf" if program in ("slip-hf", "cli.py", "__main__.py") else f"python {argv[0]}"
    ablation = program.endswith("ablate.py") or argv[1:2] == ["ablate"]
    if "--resume_from_checkpoint" in argv:
        index = argv.index("--resume_from_checkpoint")
        del argv[index:index + 2]
    return " ".join([program, *map(shlex.quote, argv[1:]), *([] if ablation else ["--resume_from_checkpoint", "True"])])


def signal_number(name: str) -> int:
    """`signal.SIGUSR1` from `"SIGUSR1"` or `"USR1"`; a one-line `ValueError` for a name that is not a signal."""
    normalised = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
    number = getattr(signal, normalised, None)
    if not isinstance(number, signal.Signals) or normalised in ("SIGKILL", "SIGSTOP"):
        raise ValueError(f"--save_on_signal {name!r} is not a signal a process can catch (e.g. SIGUSR1, SIGTERM).")
    return int(number)


class PreemptionNotice(TrainerCallback):
    """On SIGTERM or one of `signals`: finish the step, save a complete checkpoint, stop (see the module doc).

    Args:
        signals (`Sequence[str]`): the signal names to catch besides SIGTERM (`--save_on_signal`).
    """

    def __init__(self, signals: Sequence[str] = ()):
        self.numbers = sorted({int(signal.SIGTERM), *(signal_number(name) for name in signals)})
        self.received: int | None = None
        self.received_at: float | None = None
        self.stopped_at_step: int | None = None
        self.after_last_step = False
        self._previous: dict[int, Any] = {}
        self._group = None

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is None:  # a second signal during the save changes nothing
            self.received, self.received_at = number, time.monotonic()

    def _agreed_signal(self) -> int:
        """The notice's signal if any process has received it, else 0 (one all-reduce over the CPU group)."""
        flag = torch.tensor([self.received or 0], dtype=torch.int64)
        if self._group is not None:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag)

    def _stop(self, number: int, step: int) -> None:
        if self.received is None:  # another process got the notice
            self.received, self.received_at = number, time.monotonic()
        self.stopped_at_step = step

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # Python installs handlers only there
            self._previous = {number: signal.signal(number, self._handle) for number in self.numbers}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self._group = dist.new_group(backend="gloo")  # CPU tensors: agreeing costs the GPU no sync

    def on_step_end(self, args, state, control, **kwargs):
        number = self._agreed_signal()  # every process stops after the same step
        if number and self.stopped_at_step is None:
            self._stop(number, state.global_step)
            logger.warning(f"{signal.Signals(self.received).name} received: finishing step {state.global_step}, saving a "
                           "checkpoint and stopping")
            control.should_save = True  # an evaluation due at this step still runs first, as without the notice
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        number = self._agreed_signal()  # a notice during the last step's evaluation and save, on any process
        if number and self.stopped_at_step is None:
            self._stop(number, state.global_step)
            self.after_last_step = True
            logger.warning(f"{signal.Signals(self.received).name} received after the last step: stopping before the "
                           "final model and the test evaluation")
        if self.stopped_at_step is not None:  # keep absorbing a scheduler's repeated notices until the process exits
            return
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}

    def preempted(self, run_dir: str | os.PathLike) -> Preempted | None:
        """The [`Preempted`] to raise after `train()` returned, or `None` without a notice, and for a notice after
        the last step when no complete checkpoint holds that step (`save_strategy` "no"): finishing the run is
        then what keeps its work."""
        if self.stopped_at_step is None:
            return None
        from .checkpoints import checkpoint_step, last_complete_checkpoint

        newest = last_complete_checkpoint(run_dir, warn=False)
        if self.after_last_step and (newest is None or checkpoint_step(newest) != self.stopped_at_step):
            return None
        name = signal.Signals(self.received).name
        return Preempted(name, 128 + self.received, str(newest) if newest else None,
                         time.monotonic() - self.received_at, resume_command())


class WorkerIgnoringNotice:
    """A data worker's `worker_init_fn` that ignores the notice's signals, then runs `init`. torch gives its workers
    a C handler that ends them on SIGTERM; a scheduler that signals the process group would then kill them mid-step.
    The worker was started with those signals blocked ([`workers_ignoring_notice`]): one sent before this runs
    waits, and is discarded once ignored.

    Args:
        init (`Callable[[int], None]`): the worker's own init (e.g. transformers' `seed_worker`), picklable.
        numbers (`list[int]`): the signals to ignore.
    """

    def __init__(self, init, numbers: list[int]):
        self.init, self.numbers = init, list(numbers)

    def __call__(self, worker_id: int) -> None:
        for number in self.numbers:
            signal.signal(number, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.numbers)
        self.init(worker_id)


class _StartsWithSignalsBlocked:
    """A process that its parent starts with `blocked_signals` blocked, so that the child inherits them blocked.

    A worker installs torch's SIGTERM handler before its `worker_init_fn` runs; a signal to the process group in
    between (each epoch starts new workers unless they persist, and each evaluation too) would end it, and the run
    with it. Blocked, the signal waits for `WorkerIgnoringNotice`; the parent gets its own once they are unblocked.
    A fork server started here inherits the mask too, and with it every worker it forks."""

    blocked_signals: tuple[int, ...] = ()

    def start(self) -> None:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, self.blocked_signals)
        try:
            super().start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _ForkWorker(_StartsWithSignalsBlocked, multiprocessing.context.ForkProcess):
    pass


class _SpawnWorker(_StartsWithSignalsBlocked, multiprocessing.context.SpawnProcess):
    pass


class _ForkServerWorker(_StartsWithSignalsBlocked, multiprocessing.context.ForkServerProcess):
    pass


_WORKER_CLASSES = {"fork": _ForkWorker, "spawn": _SpawnWorker, "forkserver": _ForkServerWorker}


def _worker(worker_class: type, numbers: tuple[int, ...], *args, **kwargs) -> multiprocessing.process.BaseProcess:
    process = worker_class(*args, **kwargs)
    process.blocked_signals = numbers
    return process


def workers_ignoring_notice(init, numbers: Sequence[int], context: str | multiprocessing.context.BaseContext | None
                            ) -> dict[str, Any]:
    """The `DataLoader` options whose workers ignore the notice's signals from their first instruction:
    `worker_init_fn` ([`WorkerIgnoringNotice`] around `init`) and `multiprocessing_context` (the start method
    `context`, by name or as a context, default the platform's, whose workers start with the signals blocked)."""
    base = context if isinstance(context, multiprocessing.context.BaseContext) else multiprocessing.get_context(context)
    blocking = copy.copy(base)  # the same start method, queues and locks; only its processes differ
    blocking.Process = functools.partial(_worker, _WORKER_CLASSES[base.get_start_method()], tuple(numbers))
    return {"worker_init_fn": WorkerIgnoringNotice(init, numbers), "multiprocessing_context": blocking}


def is_disk_full(error: BaseException, folder: str | os.PathLike | None = None, needed: int | None = None) -> bool:
    """Whether `error`, raised writing into `folder`, means the device is full or over quota: an `OSError` with
    `ENOSPC`/`EDQUOT`, or an error that says so in the operating system's words (safetensors' Rust writer), itself
    or as the cause of another; or torch's C++ writer failing (a `RuntimeError`) on a device with less room left
    than `needed` bytes (default: 1 MiB)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if any(os.strerror(number) in str(seen) or f"os error {number}" in str(seen) for number in DISK_FULL_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    if folder is not None and isinstance(error, RuntimeError) and any(text in str(error) for text in _TORCH_WRITE_FAILURES):
        return free_bytes(folder) < (needed or 2**20)
    return False


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes free for this user on the device that holds `folder` (or its nearest existing parent)."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of `model`'s parameters: what its weights take on disk."""
    return sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())


def folder_bytes(folder: str | os.PathLike | None) -> int | None:
    """Total size of the files under `folder`, or `None` when there is no such folder."""
    if folder is None or not Path(folder).is_dir():
        return None
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def _size(count: int) -> str:
    return f"{count / 2**20:,.1f} MB"


def disk_full(what: str, where: str | os.PathLike, needed: int | None = None, run_dir: str | os.PathLike | None = None,
              then: str | None = None) -> DiskFull:
    """The [`DiskFull`] error of a write that found no room: what, where, needed against free, with `run_dir` the
    newest complete checkpoint, and what to run next (`then`; default: this process's command with
    `--resume_from_checkpoint True`)."""
    from .checkpoints import last_complete_checkpoint

    free = free_bytes(where)
    room = f"it needs about {_size(needed)}, {_size(free)} free" if needed else f"{_size(free)} free"
    parts = [f"no space left on the device writing {what} to {where} ({room})"]
    if run_dir is not None:
        newest = last_complete_checkpoint(run_dir, warn=False)
        parts.append(f"newest complete checkpoint: {newest if newest else 'none'}")
    parts.append(f"free some space, then {then or 'resume with: ' + resume_command()}")
    return DiskFull("; ".join(parts))


__all__ = [
    "DISK_FULL_ERRNOS",
    "DiskFull",
    "Preempted",
    "PreemptionNotice",
    "WorkerIgnoringNotice",
    "disk_full",
    "folder_bytes",
    "free_bytes",
    "is_disk_full",
    "parameter_bytes",
    "resume_command",
    "signal_number",
]
