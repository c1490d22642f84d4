"""`slip-hf embed` on the CPU: items/s and memory, quiet and under contention.

Runs the real command (a subprocess, `--index False`) on a catalogue of `--items` items (the demo's test items
repeated, as `space_load.py --items` makes it), with 0 and `--busy` other processes keeping the cores busy
(each multiplies matrices in a loop, as a test suite or a second job would), and samples the memory of the
command's process tree (its own and its data workers', proportional: pages a forked worker shares with the main
process count once; anonymous: what the processes hold themselves) four times a second. Prints items/s, the peak, and the anonymous memory at 10% and at the end of the run (growth
over the run shows memory that is not given back). `--vit_b16` adds a random CLIP of ViT-B/16's size (224 px,
patch 16, 12 layers of width 768; text 12 layers of 512) on `--vit_items` items.

    slip-hf demo
    python benchmarks/embed_scale.py --model slip_demo/runs/slip-seed0 --dataset slip_demo/dataset --items 60000
"""

import argparse
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from space_load import scaled_catalogue


def busy(seconds: float) -> None:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((384, 384), dtype=np.float32)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        a = np.tanh(a @ a)


def tree_memory(pid: int) -> tuple[float, float]:
    """(anonymous, resident) GB of a process and its children, proportional (`Pss_Anon`, `Pss` of
    /proc/<pid>/smaps_rollup): a data worker forked from the main process shares its pages, which plain RSS would
    count once per process."""
    anonymous = resident = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for one in pids:
        try:
            rollup = dict(line.split(":", 1) for line in Path(f"/proc/{one}/smaps_rollup").read_text().splitlines()[1:])
        except (FileNotFoundError, ProcessLookupError):
            continue
        anonymous += int(rollup["Pss_Anon"].split()[0]) / 1e6
        resident += int(rollup["Pss"].split()[0]) / 1e6
    return anonymous, resident


def run(model: str, dataset: str, out: Path, contention: int, extra: list[str]) -> dict:
    others = [multiprocessing.Process(target=busy, args=(3600,), daemon=True) for _ in range(contention)]
    for process in others:
        process.start()
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time (the same folder would resume, or refuse another plan)
    command = [sys.executable, "-m", "slip_hf.cli", "embed", "--model_name_or_path", model, "--dataset_name", dataset,
               "--dataset_config", "electronics", "--split", "test", "--output_dir", str(out), "--index", "False", *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = []
    while process.poll() is None:
        samples.append((time.perf_counter() - started, *tree_memory(process.pid)))
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    for other in others:
        other.terminate()
    output = process.stdout.read()
    if process.returncode != 0:
        raise RuntimeError(output[-3000:])
    anonymous = [sample[1] for sample in samples]
    early = next((s[1] for s in samples if s[0] >= 0.1 * seconds), anonymous[0])
    return {"seconds": seconds, "peak_anonymous_gb": max(anonymous), "peak_resident_gb": max(s[2] for s in samples),
            "anonymous_at_10pc_gb": early, "anonymous_at_end_gb": anonymous[-1], "last_line": output.strip().splitlines()[-1]}


def vit_b16(folder: Path, titles: list[str]) -> str:
    from slip_hf.toy import write_tiny_checkpoint

    if not (folder / "config.json").exists():
        write_tiny_checkpoint(str(folder), titles, image_size=224, hidden_size=768, num_layers=12, patch_size=16,
                              projection_dim=512, vocab_size=4096, max_length=77)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--busy", type=int, default=4, help="busy processes in the contended runs (default: 4; 0: quiet runs only)")
    parser.add_argument("--vit_b16", action="store_true")
    parser.add_argument("--vit_items", type=int, default=512)
    parser.add_argument("--work", default=None)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more slip-hf embed flags")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="slip_embed_scale_"))
    catalogue = work / f"catalogue-{args.items}"
    if not catalogue.exists():
        scaled_catalogue(args.dataset, args.split, args.items, catalogue)
    runs = [(model, str(catalogue), args.items) for model in args.model]
    if args.vit_b16:
        small = work / f"catalogue-{args.vit_items}"
        if not small.exists():
            scaled_catalogue(args.dataset, args.split, args.vit_items, small)
        from slip_hf.data import load_config

        titles = load_config(args.dataset, "electronics", split=args.split)["title"]
        runs.append((vit_b16(work / "vit-b16", titles), str(small), args.vit_items))
    print("| model | items | other busy processes | items/s | peak anonymous | anonymous at 10% -> end | peak resident |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for model, dataset, items in runs:
        for contention in sorted({0, args.busy}):
            out = work / f"emb-{Path(model).name}-{contention}"
            row = run(model, dataset, out, contention, args.extra)
            shutil.rmtree(out)
            print(f"| {Path(model).name} | {items:,} | {contention} | {items / row['seconds']:,.1f} | {row['peak_anonymous_gb']:.2f} GB "
                  f"| {row['anonymous_at_10pc_gb']:.2f} -> {row['anonymous_at_end_gb']:.2f} GB | {row['peak_resident_gb']:.2f} GB |",
                  flush=True)


if __name__ == "__main__":
    main()
