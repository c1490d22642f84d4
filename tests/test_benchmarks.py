"""Benchmarks that must not rot: `benchmarks/gpu_step.py --tiny` runs on the CPU in seconds with every method."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_step_benchmark_runs_tiny_on_the_cpu(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["method"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["CLIP", "SLIP", "SLIP + StructXLIP", "SLIP + Structure-CLIP"]
    assert rows["CLIP"]["vs_clip"] == 1.0 and all(row["samples_per_s"] > 0 and 0 < row["mfu"] < 1 for row in rows.values())
    # the objectives' extra tower passes are counted: edge maps through the vision tower, negatives through the text tower
    assert rows["SLIP + StructXLIP"]["gflop_per_sample"] > 1.5 * rows["SLIP"]["gflop_per_sample"]
    assert rows["SLIP"]["gflop_per_sample"] >= rows["CLIP"]["gflop_per_sample"]
    assert rows["SLIP + Structure-CLIP"]["gflop_per_sample"] > rows["SLIP"]["gflop_per_sample"]
    assert "| SLIP + StructXLIP | 16 |" in done.stdout and "MFU" in done.stdout


def test_gpu_step_benchmark_runs_tiny_siglip_with_its_baseline_named(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--tiny", "--backbone", "siglip",
                           "--methods", "CLIP", "SLIP", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["method"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["SigLIP", "SLIP"] and all(row["backbone"] == "siglip" for row in rows.values())
    assert rows["SigLIP"]["vs_clip"] == 1.0 and rows["SLIP"]["gflop_per_sample"] >= rows["SigLIP"]["gflop_per_sample"]
    assert "step / SigLIP's" in done.stdout and "tiny SigLIP" in done.stdout


def test_index_scale_benchmark_runs_small(tmp_path):
    out = tmp_path / "rows.json"
    """One approximate size, as every default size is (the exact index is tested in test_search.py): each size costs
    three processes, each ~8 s of importing torch, transformers and slip_hf on 2 cores."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "index_scale.py"), "--sizes", "4000",
                           "--exact_below", "2000", "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (approximate,) = json.loads(out.read_text())
    assert not approximate["exact"] and approximate["recall_at_10"] >= 0.9 and approximate["p50_ms"] > 0
    assert approximate["exact_p50_ms"] > 0 and "| 4,000 | `IVF" in done.stdout


def test_embed_scale_benchmark_runs_small(tiny_clip_checkpoint, graph_dataset_dir, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "embed_scale.py"), "--model", tiny_clip_checkpoint,
                           "--dataset", str(graph_dataset_dir), "--items", "120", "--busy", "1", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(f"| {Path(tiny_clip_checkpoint).name} | 120 |")]
    assert len(rows) == 2 and all(float(row.split("|")[4].replace(",", "")) > 0 for row in rows)
