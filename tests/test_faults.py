"""Real faults, not mocks of them (`slip_hf.faults`):

* a preemption notice: a real SIGTERM (or `--save_on_signal SIGUSR1`) sent to a real training process (the paper
  recipe as written, its 8 data workers in the same process group), with more signals during the save; and to the
  launcher of `accelerate launch` with two processes. The run saves one complete checkpoint, exits with 128 +
  the signal's number, and `--resume_from_checkpoint True` ends with the weights of an uninterrupted run, byte for
  byte. `slip-hf ablate` resumes its table on the next command.
* a full disk: a real small filesystem (a tmpfs, which CI, running as root, may mount) that holds two checkpoints
  but not a third, then the final model, an export and a dataset build: one line each, no traceback, the staged
  folder removed, and the run resumes once there is room.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slip_hf.checkpoints import MANIFEST, checkpoint_problem

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPE = ROOT / "training" / "recipes" / "slip_electronics_vitb16.yaml"
RUN_SLIP = ROOT / "training" / "run_slip.py"


def _flags(model: str, dataset: Path, output_dir: Path, steps: int, *extra: str) -> list[str]:
    """The paper recipe as written (8 workers, evaluation and a checkpoint every epoch, which is one step here:
    102 training nodes in batches of 128); overridden only: the model, the dataset, the folder, the CPU for bf16,
    the run's length, and log lines to the run's file (`trainer_log.jsonl`, which the tests watch)."""
    return [str(PAPER_RECIPE), "--model_name_or_path", model, "--dataset_name", str(dataset), "--output_dir",
            str(output_dir), "--max_steps", str(steps), "--use_cpu", "True", "--logging_steps", "1", "--logs_to", "file",
            *extra]


def _same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _logged_steps(output_dir: Path) -> int:
    log = output_dir / "trainer_log.jsonl"
    if not log.is_file():
        return 0
    return max((json.loads(line)["step"] for line in log.read_text().splitlines() if line.strip()), default=0)


def _signal_after(process: subprocess.Popen, output_dir: Path, step: int, signum: int, group: bool,
                  timeout: float = 300) -> float:
    """Wait until the run has logged `step`, send `signum` (to its whole process group with `group`), and send it
    again every 0.1 s until a new complete checkpoint is in place, as an impatient scheduler would: more signals
    during the save. Returns the seconds from the first signal to the exit."""
    deadline = time.monotonic() + timeout
    while _logged_steps(output_dir) < step:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the run did not reach the step in time"
        time.sleep(0.1)
    before = set(output_dir.glob("checkpoint-*"))
    send = os.killpg if group else os.kill
    sent = time.monotonic()
    while process.poll() is None:  # at least once, then until the notice's checkpoint is in place
        send(process.pid, signum)
        time.sleep(0.1)
        if any(checkpoint_problem(p) is None for p in set(output_dir.glob("checkpoint-*")) - before):
            break
        assert time.monotonic() - sent < 300, "the run did not stop after the signal"
    process.wait(timeout=300)
    return time.monotonic() - sent


@pytest.fixture(scope="module")
def uninterrupted(recipe_clip, graph_dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = subprocess.run([sys.executable, str(RUN_SLIP), *_flags(recipe_clip, graph_dataset_dir, out, 5)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_sigterm_saves_one_checkpoint_and_the_resumed_run_ends_with_the_uninterrupted_weights(
        uninterrupted, recipe_clip, graph_dataset_dir, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, str(RUN_SLIP), *_flags(recipe_clip, graph_dataset_dir, out, 5)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seconds = _signal_after(process, out, 2, signal.SIGTERM, group=True)  # the data workers get it too
    stderr = process.stderr.read()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("run_slip.py: SIGTERM received: finished the step, saved ") and "Traceback" not in stderr
    assert "--resume_from_checkpoint True" in last and seconds < 120
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    stopped = int(checkpoints[-1].name.split("-")[1])
    assert 2 <= stopped < 5 and str(checkpoints[-1]) in last and checkpoint_problem(checkpoints[-1]) is None
    assert not list(out.glob(".partial-*")) and not (out / "model.safetensors").exists()  # no final model: not done
    done = subprocess.run([*command, "--resume_from_checkpoint", "True"], capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _same_weights(out, uninterrupted)


def test_accelerate_launch_stops_both_processes_after_the_same_step_with_one_checkpoint(
        recipe_clip, graph_dataset_dir, tmp_path):
    out = tmp_path / "launched"
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(RUN_SLIP),
               *_flags(recipe_clip, graph_dataset_dir, out, 30, "--per_device_train_batch_size", "16",
                       "--dataloader_num_workers", "2", "--save_on_signal", "SIGUSR1")]
    # torch's launcher passes SIGTERM, SIGINT, SIGHUP and SIGQUIT on to its processes, and more when told so
    # (torchrun's --signals_to_handle, which accelerate launch reads from PET_SIGNALS_TO_HANDLE)
    env = {**os.environ, "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                               start_new_session=True, env=env)
    _signal_after(process, out, 2, signal.SIGUSR1, group=False)  # to the launcher, as a scheduler signals a job
    stderr = process.stderr.read()
    assert process.returncode != 0
    assert stderr.count("SIGUSR1 received: finished the step, saved ") == 1, stderr[-3000:]  # the main process says it
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) >= 1 and checkpoint_problem(checkpoints[-1]) is None and not list(out.glob(".partial-*"))
    files = json.loads((checkpoints[-1] / MANIFEST).read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(files)  # one checkpoint, written by both processes
    states = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert states["global_step"] == int(checkpoints[-1].name.split("-")[1]) < 30
    done = subprocess.run([*command, "--resume_from_checkpoint", "True"], capture_output=True, text=True, timeout=900,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 30


_WORKER_STARTS = """
import os, signal, sys
from torch.utils.data import DataLoader
from slip_hf.faults import workers_ignoring_notice


