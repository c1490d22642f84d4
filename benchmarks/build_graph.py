"""How fast and how big is the graph build (steps 1-5) on Electronics-scale review files?

For each size, Amazon-schema reviews with power-law users and items (`write_power_law_reviews`) and their
metadata are written once (not timed). Then, each in a fresh process (so the peak RSS is that run's own):

* ours: 1 purchases (streamed JSON, dedup) -> 2 co-purchase edges (exact) -> 3 valid items (metadata) ->
  4 5-core of the co-purchase graph -> 5 labels; time per step, total, peak RSS after each step, nodes and
  edges;
* `--electronics`: the same at Amazon Reviews 2023 Electronics' size (43.9M reviews, 1.61M items, ~17 GB of
  JSON lines), against the targets of 4 minutes and 8 GB for steps 1-5;
* the reader, on the smallest size: our JSON-lines reader (every bad line found and numbered,
  `slip_hf.data.json_lines`) against pyarrow's own streaming reader (what step 1 used before; it stops at
  the first bad block), plain and gzip, best of 3;
* baseline, on the smallest size: a straightforward pandas pipeline for steps 1-2 (`read_json(lines=True)`,
  `drop_duplicates`, self-`merge` on the user, `groupby`), against our steps 1-2 on the same input;
* the heavy-user guard, on the largest size: exact counting against `max_items_per_user` caps.

    python benchmarks/build_graph.py                       # 1M, 3M, 10M reviews; ~6 min on 2 cores
    python benchmarks/build_graph.py --electronics --sizes 1000000 --caps --skip-baseline   # 43.9M; ~25 min
    python benchmarks/build_graph.py --sizes 1000000       # quick look
"""

import argparse
import multiprocessing
import resource
import time
from pathlib import Path


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def run_ours(reviews: str, meta: str, max_items_per_user: int | None = None, steps: int = 5) -> dict:
    import numpy as np

    from slip_hf.data.copurchase import copurchase_edges, read_purchases
    from slip_hf.data.items import load_items
    from slip_hf.data.kcore import kcore_graph
    from slip_hf.data.labels import assign_labels

    times, peaks = {}, {}

    def step(name: str, started: float) -> None:
        times[name], peaks[name] = time.perf_counter() - started, _peak_rss_gb()

    start = time.perf_counter()
    purchases, _ = read_purchases(reviews)
    step("1 purchases", start)
    start = time.perf_counter()
    edges, edge_stats = copurchase_edges(purchases, 3, max_items_per_user)
    step("2 edges", start)
    result = {"times": times, "peaks": peaks, "edges_raw": edges.num_rows, "pairs": edge_stats["pairs_enumerated"],
              "users": purchases.num_users, "items": purchases.num_items}
    if steps > 2:
        start = time.perf_counter()
        src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
        wanted_items = np.union1d(src, dst)
        asins = purchases.item_ids.to_pylist()
        items, _ = load_items(meta, [asins[i] for i in wanted_items])
        valid = np.zeros(purchases.num_items, dtype=bool)
        index = {asin: i for i, asin in enumerate(asins)}
        valid[[index[a] for a in items.column("parent_asin").to_pylist()]] = True
        step("3 items", start)
        start = time.perf_counter()
        keep = valid[src] & valid[dst]
        nodes, edge_mask, _ = kcore_graph(src[keep], dst[keep], purchases.num_items, 5)
        step("4 k-core", start)
        start = time.perf_counter()
        row = {a: i for i, a in enumerate(items.column("parent_asin").to_pylist())}
        paths = items.column("category_path").to_pylist()
        assign_labels([paths[row[asins[i]]] for i in np.flatnonzero(nodes)], depth=1)
        step("5 labels", start)
        result.update(nodes=int(nodes.sum()), edges=int(edge_mask.sum()))
    result["total"] = sum(times.values())
    result["peak_rss_gb"] = _peak_rss_gb()
    return result


