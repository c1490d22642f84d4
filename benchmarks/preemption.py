"""Seconds from a preemption notice (SIGTERM) to the exit of a training run, against the grace periods of clusters.

A run that gets SIGTERM finishes its optimizer step, writes a complete checkpoint and exits
(`slip_hf.faults.PreemptionNotice`): the time is the rest of the step plus the save. For each model size this
script trains `run_slip.py` on a small built dataset, waits until `--after` steps are logged, sends SIGTERM and
measures the seconds to the exit; it also reports the median step and the checkpoint's size, the two parts of it.

    python benchmarks/preemption.py                       # the demo's tiny CLIP and a ViT-B/16-sized CLIP, on the CPU
    python benchmarks/preemption.py --sizes demo --repeats 3

Grace periods to hold it against: 30 s (some spot instances' notice), 2 minutes (AWS spot, Kubernetes pods that
set terminationGracePeriodSeconds: 120), SLURM's `--signal=TERM@<seconds>` whatever the job asks.
"""

import argparse
import itertools
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    # name: (text width, vision width, layers, image side, patch, projection, batch)
    "demo": (128, 128, 2, 32, 4, 128, 128),
    "vit-b16": (512, 768, 12, 224, 16, 512, 8),
}


def write_model(directory: Path, size: str, titles: list[str]) -> str:
    """A random CLIP of `size` saved like a Hub checkpoint (weights, tokenizer, image processor)."""
    from transformers import CLIPConfig, CLIPModel

    from slip_hf.toy import toy_image_processor, train_toy_tokenizer

    text, vision, layers, image, patch, projection, _ = SIZES[size]
    tokenizer = train_toy_tokenizer(titles, vocab_size=1024, max_length=32)
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": text, "intermediate_size": 4 * text, "num_hidden_layers": layers,
                     "num_attention_heads": max(1, text // 64), "max_position_embeddings": 32,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": vision, "intermediate_size": 4 * vision, "num_hidden_layers": layers,
                       "num_attention_heads": max(1, vision // 64), "image_size": image, "patch_size": patch},
        projection_dim=projection,
    )
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    toy_image_processor(image).save_pretrained(directory)
    return str(directory)


def measure(model: str, dataset: Path, output_dir: Path, batch: int, after: int) -> dict:
    """Train until `after` steps are logged, send SIGTERM, and time the exit."""
    command = [sys.executable, str(ROOT / "training" / "run_slip.py"), "--model_name_or_path", model,
               "--dataset_name", str(dataset), "--output_dir", str(output_dir), "--max_steps", "1000",
               "--per_device_train_batch_size", str(batch), "--logging_steps", "1", "--logs_to", "file",
               "--save_strategy", "no", "--eval_strategy", "no", "--graph_hidden_size", "512", "--report_to", "none",
               "--max_text_length", "32"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = output_dir / "trainer_log.jsonl"
    stamps = []
    while len(stamps) < after:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read()[-2000:])
        lines = log.read_text().splitlines() if log.is_file() else []
        while len(stamps) < len(lines):
            stamps.append(time.monotonic())
        time.sleep(0.02)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait()
    seconds = time.monotonic() - sent
    checkpoint = max(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return {
        "exit_code": process.returncode, "signal_to_exit_s": seconds,
        "step_s": statistics.median(b - a for a, b in itertools.pairwise(stamps)) if len(stamps) > 1 else None,
        "checkpoint_mb": sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=1, help="signalled runs per size")
    parser.add_argument("--after", type=int, default=3, help="logged steps before the signal")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    from slip_hf.data import BuildConfig, build_dataset, generate_synthetic_raw, load_config

    work = Path(tempfile.mkdtemp(prefix="slip-preemption-"))
    generate_synthetic_raw(work / "raw", num_bundles=20, image_size=64, seed=0)
    build_dataset(BuildConfig(raw_dir=str(work / "raw"), out_dir=str(work / "data"), image_size=64, label_depth=2,
                              min_class_size=3, allow_local_files=True, on_bad_lines="skip"))
    titles = load_config(work / "data", "electronics", split="train")["title"]
    rows = []
    for size in args.sizes:
        model = write_model(work / f"model-{size}", size, titles)
        for repeat in range(args.repeats):
            row = {"size": size, **measure(model, work / "data", work / f"run-{size}-{repeat}", SIZES[size][-1], args.after)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | batch | median step (s) | checkpoint (MB) | signal to exit (s) | exit code |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['size']} | {SIZES[row['size']][-1]} | {row['step_s']:.2f} | {row['checkpoint_mb']:,.0f} | "
              f"{row['signal_to_exit_s']:.1f} | {row['exit_code']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