def init(worker_id):
    pass


if __name__ == "__main__":
    method, workers, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    received = []
    signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    loader = DataLoader(range(4 * workers), batch_size=4, num_workers=workers,
                        **workers_ignoring_notice(init, [int(signal.SIGTERM)], method))
    print("ready", flush=True)
    for epoch in range(epochs):  # new workers every epoch, as without persistent workers
        assert sum(len(batch) for batch in loader) == 4 * workers
    print(epochs, "epochs", len(received), "signals", flush=True)
    os._exit(0)
"""


@pytest.mark.parametrize("method, workers, epochs", [("fork", 8, 20), ("forkserver", 2, 2)])
def test_workers_starting_while_the_process_group_is_signalled_all_live(method, workers, epochs, tmp_path):
    """SIGTERM to the whole group every 5 ms while loaders start new workers: before `workers_ignoring_notice`
    a worker signalled between its start and its `worker_init_fn` died (torch's handler), and the run with it,
    within the first few epochs; the paper recipe starts 8 workers every epoch and every evaluation."""
    script = tmp_path / "worker_starts.py"
    script.write_text(_WORKER_STARTS)
    process = subprocess.Popen([sys.executable, str(script), method, str(workers), str(epochs)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "ready", process.communicate()[1][-3000:]
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        os.killpg(process.pid, signal.SIGTERM)
        time.sleep(0.005)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-3000:]
    done, _, received, _ = stdout.split()
    assert int(done) == epochs and int(received) > 0


def test_a_signalled_ablation_table_resumes_on_the_next_command(recipe_clip, graph_dataset_dir, tmp_path):
    from slip_hf.cli import main as cli_main

    out = tmp_path / "table"
    command = [sys.executable, "-m", "slip_hf.cli", "ablate", *_flags(recipe_clip, graph_dataset_dir, out, 12),
               "--table", "batch_size", "--batch_sizes", "32", "--seeds", "0", "--dataloader_num_workers", "0",
               "--save_on_signal", "SIGUSR1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run_dir = out / "batch32-nograph" / "seed0"
    _signal_after(process, run_dir, 1, signal.SIGUSR1, group=False)
    stderr = process.stderr.read()
    assert process.returncode == 128 + signal.SIGUSR1, stderr[-3000:]
    assert "SIGUSR1 received" in stderr.strip().splitlines()[-1]
    assert cli_main(command[3:]) == 0  # the same command: the stopped run resumes, the table completes
    assert (out / "batch32-graph" / "seed0" / "test_results.json").is_file()
    assert (run_dir / "test_results.json").is_file()


# ---- a full disk --------------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of a given size: a tmpfs mounted under `tmp_path` (root may mount one, as CI runs), grown
    with `resize(bytes)`. Skipped, saying why, where this process may not mount."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(size: int) -> None:
        options = f"size={max(size // 4096, 1) * 4096}"
        command = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)] if not os.path.ismount(mount) else \
            ["mount", "-o", f"remount,{options}", str(mount)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}): a full disk needs a real small "
                        "filesystem; CI runs as root and mounts one")

    yield mount, resize
    if os.path.ismount(mount):
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_that_names_the_checkpoint_and_the_resume_command(
        uninterrupted, small_disk, recipe_clip, graph_dataset_dir):
    mount, resize = small_disk
    checkpoint = sum(p.stat().st_size for p in (uninterrupted / "checkpoint-5").rglob("*") if p.is_file())
    resize(int(2.5 * checkpoint))  # two checkpoints fit (save_total_limit: 2), a third while they stand does not
    out = mount / "run"
    command = [sys.executable, str(RUN_SLIP), *_flags(recipe_clip, graph_dataset_dir, out, 5)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("run_slip.py: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = lines[0]
    assert "no space left on the device writing checkpoint checkpoint-3" in line and "MB free" in line
    assert f"newest complete checkpoint: {out / 'checkpoint-2'}" in line and "--resume_from_checkpoint True" in line
    assert not list(out.glob(".partial-*")) and checkpoint_problem(out / "checkpoint-2") is None
    resize(20 * checkpoint)
    done = subprocess.run([*command, "--resume_from_checkpoint", "True"], capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _same_weights(out, uninterrupted)


def test_an_export_and_a_dataset_build_on_a_full_disk_are_one_line(uninterrupted, small_disk, tmp_path, capsys):
    from slip_hf.cli import main as cli_main

    mount, resize = small_disk
    resize(64 * 1024)
    assert cli_main(["export", "--model_dir", str(uninterrupted), "--out_dir", str(mount / "export")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no space left on the device writing" in error and "MB free" in error
    from loopback_hub import SMALL_RAW

    from slip_hf.data import generate_synthetic_raw

    generate_synthetic_raw(tmp_path / "raw", **SMALL_RAW)
    shutil.rmtree(mount / "export", ignore_errors=True)
    assert cli_main(["build-dataset", "--raw_dir", str(tmp_path / "raw"), "--out_dir", str(mount / "data"),
                     "--allow_local_files", "--on_bad_lines", "skip", "--image_size", "16"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no space left on the device" in error.lower() or "No space left on device" in error, error


def test_a_signal_that_cannot_be_caught_is_one_line(capsys):
    from slip_hf.cli import main as cli_main

    assert cli_main(["train", "--save_on_signal", "SIGKILL", "--output_dir", "unused"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--save_on_signal 'SIGKILL' is not a signal a process can catch" in error


def test_what_counts_as_a_full_disk(tmp_path):
    import errno

    from slip_hf.faults import is_disk_full

    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    assert is_disk_full(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                                     '"No space left on device" })'), tmp_path)  # safetensors' words
    wrapped = RuntimeError("could not save")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(wrapped, tmp_path)
    # torch's writer says "unexpected pos" for a full disk and for other faults: only a device without room counts
    assert not is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2"), tmp_path)
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 2"), tmp_path,
                        needed=2**62)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"), tmp_path)
