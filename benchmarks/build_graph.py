"""How fast and how big is the graph build (steps 1-5) on Electronics-scale review files?

For each size, Amazon-schema reviews with power-law users and items (`write_power_law_reviews`) and their
metadata are written once (not timed). Then, each in a fresh process (so the peak RSS is that run's own):

* ours: 1 purchases (streamed JSON, dedup) -> 2 co-purchase edges (exact) -> 3 valid items (metadata) ->
  4 5-core of the co-purchase graph -> 5 labels; time per step, total, peak RSS, nodes and edges;
* baseline, on the smallest size: a straightforward pandas pipeline for steps 1-2 (`read_json(lines=True)`,
  `drop_duplicates`, self-`merge` on the user, `groupby`), against our steps 1-2 on the same input;
* the heavy-user guard, on the largest size: exact counting against `max_items_per_user` caps.

    python benchmarks/build_graph.py                       # 1M, 3M, 10M reviews; ~6 min on 2 cores
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

    times = {}
    start = time.perf_counter()
    purchases, _ = read_purchases(reviews)
    times["1 purchases"] = time.perf_counter() - start
    start = time.perf_counter()
    edges, edge_stats = copurchase_edges(purchases, 3, max_items_per_user)
    times["2 edges"] = time.perf_counter() - start
    result = {"times": times, "edges_raw": edges.num_rows, "pairs": edge_stats["pairs_enumerated"]}
    if steps > 2:
        start = time.perf_counter()
        src, dst = edges.column("src").to_numpy(), edges.column("dst").to_numpy()
        wanted_items = np.union1d(src, dst)
        asins = purchases.item_ids.to_pylist()
        items, _ = load_items(meta, [asins[i] for i in wanted_items])
        valid = np.zeros(purchases.num_items, dtype=bool)
        index = {asin: i for i, asin in enumerate(asins)}
        valid[[index[a] for a in items.column("parent_asin").to_pylist()]] = True
        times["3 items"] = time.perf_counter() - start
        start = time.perf_counter()
        keep = valid[src] & valid[dst]
        nodes, edge_mask, _ = kcore_graph(src[keep], dst[keep], purchases.num_items, 5)
        times["4 k-core"] = time.perf_counter() - start
        start = time.perf_counter()
        row = {a: i for i, a in enumerate(items.column("parent_asin").to_pylist())}
        paths = items.column("category_path").to_pylist()
        assign_labels([paths[row[asins[i]]] for i in np.flatnonzero(nodes)], depth=1)
        times["5 labels"] = time.perf_counter() - start
        result.update(nodes=int(nodes.sum()), edges=int(edge_mask.sum()))
    result["total"] = sum(times.values())
    result["peak_rss_gb"] = _peak_rss_gb()
    return result


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
        return pool.apply(function, args, kwargs)


def prepare(directory: Path, size: int) -> tuple[str, str]:
    from slip_hf.data.synthetic import write_power_law_meta, write_power_law_reviews

    reviews, meta = directory / f"reviews_{size}.jsonl", directory / f"meta_{size}.jsonl"
    if not reviews.exists():
        info = write_power_law_reviews(reviews, size, seed=size)
        write_power_law_meta(meta, info["items"])
    return str(reviews), str(meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--workdir", default="/tmp/slip_build_graph_bench", help="where the input files are cached")
    parser.add_argument("--caps", type=int, nargs="*", default=[1000, 200], help="max_items_per_user values to compare")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    directory = Path(args.workdir)
    directory.mkdir(parents=True, exist_ok=True)
    files = {size: prepare(directory, size) for size in args.sizes}

    print("## Steps 1-5 (ours), each size in a fresh process, 2 CPU cores\n")
    print("| reviews | size on disk | 1 purchases | 2 edges | 3 items | 4 k-core | 5 labels | total (s) | s per M reviews | peak RSS (GB) | pairs counted | nodes | edges |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ours = {}
    for size, (reviews, meta) in files.items():
        result = ours[size] = in_fresh_process(run_ours, reviews, meta)
        t = result["times"]
        print(
            f"| {size:,} | {Path(reviews).stat().st_size / 1e9:.2f} GB | {t['1 purchases']:.1f} | {t['2 edges']:.1f} | "
            f"{t['3 items']:.1f} | {t['4 k-core']:.2f} | {t['5 labels']:.2f} | **{result['total']:.1f}** | "
            f"{result['total'] / size * 1e6:.1f} | {result['peak_rss_gb']:.2f} | {result['pairs']:,} | {result['nodes']:,} | {result['edges']:,} |",
            flush=True,
        )

    smallest, largest = min(files), max(files)
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
