"""What does SLIP cost on top of CLIP, and how many edges do graph-aware batches hold?

1. Train-step time (forward + backward + AdamW step) of SlipModel (paper head: GAT 2 x 512 x 4, fusion,
   aux classifier, all three losses) against plain CLIPModel with the same CLIP config and batch, measured
   interleaved in one run; median of `--steps` steps after `--warmup`. Prints the ratio SLIP / CLIP.
2. Batch edge density (undirected edges inside a batch per node) of the graph-aware sampler against uniform
   sampling on a power-law graph of `--graph-nodes` nodes (Chung-Lu, exponent 2.5, Electronics-like mean
   degree), over one full epoch, for several batch sizes. Also the sampler's time per epoch.
3. SLIP + StructXLIP and SLIP + Structure-CLIP against SLIP on the same batches: the collator's extra work
   (StructXLIP: Canny edge maps with kornia, structure-centric captions, their tokens and chunks;
   Structure-CLIP: the negatives' and triples' tokens) and the train step, with the step's extra time split
   into its extra tower passes (each forward + backward, timed alone) and the rest (the losses).

    python benchmarks/step_overhead.py                      # ~8 min on 2 CPU cores
    python benchmarks/step_overhead.py --sections structxlip structure_clip
"""

import argparse
import statistics
import time

import numpy as np
import torch
from transformers import CLIPConfig, CLIPModel
from transformers.utils import logging as hf_logging

from slip_hf import SlipConfig, SlipModel
from slip_hf.graph_batching import (
    GraphClusterBatchSampler,
    NodeGraph,
    UniformBatchSampler,
    edges_per_node,
    mean_batch_edge_density,
)
from slip_hf.toy import power_law_edges


def benchmark_clip_config(hidden: int, layers: int) -> CLIPConfig:
    tower = {"hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": layers, "num_attention_heads": hidden // 64}
    return CLIPConfig(
        text_config={**tower, "vocab_size": 4096, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={**tower, "image_size": 32, "patch_size": 4},
        projection_dim=hidden,
    )


def make_batch(batch_size: int, graph: NodeGraph, rows: np.ndarray, generator: torch.Generator) -> dict:
    input_ids = torch.randint(2, 4096, (batch_size, 24), generator=generator)
    input_ids[:, -1] = 1
    edge_index, _ = graph.batch_edge_index(rows)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch_size, 3, 32, 32, generator=generator),
        "edge_index": edge_index,
        "labels": torch.randint(0, 20, (batch_size,), generator=generator),
    }


def train_step(model, optimizer, batch: dict, slip: bool) -> float:
    start = time.perf_counter()
    if slip:
        loss = model(**batch, return_loss=True).loss
    else:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
        loss = model(**inputs, return_loss=True).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def step_time_ratio(args, graph: NodeGraph) -> None:
    clip_config = benchmark_clip_config(args.hidden, args.layers)
    torch.manual_seed(0)
    slip = SlipModel(SlipConfig(clip_config=clip_config, num_labels=20))
    clip = CLIPModel(clip_config)
    clip.load_state_dict(slip.clip.state_dict())
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in (("slip", slip), ("clip", clip))}
    sampler = GraphClusterBatchSampler(graph, np.arange(graph.num_nodes), args.batch_size, seed=0)
    batches = iter(sampler)
    generator = torch.Generator().manual_seed(0)
    times = {"slip": [], "clip": []}
    density = []
    for step in range(args.warmup + args.steps):
        batch = make_batch(args.batch_size, graph, np.asarray(next(batches)), generator)
        density.append(edges_per_node(batch["edge_index"], args.batch_size))
        order = ("slip", "clip") if step % 2 == 0 else ("clip", "slip")  # interleave to cancel drift
        for name in order:
            model = slip if name == "slip" else clip
            elapsed = train_step(model, optimizers[name], batch, slip=name == "slip")
            if step >= args.warmup:
                times[name].append(elapsed)
    slip_median, clip_median = statistics.median(times["slip"]), statistics.median(times["clip"])
    n_params = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731 (a one-line helper)
    print(f"\n## Train-step time, batch {args.batch_size}, CPU threads {torch.get_num_threads()}")
    print(f"CLIP: {args.layers} layers x {args.hidden} per tower, 32x32 images / patch 4, 24 tokens; "
          f"CLIP {n_params(clip):.1f} M params, SLIP {n_params(slip):.1f} M params")
    print(f"mean batch edges per node during the run: {np.mean(density):.3f}")
    print("| model | median step (s) | steps |")
    print("|---|---:|---:|")
    print(f"| CLIP | {clip_median:.4f} | {len(times['clip'])} |")
    print(f"| SLIP | {slip_median:.4f} | {len(times['slip'])} |")
    print(f"**ratio SLIP / CLIP step time: {slip_median / clip_median:.3f}** (target <= 1.10)")