def read_rows(path: str, reader: str) -> dict:
    """Rows of a review file read with `reader`: "ours" (bad lines found and numbered) or "pyarrow" (its
    streaming reader, as step 1 read before; it stops at the first bad block)."""
    import pyarrow.json as pa_json

    from slip_hf.data.amazon_raw import REVIEW_SCHEMA
    from slip_hf.data.json_lines import read_json_lines

    start = time.perf_counter()
    if reader == "ours":
        rows = sum(block.table.num_rows for block in read_json_lines(path, REVIEW_SCHEMA))
    else:
        stream = pa_json.open_json(
            path, read_options=pa_json.ReadOptions(block_size=16 << 20),
            parse_options=pa_json.ParseOptions(explicit_schema=REVIEW_SCHEMA, unexpected_field_behavior="ignore"),
        )
        rows = sum(batch.num_rows for batch in stream)
    return {"rows": rows, "seconds": time.perf_counter() - start}


def run_pandas_baseline(reviews: str) -> dict:
    import pandas as pd

    start = time.perf_counter()
    frame = pd.read_json(reviews, lines=True)[["user_id", "parent_asin", "timestamp"]].dropna()
    frame["user"] = frame["user_id"].astype("category").cat.codes
    frame["item"] = frame["parent_asin"].astype("category").cat.codes
    frame = frame.sort_values("timestamp").drop_duplicates(["user", "item"])[["user", "item", "timestamp"]]
    pairs = frame.merge(frame, on="user")
    pairs = pairs[pairs["item_x"] < pairs["item_y"]]
    pairs["time"] = pairs[["timestamp_x", "timestamp_y"]].max(axis=1)
    grouped = pairs.groupby(["item_x", "item_y"])["time"].agg(["size", "min", "max"])
    edges = grouped[grouped["size"] >= 3]
    return {"total": time.perf_counter() - start, "edges_raw": len(edges), "peak_rss_gb": _peak_rss_gb()}


def in_fresh_process(function, *args, **kwargs) -> dict:
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        result = pool.apply(function, args, kwargs)
        pool.close()
        pool.join()  # a clean exit: no leaked-semaphore warnings
    return result


ELECTRONICS = {"reviews": 43_900_000, "items": 1_610_012}
"""Amazon Reviews 2023, Electronics: 43.9M reviews of 1.61M items by 18.3M users."""


def prepare(directory: Path, size: int, num_items: int | None = None) -> tuple[str, str]:
    """The review and metadata files of one size, written once; an interrupted write leaves no file behind."""
    from slip_hf.data.synthetic import write_power_law_meta, write_power_law_reviews

    stem = f"{size}" if num_items is None else f"{size}_items{num_items}"
    reviews, meta = directory / f"reviews_{stem}.jsonl", directory / f"meta_{stem}.jsonl"
    if not (reviews.exists() and meta.exists()):
        partial = reviews.with_suffix(".partial")
        info = write_power_law_reviews(partial, size, num_items=num_items, seed=size)
        write_power_law_meta(meta.with_suffix(".partial"), info["items"])
        meta.with_suffix(".partial").rename(meta)
        partial.rename(reviews)
    return str(reviews), str(meta)


def gzipped(path: str) -> str:
    import gzip
    import shutil

    target = Path(path + ".gz")
    if not target.exists():
        partial = target.with_suffix(".partial")
        with open(path, "rb") as source, gzip.open(partial, "wb", compresslevel=6) as sink:
            shutil.copyfileobj(source, sink, 16 << 20)
        partial.rename(target)
    return str(target)


