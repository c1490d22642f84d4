"""`slip-hf`: the command line of slip_hf. Each command is a thin shell over a public Python function.

    slip-hf demo                                        # raw data -> dataset -> CLIP vs SLIP -> Table 2
    slip-hf train recipe.yaml                           # = python training/run_slip.py recipe.yaml
    slip-hf evaluate --model_name_or_path runs/slip --dataset_name data/
    slip-hf ablate recipe.yaml --table components --seeds 0 1 2
    slip-hf leaderboard runs/slip-seed0 runs/slip-seed1 runs/clip-seed0 runs/clip-seed1 --output_dir runs/
    slip-hf evaluate-aro --aro_dir aro/ --model_name_or_path runs/slip openai/clip-vit-base-patch16
    slip-hf make-structure-benchmark --dataset_dir data/ --out_dir product-aro/
    slip-hf generate-raw --raw-dir raw/                 # the embedded synthetic Amazon-schema raw files
    slip-hf build-dataset --raw-dir raw/ --out data/    # raw files -> amazon-copurchase-mm dataset
    slip-hf push-dataset --dataset-dir data/ --repo-id you/amazon-copurchase-mm
    slip-hf toy-train                                   # a minute of SLIP training on a toy graph
    slip-hf export --model_dir runs/slip --format clip --out_dir slip-clip   # for pipelines and sentence-transformers
    slip-hf serve --model runs/slip runs/clip --dataset data/   # the Space's page, locally
    slip-hf embed --model_name_or_path runs/slip --dataset_name data/ --output_dir slip-embeddings
    slip-hf search --index slip-embeddings "usb-c charger"      # the top 10, with titles
    slip-hf serve --index slip-embeddings                       # the Space on the saved index
    slip-hf publish --model_dir runs/slip --dataset_dir data/ --model_repo ... --dataset_repo ... --space_repo ...
    slip-hf <command> --help
"""

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` that accepts both spellings of every long flag, `--raw-dir` and `--raw_dir`, as
    `HfArgumentParser` does for the commands built from dataclasses: one convention across `slip-hf`."""

    def add_argument(self, *names: str, **kwargs):
        spellings = list(names)
        for name in names:
            if name.startswith("--"):
                for other in ("--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-")):
                    if other not in spellings:
                        spellings.append(other)
        return super().add_argument(*spellings, **kwargs)


DESCRIPTION = """\
slip_hf: structure-aware language-image pretraining (SLIP) on transformers / datasets / torch_geometric.

Commands:
  demo            The embedded end-to-end demo: synthetic raw data -> dataset -> CLIP baseline and SLIP
                  trained with the same schedule and seeds on the CPU -> Table 2 on the test split + plots
                  (--backbone siglip: the same with a tiny SigLIP).
  train           Train and evaluate SLIP or the fine-tuning baseline on any supported dual encoder (CLIP,
                  MetaCLIP 2, SigLIP, SigLIP 2) (= python training/run_slip.py; accepts a YAML/JSON recipe as
                  first argument).
  evaluate        Evaluate a SLIP checkpoint or a plain dual encoder on a dataset split: retrieval (Table 2),
                  zero-/few-shot classification, alignment, related items, link prediction (optionally
                  of the relations after a temporal cut), plots.
  ablate          The paper's ablations from a recipe: batch sizes with and without the graph (Table 3, with
                  --equal_steps and --lr_scaling), the components (Table 4), the objectives (CLIP, SLIP,
                  StructXLIP, Structure-CLIP and their combinations), the temporal variants or the structural
                  loss on Z / E / both; several seeds, mean ± std, and the leaderboard of the rows
                  (= python training/ablate.py). Run again, a stopped table reads back its finished runs
                  and resumes the interrupted one.
  export          A trained model as a plain checkpoint of its backbone's class (CLIPModel, SiglipModel, ...;
                  pipeline("zero-shot-image-classification"), SentenceTransformer; the embeddings are exactly
                  SLIP's), or remote code for a SLIP checkpoint saved by slip_hf < 0.2.0.
  leaderboard     One table of evidence from finished run folders: every method's headline number on every
                  task (same-item, related items, link prediction, zero-/5-shot, ARO), mean ± std over
                  seeds, best in bold, and a figure. No retraining.
  evaluate-aro    ARO (VG-Relation, VG-Attribution): does a model prefer the true caption over the same words
                  with subject/object or attributes swapped? SLIP and plain CLIP checkpoints.
  make-structure-benchmark
                  A product-domain structure benchmark in ARO's format from a built dataset (attribute
                  binding, direction of "for").
  generate-raw    Write the embedded synthetic data: Amazon Reviews 2023 raw files (reviews, metadata) and
                  rendered product images, with a known co-purchase structure and planted bad rows.
  build-dataset   Build the co-purchase multimodal graph dataset (amazon-copurchase-mm) from raw Amazon
                  Reviews 2023 files: purchases, co-purchase edges, valid items, k-core, images, CLIP-T,
                  labels, splits, parquet files and the dataset card. Re-running resumes.
  import-graph    Any image-text graph (items + edges files: CSV, parquet, JSON lines) -> the same dataset layout.
  push-dataset    Upload a built dataset folder to the Hugging Face Hub.
  toy-train       Train a tiny CLIP + SLIP head on a toy graph on the CPU and print the loss parts.
  serve           The Space's page on a trained model: search by text or image, co-purchase neighbours,
                  two models side by side (Gradio, on 127.0.0.1).
  embed           A catalogue's embeddings: every item of a dataset (a split or all) through a SLIP model or a
                  plain dual encoder, into parquet shards with a card (image and text embeddings, and Z for
                  SLIP), the model's and dataset's fingerprints, and a FAISS index; resumable, several GPUs
                  under accelerate launch.
  index           (Re)build the search index of an embeddings folder: exact below a size, else approximate
                  within a memory budget, tuned to a measured recall@10.
  search          The top k items of an embeddings folder's index for a text query or an image, with titles.
  publish         Upload the model, its dataset and the Space (hub/space) to the Hub, with --clip_repo also the
                  model's plain-CLIP export; --dry_run lists the files.

Run `slip-hf <command> --help` for a command's options. Errors caused by the input (a missing file, a bad
value, malformed data) print one line; add --debug (or set SLIP_HF_DEBUG=1) for the traceback.
"""


def _quiet_libraries() -> None:
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" on every from_pretrained
    disable_progress_bar()


def _parse_config(config_class: type, prog: str, description: str, argv: Sequence[str]):
    """One dataclass from the command line (`HfArgumentParser`: one flag per field, its help from the metadata)."""
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(config_class, prog=prog, description=description).parse_args_into_dataclasses(argv)
    _quiet_libraries()
    return config


def generate_raw(argv: Sequence[str]) -> int:
    from .data.synthetic import generate_synthetic_raw, summary_table

    parser = ArgumentParser(
        prog="slip-hf generate-raw",
        description="Write synthetic raw files in the Amazon Reviews 2023 schema (see slip_hf.data.synthetic).",
    )
    parser.add_argument("--raw-dir", required=True, help="output folder (gets review_categories/, meta_categories/, images/)")
    parser.add_argument("--category", default="Electronics", help="file stem (default: Electronics)")
    parser.add_argument("--num-bundles", type=int, default=80, help="complement bundles of three product lines (default: 80)")
    parser.add_argument("--items-per-line", type=int, default=6, help="items per product line (default: 6)")
    parser.add_argument("--shoppers-per-bundle", type=int, default=400, help="shoppers per bundle (default: 400)")
    parser.add_argument("--image-size", type=int, default=64, help="rendered image side (default: 64)")
    parser.add_argument("--compress", action="store_true", help="gzip the JSON-lines files")
    parser.add_argument(
        "--num-eras", type=int, default=1,
        help="eras of the time dimension: complements change and lines launch and retire from one era to the next "
             "(default: 1, no change over time)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    summary = generate_synthetic_raw(
        args.raw_dir,
        category=args.category,
        num_bundles=args.num_bundles,
        items_per_line=args.items_per_line,
        shoppers_per_bundle=args.shoppers_per_bundle,
        image_size=args.image_size,
        compress=args.compress,
        num_eras=args.num_eras,
        seed=args.seed,
    )
    print(summary_table(summary))
    return 0


def build_dataset(argv: Sequence[str]) -> int:
    from .data import BuildConfig, build_dataset, summary_table

    config = _parse_config(
        BuildConfig,
        "slip-hf build-dataset",
        "Build amazon-copurchase-mm from raw Amazon Reviews 2023 files (see slip_hf.data.builder). "
        "Intermediate results are kept in --work_dir, so re-running resumes.",
        argv,
    )
    result = build_dataset(config)
    print(summary_table(result.steps))
    print(f"\n{result.num_nodes} nodes, {result.num_edges} edges -> {result.out_dir} (config {result.config_name!r})")
    return 0


def push_dataset(argv: Sequence[str]) -> int:
    from .data import push_dataset_to_hub

    parser = ArgumentParser(prog="slip-hf push-dataset", description="Upload a built dataset folder to the Hub.")
    parser.add_argument("--dataset-dir", required=True, help="folder written by build-dataset")
    parser.add_argument("--repo-id", required=True, help="e.g. you/amazon-copurchase-mm")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    args = parser.parse_args(argv)
    print(push_dataset_to_hub(args.dataset_dir, args.repo_id, private=args.private))
    return 0


def demo(argv: Sequence[str]) -> int:
    from .demo import DemoConfig, run_demo

    config = _parse_config(
        DemoConfig,
        "slip-hf demo",
        "The embedded end-to-end demo (CPU, about 9 minutes on 2 cores with the defaults): generate the synthetic "
        "raw data, build the dataset, train the CLIP baseline and SLIP with the same schedule for each seed, and "
        "print the paper's Table 2 on the test split (mean ± std over seeds), with plots.",
        argv,
    )
    run_demo(config)
    return 0


def train(argv: Sequence[str], prog: str = "slip-hf train") -> int:
    import json

    from .ablation import AblationArguments
    from .experiment import parse_arguments, run_experiment

    model_args, data_args, training_args = parse_arguments(list(argv), prog=prog, recipe_section=(AblationArguments,))
    results = run_experiment(model_args, data_args, training_args)
    if "test" in results:
        print(json.dumps({"test": results["test"]["retrieval"], "files": results["files"]}, indent=1))
    return 0


@dataclass
class EvaluateArguments:
    """`slip-hf evaluate`: which checkpoint, on which data."""

    model_name_or_path: str = field(metadata={"help": "A SLIP checkpoint or a plain dual encoder (CLIP, MetaCLIP 2, SigLIP, "
                                                      "SigLIP 2; hub id or folder)."})
    dataset_name: str = field(metadata={"help": "Hub repo id or local folder of the co-purchase graph dataset."})
    dataset_config: str = field(default="electronics", metadata={"help": "Dataset config."})
    split: str = field(default="test", metadata={"help": "Split to evaluate (the candidate pool)."})
    output_dir: str = field(default="eval", metadata={"help": "Where results and plots go."})
    name: str | None = field(default=None, metadata={"help": "Row name in the tables (default: the checkpoint name)."})
    text_column: str = field(default="title", metadata={"help": "Text column."})
    max_text_length: int | None = field(default=None, metadata={"help": "Tokens per text (default: the tokenizer's)."})
    few_shot: list[int] = field(default_factory=lambda: [1, 5, 10], metadata={"help": "k of the k-shot probes."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    image_pipeline: Literal["tensor", "processor"] = field(
        default="tensor",
        metadata={"help": "'tensor' (default): decode to uint8 and preprocess batched in torch on the model's device "
                  "(slip_hf.pixels). 'processor': the CLIP image processor in the data workers, for checking against a "
                  "processor."},
    )
    temporal_cut: str | None = field(
        default=None,
        metadata={"help": "Temporal split (as in training): link prediction scores the relations first seen after the "
                  "cut (a share of the edges, an ISO date or Unix ms), with the earlier ones as the known graph."},
    )
    graph_pool: str = field(
        default="split", metadata={"help": "Pool of the related-item and link-prediction metrics: 'split' or 'all' items."}
    )
    num_workers: int = field(default=0, metadata={"help": "Data-loader processes that decode the images."})


def evaluate(argv: Sequence[str]) -> int:
    from pathlib import Path

    import torch

    from .data.hub import load_copurchase_graph
    from .embedding import load_dual_encoder
    from .evaluation import EvaluationConfig, evaluate_checkpoint, write_figures, write_report

    args = _parse_config(
        EvaluateArguments,
        "slip-hf evaluate",
        "Evaluate a SLIP checkpoint or a plain dual encoder on one split of the co-purchase graph dataset: retrieval "
        "over the whole split (Table 2), zero-shot and k-shot classification, alignment, related-item retrieval, "
        "zero-shot link prediction, and the two figures.",
        argv,
    )
    path = args.model_name_or_path
    model, image_processor, tokenizer = load_dual_encoder(path)
    model = model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    if args.graph_pool not in ("split", "all"):
        raise ValueError(f"--graph_pool must be 'split' or 'all', got {args.graph_pool!r}.")
    graph = load_copurchase_graph(args.dataset_name, args.dataset_config, temporal_cut=args.temporal_cut)
    node_graph = graph.node_graph()
    config = EvaluationConfig(
        text_column=args.text_column, max_text_length=args.max_text_length, few_shot=tuple(args.few_shot),
        batch_size=args.batch_size, image_pipeline=args.image_pipeline, num_workers=args.num_workers,
    )
    pool = graph.all_nodes() if args.graph_pool == "all" else None
    metrics, embeddings = evaluate_checkpoint(
        model, image_processor, tokenizer, graph.nodes[args.split], config, graph.nodes["train"], node_graph,
        graph.future_graph(), pool,
    )
    name = args.name or Path(path).name
    json_path, markdown_path = write_report({name: [metrics]}, args.output_dir, args.split)
    figures = write_figures(
        {name: (embeddings.image, embeddings.text, embeddings.node_ids)}, graph.nodes[args.split], node_graph,
        args.output_dir, text_column=args.text_column,
    )
    print(markdown_path.read_text())
    print(f"written: {json_path}, {markdown_path}, {', '.join(figures.values())}")
    return 0


@dataclass
class EvaluateAroArguments:
    """`slip-hf evaluate-aro`: which checkpoints, on which ARO-format folder."""

    aro_dir: str = field(metadata={"help": "Folder with visual_genome_relation.json, visual_genome_attribution.json and "
                                   "images/ (the ARO release, or `slip-hf make-structure-benchmark` output)."})
    model_name_or_path: list[str] = field(metadata={"help": "One or more SLIP checkpoints or plain dual encoders (hub ids or folders)."})
    tasks: list[str] = field(default_factory=lambda: ["VG-Relation", "VG-Attribution"], metadata={"help": "Tasks to score."})
    batch_size: int = field(default=64, metadata={"help": "Cases per forward pass."})
    max_text_length: int = field(default=77, metadata={"help": "Tokens per caption."})
    output_file: str | None = field(default=None, metadata={"help": "Also write the results as JSON here."})


def evaluate_aro(argv: Sequence[str]) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from .evaluation.aro import aro_table
    from .evaluation.aro import evaluate_aro as run

    args = _parse_config(
        EvaluateAroArguments,
        "slip-hf evaluate-aro",
        "ARO: accuracy of preferring each image's true caption over its structure-swapped one (VG-Relation: "
        "subject and object swapped; VG-Attribution: two attributes swapped), per relation / attribute pair and "
        "macro-averaged, for SLIP and plain CLIP checkpoints.",
        argv,
    )
    results = {path: run(path, args.aro_dir, args.tasks, args.batch_size, args.max_text_length) for path in args.model_name_or_path}
    print(aro_table(results))
    if args.output_file:
        Path(args.output_file).write_text(json.dumps({m: {t: asdict(r) for t, r in by.items()} for m, by in results.items()}, indent=1))
    return 0


@dataclass
class StructureBenchmarkArguments:
    """`slip-hf make-structure-benchmark`: the product-domain ARO-format benchmark from a built dataset."""

    dataset_dir: str = field(metadata={"help": "A dataset folder built from the embedded generator's raw data."})
    out_dir: str = field(metadata={"help": "Where the ARO-format files and images go."})
    dataset_config: str = field(default="electronics", metadata={"help": "Dataset config."})
    split: str = field(default="test", metadata={"help": "Split whose items make the cases."})
    num_cases: int = field(default=1500, metadata={"help": "Cases per kind (attribute binding, direction of 'for'); the "
                                                     "attribute macro average needs >= 25 cases per colour pair."})
    image_size: int = field(default=64, metadata={"help": "Side of each item's image in the composites."})
    seed: int = field(default=0, metadata={"help": "Seed of the pairing."})


def make_structure_benchmark(argv: Sequence[str]) -> int:
    from .data.structure_benchmark import write_product_structure_benchmark

    args = _parse_config(
        StructureBenchmarkArguments,
        "slip-hf make-structure-benchmark",
        "Write a product-domain structure benchmark in ARO's format: attribute binding (two items side by side, "
        "colours bound to the other product in the false caption) and the direction of 'for' (an accessory inset "
        "on its co-purchased main product).",
        argv,
    )
    counts = write_product_structure_benchmark(
        args.dataset_dir, args.out_dir, args.dataset_config, args.split, args.num_cases, args.image_size, args.seed
    )
    print(f"{counts['attribution']} attribute-binding and {counts['relation']} 'for' cases in {args.out_dir}")
    return 0


def ablate(argv: Sequence[str], prog: str = "slip-hf ablate") -> int:
    from .ablation import AblationArguments, run_ablation
    from .experiment import parse_arguments

    ablation, model_args, data_args, training_args = parse_arguments(list(argv), prog=prog, extra=(AblationArguments,))
    print(run_ablation(ablation, model_args, data_args, training_args)["markdown"])
    return 0


def leaderboard(argv: Sequence[str]) -> int:
    from pathlib import Path

    from .evaluation.leaderboard import read_runs, write_leaderboard
    from .run_folder import results_file

    parser = ArgumentParser(
        prog="slip-hf leaderboard",
        description="One table of evidence from finished runs (no retraining): each method's headline number on every "
                    "task (same-item MRR and R@1, related-item MRR, link-prediction MRR of the mean embedding, Z and the "
                    "GraphSAGE probe, zero-shot and 5-shot accuracy, ARO macro with --aro_dir), mean ± std over seeds, "
                    "best in bold. Runs whose recorded settings agree but for the seed form one row. Writes "
                    "leaderboard.md, leaderboard.png and leaderboard.json.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run folders written by run_slip.py, slip-hf train or ablate "
                        "(each with test_results.json and run_config.json); a folder of such folders is searched")
    parser.add_argument("--aro_dir", default=None, help="also score every run on this ARO-format folder (cached per run)")
    parser.add_argument("--output_dir", default=".", help="where the three files go (default: the current folder)")
    args = parser.parse_args(argv)
    folders = []
    for name in args.run_dirs:
        path = Path(name)
        if not path.is_dir():
            raise FileNotFoundError(f"run folder {path}: no such folder.")
        results_name = results_file(path).name
        found = [path] if results_file(path).is_file() else sorted(p.parent for p in path.rglob(results_name))
        if not found:
            raise FileNotFoundError(f"run folder {path}: no {results_name} in it or below it.")
        folders += [folder for folder in found if folder.resolve() not in {f.resolve() for f in folders}]
    rows = read_runs(folders)
    if args.aro_dir:
        _add_aro(rows, args.aro_dir)
    markdown, markdown_path, figure_path = write_leaderboard(rows, args.output_dir, f"Leaderboard of {len(folders)} runs")
    print(markdown)
    print(f"written: {markdown_path}, {figure_path}, {Path(args.output_dir) / 'leaderboard.json'}")
    return 0


def _add_aro(rows: dict, aro_dir: str) -> None:
    """Score each run on `aro_dir` (cached in the run folder by the benchmark's path and the weights' mtime)."""
    import json
    from pathlib import Path

    from .evaluation.aro import aro_columns

    for results in rows.values():
        for result in results:
            folder = Path(result["_folder"])
            weights = folder / "model.safetensors"
            key = f"{Path(aro_dir).resolve()}|{weights.stat().st_mtime_ns if weights.exists() else 0}"
            cache = folder / "aro_results.json"
            cached = json.loads(cache.read_text()) if cache.is_file() else {}
            if cached.get("key") != key:
                cached = {"key": key, "scores": aro_columns(str(folder), aro_dir)}
                cache.write_text(json.dumps(cached, indent=1))
            result["aro"] = cached["scores"]


@dataclass
class ExportArguments:
    """`slip-hf export`: a trained model for the tools that do not import slip_hf."""

    model_dir: str = field(metadata={"help": "The trained SLIP model's folder (run_slip.py's output_dir)."})
    format: str = field(
        default="clip",
        metadata={"help": "'clip': the towers as a plain checkpoint of the backbone's class (CLIPModel and CLIPProcessor, "
                  "SiglipModel and SiglipProcessor, MetaClip2Model), loadable by its from_pretrained, "
                  "pipeline('zero-shot-image-classification') and SentenceTransformer. "
                  "'remote_code': add the code files and auto_map to a SLIP checkpoint saved by slip_hf < 0.2.0, so "
                  "that AutoModel.from_pretrained(..., trust_remote_code=True) loads it without slip_hf."},
    )
    out_dir: str | None = field(default=None, metadata={"help": "Where to write (required for 'clip'; 'remote_code' "
                                                                "defaults to model_dir, in place)."})
    slip_repo: str | None = field(default=None, metadata={"help": "Hub id of the SLIP model, for the export card's link back."})
    widget_image: str | None = field(default=None, metadata={"help": "Image URL for the Hub widget of the export card."})


def export(argv: Sequence[str]) -> int:
    from .interop import export_clip
    from .remote_code import add_remote_code

    args = _parse_config(
        ExportArguments, "slip-hf export",
        "Export a trained SLIP model for tools that speak its backbone (--format clip: transformers' CLIPModel or "
        "SiglipModel and pipelines, "
        "sentence-transformers; the embeddings are exactly SLIP's) or give an older SLIP checkpoint the remote code "
        "that lets transformers load it without slip_hf (--format remote_code).", argv,
    )
    if args.format == "remote_code":
        files = add_remote_code(args.model_dir, args.out_dir)
        print(f"{args.out_dir or args.model_dir}: auto_map and {len(files)} code files ({', '.join(files)}); load it with "
              "AutoModel.from_pretrained(path, trust_remote_code=True)")
        return 0
    if args.format != "clip":
        raise ValueError(f"--format must be 'clip' or 'remote_code', got {args.format!r}.")
    if not args.out_dir:
        raise ValueError("--format clip needs --out_dir (the export folder).")
    result = export_clip(args.model_dir, args.out_dir, slip_repo=args.slip_repo, widget_image=args.widget_image)
    print(f"{result.source_type} model {args.model_dir} -> plain dual encoder in {result.out_dir} ({len(result.files)} files: "
          f"{', '.join(result.files)})")
    for item in result.left_out:
        print(f"left out: {item}")
    return 0


def toy_train(argv: Sequence[str]) -> int:
    parser = ArgumentParser(
        prog="slip-hf toy-train",
        description="Train a tiny CLIP + SLIP head on the embedded toy product graph (CPU, about a minute).",
    )
    parser.add_argument("--num-nodes", type=int, default=1200, help="toy graph size (default: 1200)")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps (default: 60)")
    parser.add_argument("--batch-size", type=int, default=128, help="nodes per batch (default: 128)")
    parser.add_argument("--image-size", type=int, default=32, help="rendered image side in pixels (default: 32)")
    parser.add_argument("--sampler", choices=("graph", "uniform"), default="graph", help="batch sampler (default: graph)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="CLIP top-layer LR (default: 1e-3)")
    parser.add_argument("--graph-learning-rate", type=float, default=4e-3, help="graph-head LR (default: 4e-3)")
    parser.add_argument("--lambda-graph", type=float, default=0.05, help="weight of the structural loss (default: 0.05)")
    parser.add_argument("--lambda-aux", type=float, default=0.1, help="weight of the category loss (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--output-dir", default=None, help="save the trained model and tokenizer here")
    args = parser.parse_args(argv)

    import tempfile

    import numpy as np
    import torch

    from . import SlipConfig, SlipModel
    from .graph_batching import (
        GraphClusterBatchSampler,
        NodeGraph,
        UniformBatchSampler,
        mean_batch_edge_density,
    )
    from .processing import NodeTransform
    from .toy import make_toy_graph, tiny_clip_config, toy_image_processor, train_toy_tokenizer
    from .trainer import SlipTrainer, SlipTrainingArguments

    _quiet_libraries()
    torch.manual_seed(args.seed)
    print(f"Generating the toy graph ({args.num_nodes} nodes) ...", flush=True)
    nodes, edges = make_toy_graph(num_nodes=args.num_nodes, image_size=args.image_size, seed=args.seed)
    graph = NodeGraph.from_edge_table(edges, nodes.num_rows)
    tokenizer = train_toy_tokenizer(nodes["title"], max_length=16)
    dataset = nodes.with_transform(NodeTransform(toy_image_processor(args.image_size), tokenizer, max_length=16))
    rows = np.asarray(nodes["node_id"])
    density_graph = mean_batch_edge_density(GraphClusterBatchSampler(graph, rows, args.batch_size, seed=args.seed), graph)
    density_uniform = mean_batch_edge_density(UniformBatchSampler(rows, args.batch_size, seed=args.seed), graph)
    print(
        f"graph: {graph.num_nodes} nodes, {graph.num_edges} edges | edges per node in a batch of {args.batch_size}: "
        f"graph sampler {density_graph:.3f}, uniform {density_uniform:.3f}"
    )
    config = SlipConfig(
        clip_config=tiny_clip_config(tokenizer, hidden_size=64, num_layers=2, image_size=args.image_size),
        graph_hidden_size=128,
        num_labels=nodes.features["label"].num_classes,
        id2label=dict(enumerate(nodes.features["label"].names)),
        lambda_graph=args.lambda_graph,
        lambda_aux=args.lambda_aux,
    )
    training_args = SlipTrainingArguments(
        output_dir=args.output_dir or tempfile.mkdtemp(prefix="slip_toy_"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        graph_learning_rate=args.graph_learning_rate,
        warmup_steps=max(1, args.steps // 10),
        logging_steps=max(1, args.steps // 10),
        batch_sampler=args.sampler,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
    )
    trainer = SlipTrainer(model=SlipModel(config), args=training_args, graph=graph, train_dataset=dataset)
    trainer.train()
    print("\n| step | loss | loss_clip | loss_graph | loss_aux | edges/node |")
    print("|---:|---:|---:|---:|---:|---:|")
    for entry in trainer.state.log_history:
        if "loss" in entry:
            print(
                f"| {entry['step']} | {entry['loss']:.4f} | {entry['loss_clip']:.4f} | "
                f"{entry.get('loss_graph', float('nan')):.4f} | {entry.get('loss_aux', float('nan')):.4f} | "
                f"{entry.get('edges_per_node', 0.0):.3f} |"
            )
    if args.output_dir:
        trainer.save_model(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        print(f"\nmodel and tokenizer saved to {args.output_dir}")
    return 0


def embed(argv: Sequence[str]) -> int:
    import time

    from .search import EmbedArguments, embed_catalogue, index_folder, read_record
    from .search.embed import process_state

    args = _parse_config(
        EmbedArguments, "slip-hf embed",
        "Embed every item of a catalogue (a dataset written by build-dataset or import-graph, one split or all) with a "
        "SLIP model or a plain dual encoder: parquet shards of node_id, title, image_embedding, text_embedding and, "
        "for SLIP, node_embedding (Z over the dataset's graph), with a card and the model's and dataset's fingerprints; "
        "then a FAISS index of the image and text embeddings. A stopped run resumes from its finished shards; under "
        "accelerate launch each process embeds its own shards.", argv,
    )
    started = time.perf_counter()
    folder = embed_catalogue(args)
    if not process_state().is_main_process:
        return 0
    record = read_record(folder)
    seconds = time.perf_counter() - started
    print(f"{record.rows:,} items of {record.dataset} ({record.split}) -> {folder}: {', '.join(record.dims)} "
          f"({record.dtype}), {record.num_shards} shard(s), {seconds:.1f} s")
    if args.index:
        index_folder(folder, memory_budget=args.memory_budget, exact_below=args.exact_below, rebuild=False)
    return 0


def index(argv: Sequence[str]) -> int:
    from .search.index import IndexArguments, index_folder

    args = _parse_config(
        IndexArguments, "slip-hf index",
        "Build and save the FAISS index of an embeddings folder's vector columns: exact (flat) below --exact_below items, "
        "else an IVF index of 4-bit PQ codes re-ranked in float16, whose resident part fits --memory_budget, with "
        "nprobe and k_factor tuned until recall@10 on 1,000 queries reaches --target_recall.", argv,
    )
    index_folder(args.index, tuple(args.columns), args.memory_budget, args.exact_below, args.target_recall)
    return 0


def search(argv: Sequence[str]) -> int:
    from .search import CatalogueSearch

    parser = ArgumentParser(prog="slip-hf search", description=(
        "The top k items of an embeddings folder (slip-hf embed) for a text query (against the items' images) or an "
        "image (--image, against their titles), with scores, node ids and titles. The query model is the one the "
        "folder records; another model, or the same folder retrained, is refused by its fingerprint."))
    parser.add_argument("query", nargs="?", default=None, help="the text to search for, e.g. \"usb-c charger\"")
    parser.add_argument("--index", required=True, help="the embeddings folder written by slip-hf embed")
    parser.add_argument("--image", default=None, help="search with this image file instead of a text")
    parser.add_argument("--k", type=int, default=10, help="results (default: 10)")
    parser.add_argument("--against", choices=("image", "text"), default=None,
                        help="what to search: the items' images or titles (default: images for a text, titles for an image)")
    parser.add_argument("--model", default=None, help="the query model (default: the one the folder records)")
    args = parser.parse_args(argv)
    if (args.query is None) == (args.image is None):
        parser.error("give a text query or --image, one of the two.")
    _quiet_libraries()
    catalogue = CatalogueSearch(args.index, args.model)
    if args.image is not None:
        hits = catalogue.image(args.image, args.k, args.against or "text")
    else:
        hits = catalogue.text(args.query, args.k, args.against or "image")
    width = len(f"{max((hit.node_id for hit in hits), default=0)}")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}  {hit.score:.4f}  {hit.node_id:>{width}}  {hit.title}")
    return 0


@dataclass
class ServeArguments:
    """`slip-hf serve`: the Space's page, locally."""

    model: list[str] = field(default_factory=list, metadata={
        "help": "One SLIP checkpoint or plain dual encoder (folder or Hub id), or two to compare side by side; with "
                "--index, the query model of each index (default: the one it records)."})
    dataset: str | None = field(default=None, metadata={"help": "The co-purchase graph dataset (folder or Hub id) to search "
                                                               "(with --index: default the one it records)."})
    index: list[str] = field(default_factory=list, metadata={
        "help": "One or two embeddings folders (slip-hf embed) whose saved indexes the page searches: nothing is embedded "
                "at start; the model and the dataset must be the ones embedded (fingerprints)."})
    config: str = field(default="electronics", metadata={"help": "Dataset config."})
    split: str = field(default="test", metadata={"help": "Split to search, or 'all'."})
    cache_dir: str = field(default=".slip_space_cache", metadata={"help": "Where the embeddings (safetensors) and the catalogue's image files are cached."})
    max_text_length: int | None = field(default=None, metadata={"help": "Tokens per title (default: the tokenizer's)."})
    concurrency: int = field(default=8, metadata={"help": "Searches served at once (Gradio's default_concurrency_limit)."})
    threads_per_search: int = field(default=1, metadata={"help": "torch threads per search: searches run side by side, "
                                                                 "so one each serves more visitors (see the Space guide)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (0.0.0.0 to share on the network)."})
    port: int = field(default=7860, metadata={"help": "Port."})


def serve(argv: Sequence[str]) -> int:
    from .space import build_space, load_space

    args = _parse_config(
        ServeArguments, "slip-hf serve",
        "Start the Space's page on a trained model: text -> image and image -> text search over a dataset split, "
        "each item's co-purchase neighbours (click to move through the graph), and with two models both result "
        "lists side by side. Embeddings are computed once and cached, or read from saved indexes (--index, written "
        "by slip-hf embed).", argv,
    )
    if len(args.model) > 2 or len(args.index) > 2:
        raise ValueError("--model takes one or two checkpoints, --index one or two embeddings folders.")
    page = load_space(args.model, args.dataset, args.config, args.split, args.cache_dir, args.max_text_length,
                      embeddings=args.index)
    build_space(page, concurrency=args.concurrency, threads_per_search=args.threads_per_search).launch(
        server_name=args.host, server_port=args.port)
    return 0


@dataclass
class PublishArguments:
    """`slip-hf publish`: model, dataset and Space to the Hub in one go."""

    model_dir: str = field(metadata={"help": "The trained model's folder (with its generated card)."})
    dataset_dir: str = field(metadata={"help": "The built dataset's folder."})
    model_repo: str = field(metadata={"help": "Model repo id, e.g. you/slip-electronics."})
    dataset_repo: str = field(metadata={"help": "Dataset repo id, e.g. you/amazon-copurchase-mm."})
    space_repo: str = field(metadata={"help": "Space repo id, e.g. you/slip-search."})
    space_dir: str = field(default="hub/space", metadata={"help": "The Space's folder (app.py, requirements.txt, README.md)."})
    clip_repo: str | None = field(
        default=None, metadata={"help": "Also upload the model's plain-CLIP export (slip-hf export --format clip) to this "
                                "model repo, e.g. you/slip-electronics-clip, for pipelines and sentence-transformers."}
    )
    index_dir: str | None = field(default=None, metadata={"help": "Also upload this embeddings folder with its saved index "
                                                                  "(slip-hf embed of the model), which the Space then searches "
                                                                  "without embedding at start."})
    index_repo: str | None = field(default=None, metadata={"help": "The dataset repo of --index_dir, e.g. you/slip-electronics-index."})
    dry_run: bool = field(default=False, metadata={"help": "List every file and its target repo; upload nothing."})
    private: bool = field(default=False, metadata={"help": "Create private repos."})


def publish(argv: Sequence[str]) -> int:
    import tempfile

    from .space.publish import plan_publish
    from .space.publish import publish as upload

    args = _parse_config(
        PublishArguments, "slip-hf publish",
        "Upload a trained model (with its card), its dataset and the Space to the Hugging Face Hub; the Space's "
        "card is pointed at the two. --dry_run lists what would go where.", argv,
    )
    with tempfile.TemporaryDirectory(prefix="slip_publish_") as staging:
        uploads = plan_publish(args.model_dir, args.dataset_dir, args.space_dir, args.model_repo, args.dataset_repo,
                               args.space_repo, args.clip_repo, staging, args.index_dir, args.index_repo)
        for item in uploads:
            files = item.files()
            print(f"{item.repo_type} {item.repo_id} <- {item.folder} ({len(files)} files)")
            for name in files:
                print(f"  {name}")
        if args.dry_run:
            print("dry run: nothing uploaded.")
            return 0
        for url in upload(uploads, private=args.private):
            print(url)
    return 0


def import_graph(argv: Sequence[str]) -> int:
    from .data import summary_table
    from .data.import_graph import ImportConfig
    from .data.import_graph import import_graph as run

    config = _parse_config(
        ImportConfig, "slip-hf import-graph",
        "Turn any image-text graph (items and edges as CSV, TSV, parquet or JSON lines) into a slip_hf dataset, in "
        "the layout build-dataset writes: remapped node ids, typed features, a seeded 60/10/30 split (or --split_column), "
        "card and stats. Dangling, self and repeated edges and items without text or image are dropped and counted.", argv,
    )
    result = run(config)
    print(summary_table(result.steps))
    print(f"-> {result.num_nodes} nodes, {result.num_edges} edges, splits {result.stats['splits']} in {config.out_dir} "
          f"(config {config.config_name!r})")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "demo": demo,
    "train": train,
    "evaluate": evaluate,
    "ablate": ablate,
    "evaluate-aro": evaluate_aro,
    "make-structure-benchmark": make_structure_benchmark,
    "generate-raw": generate_raw,
    "build-dataset": build_dataset,
    "import-graph": import_graph,
    "push-dataset": push_dataset,
    "leaderboard": leaderboard,
    "export": export,
    "toy-train": toy_train,
    "serve": serve,
    "embed": embed,
    "index": index,
    "search": search,
    "publish": publish,
}


USER_ERRORS = (OSError, ValueError, KeyError)
"""What a user's input causes (missing or unreadable files and folders, bad values, malformed data, a model or
dataset that cannot be found); `slip-hf` prints these as one line. Anything else is a bug and keeps its
traceback, except a data worker that died (see [`user_error_line`])."""

_QUOTES = "'\""
_WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process (\d+)\.")


def user_error_line(error: BaseException) -> str | None:
    """The one line that explains an error caused by the input or the machine, or `None` for a bug.

    * `OSError`, `ValueError`, `KeyError`: their message, on one line;
    * the same raised inside a DataLoader worker (torch re-raises it with the worker's whole traceback as the
      message): the worker's number and the original message (e.g. a corrupt image, with its node id);
    * a DataLoader worker that died (killed by the kernel for lack of memory, a segfault in a decoder): what
      happened and what to change;
    * a full disk or quota (`ENOSPC`, `EDQUOT`): what was being written, the space free and what to run next
      (`slip_hf.faults.DiskFull` already says so, with the newest checkpoint and the resume command).
    """
    from .faults import DiskFull, free_bytes, is_disk_full

    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    if isinstance(error, RuntimeError) and "DataLoader worker (pid" in text:
        return (f"a data worker died ({' '.join(text.split())}); most often the machine ran out of memory: lower "
                "--dataloader_num_workers, --dataloader_prefetch_factor or the batch size (the kernel log, `dmesg`, says "
                "what killed it)")
    if is_disk_full(error) and not isinstance(error, DiskFull):  # also from writers that raise no OSError
        where = getattr(error, "filename", None) or "a file"
        free = f"{free_bytes(where) / 2**20:,.1f} MB free; " if where != "a file" else ""
        return f"no space left on the device writing {where} ({free}{' '.join(str(error).split())[:200]}); free some space, then run the same command again"
    if not isinstance(error, USER_ERRORS):
        return None
    worker = _WORKER_ERROR.match(text)
    if worker:  # the original error is the traceback's last line: "ValueError: node 5: image cannot be decoded ..."
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        kind, _, message = last.partition(": ")
        original = message if message and kind.split(".")[-1] == worker.group(1) else last
        return f"data worker {worker.group(2)}: {original.strip(_QUOTES)}"
    return " ".join(text.split()) or type(error).__name__


def run_command(name: str, argv: Sequence[str], prog: str | None = None) -> int:
    """Run command `name` of `COMMANDS` with slip-hf's error handling: an error caused by the input prints
    `<prog>: error: ...` on one line of stderr and returns 2, as argparse does for bad flags; `--debug` (or
    SLIP_HF_DEBUG=1) shows the traceback instead. `prog` defaults to `slip-hf <name>` (run_slip.py passes its own)."""
    argv = list(argv)
    debug = "--debug" in argv or os.environ.get("SLIP_HF_DEBUG", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    prog = prog or f"slip-hf {name}"
    from .faults import Preempted

    try:
        return COMMANDS[name](argv, prog) if name in _TAKES_PROG else COMMANDS[name](argv)
    except Preempted as notice:  # not an error: the run saved its checkpoint and stops, as asked
        if os.environ.get("RANK", "0") == "0":  # one line for the job, from its main process
            print(f"{prog}: {notice}", file=sys.stderr)
        return notice.exit_code
    except Exception as error:
        line = user_error_line(error)
        if debug or line is None:
            raise
        print(f"{prog}: error: {line} (--debug shows the traceback)", file=sys.stderr)
        return 2


_TAKES_PROG = {"train", "ablate"}
"""Commands that scripts outside `slip-hf` also run (training/run_slip.py, training/ablate.py) under their own name."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command (see [`run_command`] for how errors are reported)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: slip-hf <command> [options] [--debug]\n\n{DESCRIPTION}")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"slip-hf: error: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
