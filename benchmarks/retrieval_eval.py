"""Chunked retrieval evaluation against the usual full-matrix evaluation, on random embeddings.

* ours: `slip_hf.evaluation.retrieval_metrics` (row chunks of the similarity matrix, both directions from one
  pass, memory O(chunk x N));
* baseline: what retrieval evaluations commonly do (e.g. open_clip's `get_clip_metrics`): materialise the
  N x N logits and argsort every row and column to find the true match's position.

Each run is a fresh process, so its peak RSS is its own; the embeddings (N x 512, float32) are part of both.
Prints a scale curve for ours and, at `--compare-n`, the ratio against the baseline.

    python benchmarks/retrieval_eval.py        # ~3 min on 2 cores (the baseline needs ~11 GB at 30k)
"""

import argparse
import multiprocessing
import resource
import time


def _embeddings(num: int, dim: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(num, dim, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(image + torch.randn(num, dim, generator=generator), dim=-1)
    return image, text


def run_ours(num: int, dim: int, chunk: int) -> dict:
    from slip_hf.evaluation import retrieval_metrics

    image, text = _embeddings(num, dim)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    metrics = retrieval_metrics(image, text, chunk_size=chunk)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_gb": peak / 1024**2, "extra_gb": (peak - before) / 1024**2, "mrr": metrics["mrr"]}


def run_full_matrix(num: int, dim: int) -> dict:
    import torch

    image, text = _embeddings(num, dim)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    logits = image @ text.T
    truth = torch.arange(num).view(-1, 1)
    ranks = []
    for matrix in (logits, logits.T):
        ranking = torch.argsort(matrix, descending=True)
        ranks.append(torch.where(ranking == truth)[1] + 1)
        del ranking
    mrr = float(sum((1 / r.double()).mean() for r in ranks) / 2)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_gb": peak / 1024**2, "extra_gb": (peak - before) / 1024**2, "mrr": mrr}


def fresh(function, *args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 10_000, 20_000, 30_000])
    parser.add_argument("--compare-n", type=int, default=30_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=2048)
    args = parser.parse_args()
    print(f"## Chunked retrieval evaluation (d = {args.dim}, chunk {args.chunk}), each size in a fresh process\n")
    print("| N | seconds | extra memory (GB) | N x N float32 would be (GB) |")
    print("|---:|---:|---:|---:|")
    ours = {}
    for num in args.sizes:
        ours[num] = fresh(run_ours, num, args.dim, args.chunk)
        print(f"| {num:,} | {ours[num]['seconds']:.2f} | {ours[num]['extra_gb']:.2f} | {4 * num * num / 1e9:.1f} |", flush=True)
    num = args.compare_n
    mine = ours.get(num) or fresh(run_ours, num, args.dim, args.chunk)
    baseline = fresh(run_full_matrix, num, args.dim)
    assert abs(mine["mrr"] - baseline["mrr"]) < 1e-6, (mine["mrr"], baseline["mrr"])
    print(f"\n## N = {num:,}: against the full-matrix argsort evaluation (same MRR {mine['mrr']:.4f})\n")
    print("| evaluation | seconds | peak RSS (GB) |")
    print("|---|---:|---:|")
    print(f"| full N x N logits + argsort | {baseline['seconds']:.1f} | {baseline['peak_gb']:.2f} |")
    print(f"| slip_hf chunked | {mine['seconds']:.1f} | {mine['peak_gb']:.2f} |")
    print(f"**{baseline['seconds'] / mine['seconds']:.1f}x faster, {baseline['peak_gb'] / mine['peak_gb']:.1f}x less peak memory**")


if __name__ == "__main__":
    main()