def print_steps(files: dict, ours: dict) -> None:
    print("| reviews | size on disk | 1 purchases | 2 edges | 3 items | 4 k-core | 5 labels | total (s) | s per M reviews | peak RSS (GB) | pairs counted | nodes | edges |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, result in ours.items():
        t = result["times"]
        print(
            f"| {size:,} | {Path(files[size][0]).stat().st_size / 1e9:.2f} GB | {t['1 purchases']:.1f} | {t['2 edges']:.1f} | "
            f"{t['3 items']:.1f} | {t['4 k-core']:.2f} | {t['5 labels']:.2f} | **{result['total']:.1f}** | "
            f"{result['total'] / size * 1e6:.1f} | {result['peak_rss_gb']:.2f} | {result['pairs']:,} | {result['nodes']:,} | {result['edges']:,} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--electronics", action="store_true", help="also run steps 1-5 at Electronics' size (43.9M reviews)")
    parser.add_argument("--workdir", default="/tmp/slip_build_graph_bench", help="where the input files are cached")
    parser.add_argument("--caps", type=int, nargs="*", default=[1000, 200], help="max_items_per_user values to compare")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    directory = Path(args.workdir)
    directory.mkdir(parents=True, exist_ok=True)
    files = {size: prepare(directory, size) for size in args.sizes}

    print("## Steps 1-5 (ours), each size in a fresh process, 2 CPU cores\n")
    ours = {size: in_fresh_process(run_ours, *files[size]) for size in files}
    print_steps(files, ours)

    if args.electronics:
        size = ELECTRONICS["reviews"]
        reviews, meta = prepare(directory, size, ELECTRONICS["items"])
        result = in_fresh_process(run_ours, reviews, meta)
        print(f"\n## Electronics' size: {size:,} reviews of {ELECTRONICS['items']:,} items ({result['users']:,} users)\n")
        print_steps({size: (reviews, meta)}, {size: result})
        print("\n| step | seconds | peak RSS so far (GB) |")
        print("|---|---:|---:|")
        for name, seconds in result["times"].items():
            print(f"| {name} | {seconds:.1f} | {result['peaks'][name]:.2f} |")
        met = result["total"] <= 240 and result["peak_rss_gb"] <= 8
        print(f"\nTarget (steps 1-5 in <= 240 s and <= 8 GB): {'met' if met else 'missed'} "
              f"({result['total']:.0f} s, {result['peak_rss_gb']:.2f} GB).")

    smallest, largest = min(files), max(files)
    print(f"\n## Reader: {smallest:,} reviews, best of 3, each in a fresh process\n")
    print("| file | pyarrow's streaming reader (s) | ours: every bad line numbered (s) | ours / pyarrow |")
    print("|---|---:|---:|---:|")
    for path in (files[smallest][0], gzipped(files[smallest][0])):
        best = {reader: min(in_fresh_process(read_rows, path, reader)["seconds"] for _ in range(3)) for reader in ("pyarrow", "ours")}
        print(f"| {Path(path).name} | {best['pyarrow']:.2f} | {best['ours']:.2f} | {best['ours'] / best['pyarrow']:.2f} |", flush=True)

    if not args.skip_baseline:
        reviews, meta = files[smallest]
        baseline = in_fresh_process(run_pandas_baseline, reviews)
        ours_12 = in_fresh_process(run_ours, reviews, meta, steps=2)
        assert baseline["edges_raw"] == ours_12["edges_raw"], (baseline["edges_raw"], ours_12["edges_raw"])
        print(f"\n## Baseline: pandas self-join for steps 1-2 on {smallest:,} reviews (same edges: {baseline['edges_raw']:,})\n")
        print("| pipeline | steps 1-2 (s) | peak RSS (GB) |")
        print("|---|---:|---:|")
        print(f"| pandas read_json + merge + groupby | {baseline['total']:.1f} | {baseline['peak_rss_gb']:.2f} |")
        print(f"| slip_hf | {ours_12['total']:.1f} | {ours_12['peak_rss_gb']:.2f} |")
        print(f"**speed-up: {baseline['total'] / ours_12['total']:.1f}x**")

    if args.caps:
        reviews, meta = files[largest]
        exact = ours[largest]
        print(f"\n## Heavy-user guard on {largest:,} reviews (steps 1-2)\n")
        print("| max_items_per_user | steps 1-2 (s) | pairs counted | edges | edges lost |")
        print("|---:|---:|---:|---:|---:|")
        exact_12 = exact["times"]["1 purchases"] + exact["times"]["2 edges"]
        print(f"| exact (None) | {exact_12:.1f} | {exact['pairs']:,} | {exact['edges_raw']:,} | 0 |")
        for cap in args.caps:
            capped = in_fresh_process(run_ours, reviews, meta, max_items_per_user=cap, steps=2)
            lost = exact["edges_raw"] - capped["edges_raw"]
            print(f"| {cap} | {capped['total']:.1f} | {capped['pairs']:,} | {capped['edges_raw']:,} | {lost:,} ({lost / exact['edges_raw']:.1%}) |")

    if len(files) > 1:
        rate = {size: ours[size]["total"] / size for size in files}
        print(f"\nGrowth: time per review at {largest:,} is {rate[largest] / rate[smallest]:.2f}x that at {smallest:,} (1.0 = linear).")


if __name__ == "__main__":
    main()