_TITLE_WORDS = (
    "black", "red", "blue", "silver", "rose", "gold", "aluminum", "silicone", "leather", "matte", "usb-c", "wireless",
    "charger", "case", "stand", "cable", "hub", "adapter", "earbuds", "mouse", "keyboard", "for", "iphone", "laptop",
    "65w", "fast", "magnetic", "screen", "protector", "tempered", "glass", "pack",
)


def _titles(count: int, generator: torch.Generator) -> list[str]:
    picks = torch.randint(0, len(_TITLE_WORDS), (count, 8), generator=generator).tolist()
    return [" ".join(_TITLE_WORDS[i] for i in row).capitalize() for row in picks]


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _structxlip_parts(model, batch) -> dict:
    return {
        "edge maps through the vision tower (fwd + bwd)":
            lambda: model.clip.vision_model(pixel_values=batch["edge_pixel_values"]).pooler_output.sum().backward(),
        "filtered captions through the text tower (fwd + bwd)":
            lambda: model.clip.text_model(input_ids=batch["structure_input_ids"]).pooler_output.sum().backward(),
    }


def _reference_regions(model, batch) -> float:
    """What the reference's regions would add: K = 3 segment crops per item as further vision passes (fwd +
    bwd); slip_hf's patch-group regions come out of the edge map's own pass."""
    crops = batch["edge_pixel_values"].repeat(3, 1, 1, 1)
    return _timed(lambda: model.clip.vision_model(pixel_values=crops).pooler_output.sum().backward())


def _structure_clip_parts(model, batch) -> dict:
    return {
        "negatives through the text tower (fwd + bwd)":
            lambda: model.clip.text_model(input_ids=batch["negative_input_ids"]).pooler_output.sum().backward(),
        "knowledge encoder (fwd + bwd)": lambda: model.get_knowledge_features(
            batch["triple_input_ids"], batch["triple_attention_mask"], batch["triple_mask"]).sum().backward(),
    }


METHODS = {
    # name: (SlipConfig changes, parts of the extra step time, whether rows need scene-graph annotations)
    "structxlip": ({"lambda_structxlip_global": 0.5, "lambda_structxlip_local": 0.1, "lambda_structxlip_consistency": 0.05},
                   _structxlip_parts, False),
    "structure_clip": ({"lambda_structure_clip_margin": 1.0, "lambda_structure_clip_hinge": 1.0, "use_knowledge_encoder": True},
                       _structure_clip_parts, True),
}


