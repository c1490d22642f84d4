"""How much structure do product titles give Structure-CLIP? Share of titles with >= 1 triple, negatives per
title by kind, texts skipped, and parse throughput, on a built dataset's titles (all splits) and on the raw
titles of `slip-hf generate-raw`.

    python benchmarks/scene_graph_coverage.py --dataset_dir slip_demo/dataset --raw_dir raw/
"""

import argparse
import json
import time
from pathlib import Path

from datasets import Dataset, concatenate_datasets

from slip_hf.data import load_copurchase_graph
from slip_hf.objectives.structure_clip_inputs import SceneGraphAnnotator, structure_coverage


def _report(name: str, titles: list[str]) -> None:
    annotator = SceneGraphAnnotator("title")
    start = time.perf_counter()
    annotated = Dataset.from_dict({"title": titles}).map(annotator, batched=True, batch_size=256, load_from_cache_file=False)
    seconds = time.perf_counter() - start
    coverage = structure_coverage(annotated)
    negatives = ", ".join(f"{kind} {share:.1%}" for kind, share in coverage["negatives"].items())
    print(f"| {name} | {coverage['texts']:,} | {coverage['with_triple']:.1%} | {coverage['mean_triples']:.2f} | {negatives} | "
          f"{coverage['skipped']:,} | {coverage['texts'] / seconds:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", help="A built dataset folder.")
    parser.add_argument("--dataset_config", default="electronics")
    parser.add_argument("--raw_dir", help="A `slip-hf generate-raw` folder (meta_categories/meta_*.jsonl).")
    args = parser.parse_args()
    print("| titles | count | with >= 1 triple | triples per title | negatives per title | skipped | titles/s |")
    print("|---|---:|---:|---:|---|---:|---:|")
    if args.dataset_dir:
        nodes = load_copurchase_graph(args.dataset_dir, args.dataset_config).nodes
        _report(f"dataset `{Path(args.dataset_dir).name}`", concatenate_datasets(list(nodes.values()))["title"])
    if args.raw_dir:
        titles = []
        for path in sorted(Path(args.raw_dir, "meta_categories").glob("meta_*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    title = json.loads(line).get("title")
                except json.JSONDecodeError:
                    continue
                if title and title.strip():
                    titles.append(title)
        _report("`generate-raw` titles", titles)


if __name__ == "__main__":
    main()
