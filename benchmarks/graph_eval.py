"""What structure-aware evaluation costs at scale: related-item retrieval over 30k items and link prediction
over 100k held-out edges, on 2 cores. Time and peak memory of each part, a scale curve, and ratios against
the usual baselines in the same run:

* related items: ours (`related_item_metrics`, chunks of queries, O(chunk x N) memory) against the full
  N x N similarity matrix with a full argsort of every row;
* negatives: ours (`sample_negatives`, vectorised rejection sampling) against a per-edge Python loop over a
  set of edge keys (what the first version did).

The data: N items in communities of 20 (the embeddings are the community's centre plus noise), a graph with
about 9 edges per item, 80 % of them inside communities; `graph_metrics` holds out half of the edges, so
30k items give ~100k held-out edges, each against 100 negatives. Each measurement is a fresh process.

    python benchmarks/graph_eval.py            # ~4 min on 2 cores
"""

import argparse
import multiprocessing
import resource
import time


def _data(num: int, dim: int = 512, seed: int = 0):
    import numpy as np
    import torch

    from slip_hf.graph_batching import NodeGraph

    rng = np.random.default_rng(seed)
    community = np.arange(num) // 20
    centres = rng.standard_normal((community.max() + 1, dim))
    image = torch.nn.functional.normalize(torch.tensor(centres[community] + 1.2 * rng.standard_normal((num, dim)), dtype=torch.float32), dim=-1)
    text = torch.nn.functional.normalize(torch.tensor(centres[community] + 1.2 * rng.standard_normal((num, dim)), dtype=torch.float32), dim=-1)
    edges = 9 * num
    src = rng.integers(0, num, edges)
    inside = rng.random(edges) < 0.8
    dst = np.where(inside, community[src] * 20 + rng.integers(0, 20, edges), rng.integers(0, num, edges))
    dst = np.minimum(dst, num - 1)
    return image, text, NodeGraph.from_edges(src, dst, num)


def _measure(function) -> dict:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    value = function()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_gb": peak / 1024**2, "extra_gb": (peak - before) / 1024**2, "value": value}


def related_ours(num: int) -> dict:
    import numpy as np

    from slip_hf.evaluation.related_items import related_item_metrics, relevant_candidates

    image, _, graph = _data(num)
    return _measure(lambda: related_item_metrics(image, relevant_candidates(graph, np.arange(num)))["mrr"])


def related_full_matrix(num: int) -> dict:
    import numpy as np
    import torch

    from slip_hf.evaluation.related_items import relevant_candidates

    image, _, graph = _data(num)

    def run():
        relevant = relevant_candidates(graph, np.arange(num))
        scores = image @ image.T
        scores.fill_diagonal_(float("-inf"))
        ranking = torch.argsort(scores, dim=1, descending=True)
        total, queries = 0.0, 0
        for q in range(num):
            if relevant[q].size:
                hit = torch.isin(ranking[q], torch.from_numpy(relevant[q]))
                total += 1 / (int(torch.nonzero(hit)[0]) + 1)
                queries += 1
        return total / queries

    return _measure(run)


def link_prediction(num: int, probe_epochs: int) -> dict:
    import numpy as np

    from slip_hf.evaluation.graph_metrics import graph_metrics

    image, text, graph = _data(num)
    result = _measure(lambda: graph_metrics(image, text, np.arange(num), graph, link_negatives=100, probe_epochs=probe_epochs))
    metrics = result.pop("value")
    result["held_out"] = metrics["graph_protocol"]["positives_count"]
    result["value"] = (metrics["link_prediction"]["mean"]["mrr"], metrics["link_prediction"].get("probe", {}).get("mrr"))
    return result


def negatives_ours(num: int, positives: int) -> dict:
    import numpy as np
    import torch

    from slip_hf.evaluation.link_prediction import sample_negatives

    _, _, graph = _data(num)
    src, dst = np.repeat(np.arange(num), graph.degree()), graph.col
    chosen = torch.from_numpy(np.stack([src[:positives], dst[:positives]]))
    return _measure(lambda: int(sample_negatives(chosen, src, dst, num, 100).shape[0]))


def negatives_loop(num: int, positives: int) -> dict:
    import numpy as np

    _, _, graph = _data(num)
    src, dst = np.repeat(np.arange(num), graph.degree()), graph.col

    def run():
        rng = np.random.default_rng(0)
        keys = set((np.minimum(src, dst) * num + np.maximum(src, dst)).tolist())
        out = []
        for u in src[:positives].tolist():
            chosen: list[int] = []
            while len(chosen) < 100:
                for w in rng.integers(0, num, size=200).tolist():
                    if w != u and min(u, w) * num + max(u, w) not in keys and w not in chosen:
                        chosen.append(w)
                        if len(chosen) == 100:
                            break
            out.append(chosen)
        return len(out)

    return _measure(run)


def fresh(function, *args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 10000, 30000], help="items per scale step")
    parser.add_argument("--compare-n", type=int, default=10000, help="items for the ratios against the baselines")
    parser.add_argument("--loop-positives", type=int, default=10000, help="edges for the negative-sampling baseline")
    parser.add_argument("--probe-epochs", type=int, default=100, help="GraphSAGE probe epochs")
    args = parser.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    print("\n| Items | Related items s | peak GB | Link prediction (3 cosines + probe) s | peak GB | held-out edges | mean MRR | probe MRR |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for num in args.sizes:
        related = fresh(related_ours, num)
        links = fresh(link_prediction, num, args.probe_epochs)
        mean_mrr, probe_mrr = links["value"]
        print(f"| {num:,} | {related['seconds']:.1f} | {related['peak_gb']:.2f} | {links['seconds']:.1f} | {links['peak_gb']:.2f} | "
              f"{links['held_out']:,} | {mean_mrr:.3f} | {probe_mrr if probe_mrr is None else round(probe_mrr, 3)} |", flush=True)

    ours, baseline = fresh(related_ours, args.compare_n), fresh(related_full_matrix, args.compare_n)
    assert abs(ours["value"] - baseline["value"]) < 1e-4, (ours["value"], baseline["value"])
    print(f"\nRelated items at {args.compare_n:,} items: ours {ours['seconds']:.1f} s / {ours['extra_gb']:.2f} GB extra, "
          f"full matrix + argsort {baseline['seconds']:.1f} s / {baseline['extra_gb']:.2f} GB extra: "
          f"{baseline['seconds'] / ours['seconds']:.1f}x faster, same MRR ({ours['value']:.4f})")
    ours, baseline = fresh(negatives_ours, args.compare_n, args.loop_positives), fresh(negatives_loop, args.compare_n, args.loop_positives)
    print(f"Negatives for {args.loop_positives:,} edges x 100: ours {ours['seconds']:.2f} s, per-edge loop "
          f"{baseline['seconds']:.2f} s: {baseline['seconds'] / ours['seconds']:.1f}x faster")


if __name__ == "__main__":
    main()
