"""The dataset card (`README.md` with YAML metadata), generated from the builds' own statistics.

Every number in the card comes from `stats/<config>.json`, written by [`build_dataset`]; nothing is typed by
hand. Re-building any config regenerates the card for all configs in the folder.
"""

import json
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Features
from huggingface_hub import DatasetCard, DatasetCardData

from .writing import SPLITS, edges_config_name

CITATION = """\
@misc{lu2025slip,
  title  = {SLIP: Structural-aware Language-Image Pretraining for Vision-Language Alignment},
  author = {Lu, Wenbo},
  year   = {2025}
}
@article{hou2024bridging,
  title   = {Bridging Language and Items for Retrieval and Recommendation},
  author  = {Hou, Yupeng and Li, Jiacheng and He, Zhankui and Yan, An and Chen, Xiusi and McAuley, Julian},
  journal = {arXiv preprint arXiv:2403.03952},
  year    = {2024}
}"""


def _size_category(nodes: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if nodes < limit:
            return name
    return "1M<n<10M"


def _clip_cell(entry: dict | None) -> str:
    return f"{entry['mean']:.1f} ± {entry['std']:.1f}" if entry else "not computed"


def _raw_input(stats: dict) -> str:
    source = stats.get("source")
    if source:  # `slip-hf import-graph`
        return (f"Raw input: {source['nodes']:,} rows of `{source['nodes_file']}` and {source['edges']:,} rows of "
                f"`{source['edges_file']}` (`slip-hf import-graph`).")
    purchases = stats["purchases"]
    return f"Raw input: {purchases['reviews']:,} reviews, {purchases['users']:,} users, {purchases['items']:,} items."


def _bad_lines(stats: dict) -> str:
    """What the build skipped with `--on_bad_lines skip`, per raw file, with the first examples."""
    parts = []
    for kind, entry in (stats.get("bad_lines") or {}).items():
        if entry["skipped"] or entry["truncated"]:
            examples = "; ".join(entry["examples"][:2])
            parts.append(
                f"{kind}: {entry['skipped']:,} in `{entry['file']}`" + (f" ({examples})" if examples else "")
                + (", and the gzip stream ends early (an interrupted download)" if entry["truncated"] else "")
            )
    return " Bad lines skipped (`on_bad_lines=skip`): " + "; ".join(parts) + "." if parts else ""


def _section(stats: dict) -> str:
    name = stats["config_name"]
    lines = [f"### `{name}` ({stats['category']})", ""]
    lines += ["| split | nodes |", "|---|---:|"] + [f"| {s} | {stats['splits'][s]:,} |" for s in SPLITS] + [""]
    lines += [
        f"Degree: mean {stats['mean_degree']:.1f}, min {stats['min_degree']}, max {stats['max_degree']}. " + _raw_input(stats)
        + _bad_lines(stats),
        "",
        "Build steps (what each kept and what it dropped, with the reason):",
        "",
        "| step | kept | dropped |",
        "|---|---:|---|",
    ]
    for step in stats["steps"]:
        dropped = "; ".join(f"{reason}: {count:,}" for reason, count in step["dropped"].items() if count) or "-"
        lines.append(f"| {step['step']} | {step['kept']:,} | {dropped} |")
    lines += ["", f"Labels (category path level {stats['config']['label_depth']}):", "", "| label | class | nodes |", "|---:|---|---:|"]
    lines += [f"| {i} | {label} | {count:,} |" for i, (label, count) in enumerate(stats["labels"].items())]
    if stats.get("graph_signal"):
        signal = stats["graph_signal"]
        lines += [
            "",
            "Graph signal (synthetic data, whose latent product lines are known): share of node pairs that belong "
            "to the same product line, by hop distance. 1-hop neighbours are complements; 2-hop neighbours are "
            "mostly similar items of the same line.",
            "",
            "| pairs | same product line |",
            "|---|---:|",
        ]
        lines += [f"| {key} | {value:.3f} |" for key, value in signal.items()]
    config = stats["config"]
    lines += [
        "",
        "Build parameters: " + ", ".join(f"`{key}={value}`" for key, value in config.items() if key != "category"),
        "",
    ]
    return "\n".join(lines)


def _dataset_info(out_dir: Path, config_name: str, splits: tuple[str, ...]) -> dict:
    """The card's `dataset_info` entry of one config, read from the parquet files on disk.

    `load_dataset(folder, config)` hashes the card (not the files) into its cache key; recording the split
    sizes and the file bytes of this very build makes a rebuild (or a same-named folder) a new cache entry.
    """
    files = {split: sorted((out_dir / config_name).glob(f"{split}-*.parquet")) for split in splits}
    first = next(path for paths in files.values() for path in paths)
    features = Features.from_arrow_schema(pq.read_schema(first))
    return {
        "config_name": config_name,
        "features": features._to_yaml_list(),
        "splits": [
            {"name": split, "num_examples": sum(pq.ParquetFile(p).metadata.num_rows for p in paths)}
            for split, paths in files.items()
        ],
        "download_size": sum(p.stat().st_size for paths in files.values() for p in paths),
    }


def write_dataset_card(out_dir: str | Path, repo_id: str | None = None) -> Path:
    """(Re)write `<out_dir>/README.md` from every `stats/<config>.json` in `out_dir`."""
    out_dir = Path(out_dir)
    all_stats = [json.loads(path.read_text()) for path in sorted((out_dir / "stats").glob("*.json"))]
    if not all_stats:
        raise FileNotFoundError(f"no stats/*.json in {out_dir}: build a config first.")
    configs, infos = [], []
    for stats in all_stats:
        name = stats["config_name"]
        configs.append(
            {"config_name": name, "data_files": [{"split": s, "path": f"{name}/{s}-*.parquet"} for s in SPLITS]}
        )
        configs.append({"config_name": edges_config_name(name), "data_files": [{"split": "train", "path": f"{edges_config_name(name)}/*.parquet"}]})
        infos += [_dataset_info(out_dir, name, SPLITS), _dataset_info(out_dir, edges_config_name(name), ("train",))]
    licenses = sorted({stats["config"]["license"] for stats in all_stats})
    data = DatasetCardData(
        pretty_name=all_stats[0]["category"] if all("source" in stats for stats in all_stats) else "Amazon Co-purchase Multimodal Graph",
        license=licenses[0] if len(licenses) == 1 else licenses,
        language=["en"],
        task_categories=["feature-extraction", "zero-shot-image-classification", "text-to-image", "image-to-text"],
        tags=["graph", "multimodal", "co-purchase", "amazon", "clip", "slip"],
        size_categories=_size_category(sum(stats["nodes"] for stats in all_stats)),
        configs=configs,
        dataset_info=infos,
    )
    repo = repo_id or "<user>/amazon-copurchase-mm"
    first = all_stats[0]["config_name"]
    table = "\n".join(
        f"| {s['category']} | {s['nodes'] / 1000:,.1f} | {s['edges'] / 1000:,.1f} | {_clip_cell(s['clip_t']['title'])} | "
        f"{_clip_cell(s['clip_t']['description'])} |"
        for s in all_stats
    )
    models = sorted({s["clip_t_model"] for s in all_stats if s["clip_t_model"]})
    imported = all("source" in stats for stats in all_stats)
    intro = (
        f"""# {all_stats[0]["category"]}

Image-text items linked by a graph, imported with `slip-hf import-graph` into the layout of the SLIP
datasets (`slip_hf`): node ids 0..N-1 across the splits, typed features, a `<config>_edges` config. Each
node has a text (`title`), an image and a label. What the import dropped, and why, is counted below."""
        if imported else
        """# Amazon Co-purchase Multimodal Graph

Products as image-text pairs, linked by co-purchase edges: the dataset of SLIP (Structure-aware
Language-Image Pretraining, Lu 2025, §5), built from the Amazon Reviews 2023 raw files (Hou et al. 2024) by
`slip_hf.data.build_dataset` (`slip-hf build-dataset`). Two items are linked when at least
`min_copurchase` distinct users bought both; the graph is then reduced to its k-core. Each node has a title,
a description, an image, its category path and a label."""
    )
    body = f"""
{intro}

## Load it

```python
from datasets import load_dataset
from slip_hf.data import load_copurchase_graph

nodes = load_dataset("{repo}", "{first}")              # DatasetDict: train / validation / test
edges = load_dataset("{repo}", "{edges_config_name(first)}", split="train")
graph = load_copurchase_graph("{repo}", "{first}")     # both, plus .node_graph() and .to_pyg()
```

A local copy (a folder written by `slip-hf build-dataset`, or a downloaded snapshot) loads the same way.
`datasets` (checked with 3.x to 5.2) caches a local folder under its *name* and a hash of this card, not of
the files. The card records every config's split sizes and file bytes (`dataset_info`), so a rebuild gives
a new cache entry; for a guarantee that the rows are the files' rows, use `load_copurchase_graph` or
`slip_hf.data.load_config(folder, config)`, which read the parquet files through their paths and
modification times, or pass `download_mode="force_redownload"` to `load_dataset`.

Node ids (`node_id`, `src`, `dst`) run over the whole config; the split is a node attribute (`split`), so the
graph stays whole and a model can see the neighbours of a test node during training without seeing its text
or image.

## Statistics

| Main category | Nodes (k) | Edges (k) | CLIP-T title | CLIP-T description |
|---|---:|---:|---:|---:|
{table}

CLIP-T is `100 × cos(image, text)` under {", ".join(f"`{m}`" for m in models) or "a CLIP checkpoint (not computed for these builds)"}.

{chr(10).join(_section(stats) for stats in all_stats)}
## Fields

Nodes: `node_id` (int64), `parent_asin`, `title`, `description` (the description lines joined), `features`
(list of bullet points), `store`, `image` (JPEG), `category_path` (list), `label` (ClassLabel), `clip_t_title`,
`clip_t_description` (float32, NaN when not computed or the description is empty), `split`, and `reviews`
(list of review texts, most helpful first) when the build kept them.

Edges: `src`, `dst` (node ids, `src < dst`, each undirected edge once), `count` (distinct co-buyers),
`first_time`, `last_time` (Unix milliseconds of the first and last co-purchase; one user's co-purchase
happens when the second of the two items is bought).

## Time-aware use

The edge times allow a temporal split (§7.2 of the SLIP paper): train on the relations first seen before a
cut time T and predict the ones that appear after it, with the node split unchanged.

```python
graph = load_copurchase_graph("{repo}", "{first}", temporal_cut=0.8)   # or "2022-06-01", or Unix ms
graph.edges, graph.future_edges, graph.cut_time      # before T (the training graph), from T on, T
```

`python training/run_slip.py ... --temporal_cut 0.8` trains on `graph.edges` and scores link prediction on
the new relations; `--positive_recency decay|window` and `--positive_count_weighting log|linear` weigh the
structural loss's positives by the age of an edge's last co-purchase and by its number of co-buyers.

## License and citation

{"The items, texts, images and edges come from the imported files; their terms apply. An edge's `count` is "
 "its weight (1 without one), and its times are the import's time column (0 without one)." if imported else
 "Derived from Amazon Reviews 2023 (McAuley Lab); its terms of use apply to the texts and images. The "
 "authors of SLIP released their own build as `wenboluu/ACMMG` (cc-by-4.0)."}

```bibtex
{CITATION}
```
"""
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")
    path = out_dir / "README.md"
    card.save(path)
    return path


__all__ = ["write_dataset_card"]
