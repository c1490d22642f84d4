"""The search index at a catalogue's scale: at 300k, 1M and 10M vectors of d = 512, clustered like a catalogue's
embeddings (categories, product lines, variants; not uniform noise), the index `slip-hf index` chooses under a
memory budget (`slip_hf.search.choose_index`), built, tuned and saved by the library's own functions. Per size:

* build time (training, adding, the exact neighbours of the recall queries, tuning) and its peak memory;
* the index's size on disk;
* recall@10 against the exact search on 1,000 queries (drawn apart from the catalogue);
* query latency p50/p95 on one core (FAISS with one thread, one query at a time; the 1,000 queries once from a
  fresh load, whose re-ranking reads the float16 rows from disk, then a second time), and the peak resident memory of
  a fresh process that loads the saved index and answers them, with its anonymous part (what the process holds
  itself; the rest are pages of the memory-mapped float16 vectors, which the kernel maps ahead of the rows a
  query reads and drops under memory pressure); at 300k and 1M also the exact search's p50 (a flat index in
  memory), the baseline.

Each stage runs in its own process, which reports its own peak resident memory (`VmHWM`); a process that has
imported slip_hf and FAISS and done nothing holds about 0.7 GB of it.

    python benchmarks/index_scale.py --target_recall 0.95 0.95 0.90   # 300k, 1M, 10M at the recall each is asked
                                                                      # for (about 30 min on 2 cores; 35 GB of disk)
    python benchmarks/index_scale.py --sizes 300000 --work /tmp/index-scale
    python benchmarks/index_scale.py --queries_only --out rows.json --cgroup /sys/fs/cgroup/memory/slip   # again, the
                        # queries only, in a cgroup whose limit (e.g. 4 GB) counts the index's cached pages too
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 512
QUERIES = 1000


def clustered(n: int, seed: int = 0, dim: int = DIM, latent: int = 128, chunk: int = 250_000, out=None, space_seed: int = 1234):
    """`n` l2-normalised vectors drawn from one fixed "catalogue space": Zipf-sized categories, 1,000 product
    lines in each (a line's offset from its category), items scattered around their line; in a `latent`-dim
    subspace mapped to `dim` dims, plus the direction all embeddings share (their cone) and isotropic noise.
    `seed` draws the items; the space is the same for every seed, so queries and catalogue match."""
    space = np.random.default_rng(space_seed)
    categories = max(50, n // 20_000)
    lines = 1000
    centers = space.standard_normal((categories, latent)).astype(np.float32)
    weights = 1.0 / np.arange(1, categories + 1) ** 0.7
    weights /= weights.sum()
    mapping = (space.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)
    cone = space.standard_normal(dim).astype(np.float32)
    cone /= np.linalg.norm(cone)
    line_offsets = np.random.default_rng(space_seed + 1).standard_normal((lines, latent)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32) if out is None else out
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        category = rng.choice(categories, m, p=weights)
        offsets = line_offsets[rng.integers(0, lines, m)]
        shift = (category * 7919) % latent  # each category turns the line shapes its own way
        offsets = np.take_along_axis(offsets, (np.arange(latent)[None, :] + shift[:, None]) % latent, axis=1)
        z = centers[category] + 0.6 * offsets + 0.25 * rng.standard_normal((m, latent), dtype=np.float32)
        x = z @ mapping
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x = x + 0.8 * cone + 0.15 * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def vectors_file(work: Path, n: int) -> Path:
    """The catalogue's vectors as a float16 `.npy` (made once per size; 10M take 10 GB)."""
    path = work / f"vectors-{n}.npy"
    if not path.exists():
        temporary = path.with_suffix(".tmp.npy")
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float16, shape=(n, DIM))
        for start in range(0, n, 1_000_000):
            stop = min(start + 1_000_000, n)
            array[start:stop] = clustered(stop - start, seed=1000 + start // 1_000_000)
        array.flush()
        del array
        os.replace(temporary, path)
    return path


def batches_of(path: Path, rows: int = 250_000):
    vectors = np.load(path, mmap_mode="r")

    def batches():
        for start in range(0, len(vectors), rows):
            yield np.asarray(vectors[start : start + rows], dtype=np.float32)

    return batches


def stage_build(n: int, work: Path, budget: str, exact_below: int, target_recall: float) -> dict:
    import faiss

    from slip_hf.search.index import build_index, choose_index, exact_neighbours, tune

    path = vectors_file(work, n)
    batches = batches_of(path)
    queries = clustered(QUERIES, seed=99)
    choice = choose_index(n, DIM, budget, exact_below)
    started = time.perf_counter()
    training = None
    if choice.train_rows:
        vectors = np.load(path, mmap_mode="r")
        rows = np.sort(np.random.default_rng(0).choice(n, choice.train_rows, replace=False))
        training = np.asarray(vectors[rows], dtype=np.float32)
    index = build_index(choice, DIM, n, batches, training)
    built = time.perf_counter() - started
    truth = exact_neighbours(queries, batches, 10)
    truth_seconds = time.perf_counter() - started - built
    parameters, recall = ({}, 1.0) if choice.exact else tune(index, queries, truth, target_recall)
    index_path = work / f"index-{n}.faiss"
    faiss.write_index(index, str(index_path))
    np.save(work / f"truth-{n}.npy", truth)
    return {"n": n, "factory": choice.factory, "exact": choice.exact, "build_s": built, "truth_s": truth_seconds,
            "tune_and_save_s": time.perf_counter() - started - built - truth_seconds, "search_parameters": parameters,
            "tuned_recall": recall, "index_bytes": index_path.stat().st_size, "resident_estimate": choice.resident_bytes}


def stage_query(n: int, work: Path, parameters: dict) -> dict:
    import faiss

    from slip_hf.search.index import read_index, recall_at

    faiss.omp_set_num_threads(1)
    queries = clustered(QUERIES, seed=99)
    truth = np.load(work / f"truth-{n}.npy")
    path = work / f"index-{n}.faiss"
    with open(path, "rb") as handle:  # a cold start: the index file's pages leave the page cache first
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    index = read_index(path, parameters)
    passes = []
    for _ in range(2):  # the first pass reads the re-ranked rows from disk; the second finds most in the page cache
        latencies, found = [], np.empty((QUERIES, 10), np.int64)
        for row in range(QUERIES):
            started = time.perf_counter()
            found[row] = index.search(queries[row : row + 1], 10)[1][0]
            latencies.append(time.perf_counter() - started)
        passes.append(latencies)
    latencies = passes[0]
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    anonymous, mapped = (int(status[key].split()[0]) * 1024 / 1e9 for key in ("RssAnon", "RssFile"))
    return {"recall_at_10": recall_at(found, truth), "p50_ms": 1e3 * float(np.median(latencies)),
            "p95_ms": 1e3 * float(np.percentile(latencies, 95)), "warm_p50_ms": 1e3 * float(np.median(passes[1])),
            "anonymous_gb": anonymous, "file_pages_gb": mapped}


def stage_exact(n: int, work: Path) -> dict:
    """The baseline: a flat index of the vectors in memory, one core, one query at a time (100 queries)."""
    import faiss

    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlatIP(DIM)
    for batch in batches_of(vectors_file(work, n))():
        flat.add(batch)
    queries = clustered(100, seed=99)
    latencies = []
    for row in range(len(queries)):
        started = time.perf_counter()
        flat.search(queries[row : row + 1], 10)
        latencies.append(time.perf_counter() - started)
    return {"exact_p50_ms": 1e3 * float(np.median(latencies))}


def peak_resident_gb() -> float:
    """This process's peak resident memory (`VmHWM`: anonymous and file pages it touched, memory maps included)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024 / 1e9


def run_stage(args: list[str], cgroup: str | None = None) -> tuple[dict, float]:
    """Run one stage in a child process (in the memory cgroup `cgroup`, when given); its JSON result and its peak
    resident memory (GB). The child reports its own `VmHWM`: the kernel's `ru_maxrss` of a child also counts the
    parent's memory at the fork."""
    command = [sys.executable, __file__, *args]
    if cgroup:  # join the cgroup, then become the stage: every page it touches is charged there, file pages included
        command = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *command]
    output = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return result, result.pop("peak_gb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300_000, 1_000_000, 10_000_000])
    parser.add_argument("--work", default="/tmp/slip-index-scale", help="where the vectors and indexes go")
    parser.add_argument("--memory_budget", default="4GB")
    parser.add_argument("--target_recall", type=float, nargs="+", default=[0.95],
                        help="recall@10 the search parameters are tuned to, one for all sizes or one per size")
    parser.add_argument("--exact_below", type=int, default=None, help="default: slip_hf.search.EXACT_BELOW")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    parser.add_argument("--cgroup", default=None,
                        help="a memory cgroup (v1: /sys/fs/cgroup/memory/<name>, with its memory.limit_in_bytes set) to "
                             "answer the queries in: the memory budget enforced, page cache included (needs root)")
    parser.add_argument("--queries_only", action="store_true",
                        help="answer the queries with the indexes an earlier run left in --work (no build)")
    parser.add_argument("--stage", choices=("build", "query", "exact"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parameters", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from slip_hf.search.index import EXACT_BELOW

    exact_below = args.exact_below if args.exact_below is not None else EXACT_BELOW
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    targets = dict(zip(args.sizes, args.target_recall * len(args.sizes) if len(args.target_recall) == 1 else args.target_recall))
    stages = {"build": lambda: stage_build(args.n, work, args.memory_budget, exact_below, args.target_recall[0]),
              "query": lambda: stage_query(args.n, work, json.loads(args.parameters)),
              "exact": lambda: stage_exact(args.n, work)}
    if args.stage:
        print(json.dumps({**stages[args.stage](), "peak_gb": peak_resident_gb()}))
        return
    rows = []
    header = ("| vectors | index | build | build peak | on disk | recall@10 | p50 | p95 | p50, second pass | query process: peak, "
              "of it anonymous | exact p50 |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    common = ["--work", str(work), "--memory_budget", args.memory_budget, "--exact_below", str(exact_below)]
    earlier = {row["n"]: row for row in json.loads(Path(args.out).read_text())} if args.queries_only and args.out else {}
    for n in args.sizes:
        vectors_file(work, n)
        if args.queries_only:
            build, build_peak = earlier[n], earlier[n]["build_peak_gb"]
        else:
            build, build_peak = run_stage(["--stage", "build", "--n", str(n), "--target_recall", str(targets[n]), *common])
        query, query_peak = run_stage(["--stage", "query", "--n", str(n), "--parameters", json.dumps(build["search_parameters"]), *common],
                                      args.cgroup)
        exact = run_stage(["--stage", "exact", "--n", str(n), *common])[0] if n <= 1_000_000 else {"exact_p50_ms": None}
        row = {**build, **query, **exact, "build_peak_gb": build_peak, "query_peak_gb": query_peak}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(header)
    for row in rows:
        exact = f"{row['exact_p50_ms']:.1f} ms ({row['exact_p50_ms'] / row['p50_ms']:.0f}x)" if row["exact_p50_ms"] else "-"
        parameters = ", ".join(f"{k}={v}" for k, v in row["search_parameters"].items())
        print(f"| {row['n']:,} | `{row['factory']}` {parameters} | {row['build_s'] + row['tune_and_save_s']:.0f} s | "
              f"{row['build_peak_gb']:.2f} GB | {row['index_bytes'] / 1e9:.2f} GB | {row['recall_at_10']:.3f} | "
              f"{row['p50_ms']:.2f} ms | {row['p95_ms']:.2f} ms | {row['warm_p50_ms']:.2f} ms | {row['query_peak_gb']:.2f} GB, "
              f"{row['anonymous_gb']:.2f} GB | "
              f"{exact} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
