"""`slip-hf`: command-line entry point of slip_hf.

    slip-hf toy-train --steps 60          # train SLIP on the embedded toy graph, print the loss parts
    slip-hf toy-train --help
"""

import argparse
import sys
import tempfile
from collections.abc import Sequence

DESCRIPTION = """\
slip_hf: structure-aware language-image pretraining (SLIP) on transformers / datasets / torch_geometric.

Commands:
  toy-train   Generate the embedded toy product graph (rendered images, titles, co-purchase edges), train a
              tiny CLIP + SLIP head on it with SlipTrainer on the CPU, and print the loss parts
              (loss_clip, loss_graph, loss_aux) and the batch edge density per logging step.
"""


def _toy_train(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from . import SlipConfig, SlipModel
    from .graph_batching import GraphClusterBatchSampler, NodeGraph, UniformBatchSampler, mean_batch_edge_density
    from .processing import NodeTransform
    from .toy import make_toy_graph, tiny_clip_config, toy_image_processor, train_toy_tokenizer
    from .trainer import SlipTrainer, SlipTrainingArguments

    hf_logging.set_verbosity_error()
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
    model = SlipModel(config)
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="slip_toy_")
    training_args = SlipTrainingArguments(
        output_dir=output_dir,
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
    trainer = SlipTrainer(model=model, args=training_args, graph=graph, train_dataset=dataset)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slip-hf", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="command")
    toy = commands.add_parser(
        "toy-train",
        help="train SLIP on the embedded toy graph and print the loss parts",
        description="Train a tiny CLIP + SLIP head on the embedded toy product graph (CPU, about a minute).",
    )
    toy.add_argument("--num-nodes", type=int, default=1200, help="toy graph size (default: 1200)")
    toy.add_argument("--steps", type=int, default=60, help="optimizer steps (default: 60)")
    toy.add_argument("--batch-size", type=int, default=128, help="nodes per batch (default: 128)")
    toy.add_argument("--image-size", type=int, default=32, help="rendered image side in pixels (default: 32)")
    toy.add_argument("--sampler", choices=("graph", "uniform"), default="graph", help="batch sampler (default: graph)")
    toy.add_argument("--learning-rate", type=float, default=1e-3, help="CLIP top-layer LR (default: 1e-3)")
    toy.add_argument("--graph-learning-rate", type=float, default=4e-3, help="graph-head LR (default: 4e-3)")
    toy.add_argument("--lambda-graph", type=float, default=0.05, help="weight of the structural loss (default: 0.05)")
    toy.add_argument("--lambda-aux", type=float, default=0.1, help="weight of the category loss (default: 0.1)")
    toy.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    toy.add_argument("--output-dir", default=None, help="save the trained model and tokenizer here")
    toy.set_defaults(handler=_toy_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