def method_overhead(args, graph: NodeGraph, method: str) -> None:
    """SLIP + `method` against SLIP on the same batches: collator extra, step times, and the extra time's parts."""
    from slip_hf.objectives import batch_preparers
    from slip_hf.toy import toy_image_processor, train_toy_tokenizer

    changes, parts_of, annotate = METHODS[method]
    generator = torch.Generator().manual_seed(0)
    clip_config = benchmark_clip_config(args.hidden, args.layers)
    tokenizer = train_toy_tokenizer(_titles(2000, generator), vocab_size=1024, max_length=24)
    clip_config.text_config.vocab_size = len(tokenizer)
    clip_config.text_config.bos_token_id, clip_config.text_config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    torch.manual_seed(0)
    slip = SlipModel(SlipConfig(clip_config=clip_config, num_labels=20))
    both = SlipModel(SlipConfig(clip_config=clip_config, num_labels=20, **changes))
    both.load_state_dict(slip.state_dict(), strict=False)
    preparers = batch_preparers(both.config, tokenizer, toy_image_processor(32))
    annotator = None
    if annotate:
        from slip_hf.objectives.structure_clip_inputs import SceneGraphAnnotator

        annotator = SceneGraphAnnotator("text")
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in (("slip", slip), ("both", both))}
    batches = iter(GraphClusterBatchSampler(graph, np.arange(graph.num_nodes), args.batch_size, seed=0))
    times: dict[str, list[float]] = {}
    for step in range(args.warmup + args.steps):
        texts = _titles(args.batch_size, generator)
        rows = [{"text": t} for t in texts]
        if annotator is not None:  # once per dataset in training (a cached datasets.map): not in the step time
            annotations = annotator({"text": texts})
            rows = [{"text": t, **{k: v[i] for k, v in annotations.items()}} for i, t in enumerate(texts)]
        batch = make_batch(args.batch_size, graph, np.asarray(next(batches)), generator)
        batch.update(tokenizer(texts, padding="max_length", truncation=True, max_length=24, return_tensors="pt"))
        prepared = dict(batch)
        start = time.perf_counter()
        for prepare in preparers:
            prepare(prepared, rows)
        elapsed = {"prepare": time.perf_counter() - start}
        for name in (("slip", "both") if step % 2 == 0 else ("both", "slip")):
            model, inputs = (slip, batch) if name == "slip" else (both, prepared)
            elapsed[name] = train_step(model, optimizers[name], inputs, slip=True)
        for label, part in parts_of(both, prepared).items():
            elapsed[label] = _timed(part)
        if method == "structxlip":
            elapsed["reference regions"] = _reference_regions(both, prepared)
        both.zero_grad(set_to_none=True)
        if step >= args.warmup:
            for name, value in elapsed.items():
                times.setdefault(name, []).append(value)
    median = {name: statistics.median(values) for name, values in times.items()}
    part_labels = list(parts_of(both, prepared))
    extra = median["both"] - median["slip"] + median["prepare"]
    rest = median["both"] - median["slip"] - sum(median[label] for label in part_labels)
    title = {"structxlip": "StructXLIP", "structure_clip": "Structure-CLIP (margin + hinge + knowledge encoder)"}[method]
    print(f"\n## SLIP + {title} against SLIP, batch {args.batch_size}, CPU threads {torch.get_num_threads()}")
    print("| part | median (s) | share of the extra time |")
    print("|---|---:|---:|")
    print(f"| SLIP train step | {median['slip']:.4f} | |")
    print(f"| SLIP + {title} train step | {median['both']:.4f} | |")
    for label, value in (("collator: the method's batch fields", median["prepare"]),
                         *((label, median[label]) for label in part_labels), ("the losses and the rest", rest)):
        print(f"| {label} | {value:.4f} | {value / extra:.0%} |")
    print(f"**ratio (step + collator extra) / SLIP step: {(median['both'] + median['prepare']) / median['slip']:.3f}**")
    if "reference regions" in median:
        print(f"The reference's regions (3 segment crops per item, each a further vision pass) would add "
              f"{median['reference regions']:.4f} s a step: {(median['both'] + median['prepare'] + median['reference regions']) / median['slip']:.3f}x SLIP.")


def sampler_density(args) -> NodeGraph:
    start = time.perf_counter()
    edges = power_law_edges(args.graph_nodes, args.graph_edges, exponent=2.5, seed=0)
    graph = NodeGraph.from_edges(edges[0], edges[1], args.graph_nodes)
    build = time.perf_counter() - start
    print(f"## Batch edge density on a power-law graph: {graph.num_nodes} nodes, {graph.num_edges} edges "
          f"(mean degree {2 * graph.num_edges / graph.num_nodes:.1f}, max {graph.degree().max()}), built in {build:.1f} s")
    print("| batch size | graph sampler edges/node | uniform edges/node | ratio | graph sampler epoch (s) |")
    print("|---:|---:|---:|---:|---:|")
    rows = np.arange(graph.num_nodes)
    for batch_size in args.density_batch_sizes:
        graph_sampler = GraphClusterBatchSampler(graph, rows, batch_size, seed=0)
        start = time.perf_counter()
        sum(1 for _ in graph_sampler)
        epoch_time = time.perf_counter() - start
        dense = mean_batch_edge_density(graph_sampler, graph)
        uniform = mean_batch_edge_density(UniformBatchSampler(rows, batch_size, seed=0), graph)
        print(f"| {batch_size} | {dense:.3f} | {uniform:.4f} | {dense / uniform:.1f}x | {epoch_time:.2f} |")
    return graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--graph-nodes", type=int, default=100_000)
    parser.add_argument("--graph-edges", type=int, default=2_000_000)
    parser.add_argument("--density-batch-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--sections", nargs="+", default=["density", "slip", *METHODS],
                        choices=["density", "slip", *METHODS], help="Which measurements to run.")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    if "density" in args.sections:
        graph = sampler_density(args)
    else:
        edges = power_law_edges(args.graph_nodes, args.graph_edges, exponent=2.5, seed=0)
        graph = NodeGraph.from_edges(edges[0], edges[1], args.graph_nodes)
    if "slip" in args.sections:
        step_time_ratio(args, graph)
    for method in METHODS:
        if method in args.sections:
            method_overhead(args, graph, method)


if __name__ == "__main__":
    main()
