"""Train-step throughput of CLIP, SLIP, SLIP + StructXLIP and SLIP + Structure-CLIP, and how much of the
accelerator it uses.

For each method and batch size: samples/s (median step after warm-up), the step's FLOPs (counted by
`torch.utils.flop_counter` on one real step: forward + backward of every matmul, convolution and attention),
the achieved TFLOP/s, MFU against a peak this script measures itself (one large bf16 matmul on a GPU, float32
on a CPU), peak memory, and the ratio to CLIP on the same batches. The methods are stepped interleaved, one
after the other on each batch, so that clock drift hits all of them alike.

The model is ViT-B/16 CLIP (vision 12 x 768 at 224 px, text 12 x 512 with 77 tokens, random weights), or with
`--backbone siglip` SigLIP B/16 (vision 12 x 768 at 224 px, text 12 x 768 with 64 tokens, its sigmoid loss), in bf16
autocast with fused AdamW on a GPU; the baseline row is the dual encoder alone with its own loss; SLIP adds the paper's head (GAT 2 x 512 x 4, fusion, aux classifier, three
losses) on graph-aware batches from a power-law graph. Pixels and tokens are made on the device, so the step is
measured without the input pipeline (`benchmarks/input_pipeline.py` measures that).

    python benchmarks/gpu_step.py --batch 256 512                     # one GPU
    python benchmarks/gpu_step.py --batch 256 512 --backbone siglip   # SLIP on SigLIP against SigLIP
    python benchmarks/gpu_step.py --batch 1024 --ckpt                 # gradient checkpointing
    python benchmarks/gpu_step.py --batch 512 --compile --attn sdpa   # torch.compile
    python benchmarks/gpu_step.py --tiny                              # a tiny CLIP on the CPU, in seconds (CI)

Levers, each a flag: `--compile` (torch.compile of the model), `--attn {sdpa,flash,eager}` (the towers'
attention), `--ckpt` (gradient checkpointing), `--no_simple_edges` (the model checks and deduplicates the batch
edges itself, as for raw user input: the data-dependent shapes make the host wait for the GPU each step).
"""

import argparse
import json
import statistics
import time
from contextlib import nullcontext

import numpy as np
import torch
from transformers import CLIPConfig, PreTrainedConfig, SiglipConfig
from transformers.utils import logging as hf_logging

from slip_hf import SlipConfig, SlipModel
from slip_hf.graph_batching import GraphClusterBatchSampler, NodeGraph
from slip_hf.objectives import batch_preparers
from slip_hf.toy import power_law_edges, toy_image_processor, train_toy_tokenizer

METHODS = {
    # name: SlipConfig changes (CLIP is SLIP with neither graph path nor aux head: CLIPModel's loss, bit for bit)
    "CLIP": {"use_graph": False, "lambda_graph": 0.0, "lambda_aux": 0.0, "num_labels": 0},
    "SLIP": {},
    "SLIP + StructXLIP": {"lambda_structxlip_global": 0.5, "lambda_structxlip_local": 0.1, "lambda_structxlip_consistency": 0.05},
    "SLIP + Structure-CLIP": {"lambda_structure_clip_margin": 1.0, "lambda_structure_clip_hinge": 1.0, "use_knowledge_encoder": True},
}
ATTENTION = {"sdpa": "sdpa", "flash": "flash_attention_2", "eager": "eager"}
_WORDS = ("black", "red", "usb-c", "wireless", "charger", "case", "stand", "cable", "for", "iphone", "laptop", "65w",
          "magnetic", "screen", "protector", "tempered", "glass", "with", "blue", "mount")


BASELINE_NAMES = {"clip": "CLIP", "siglip": "SigLIP"}
"""How the tables name the "CLIP" method (the dual encoder alone) for each backbone."""


def dual_encoder_config(tiny: bool, backbone: str) -> tuple[PreTrainedConfig, int, int]:
    """`(config, image size, tokens)` of `backbone`: ViT-B/16-sized, or a tiny one for the CPU."""
    if backbone == "siglip":
        if tiny:
            tower = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
            return SiglipConfig(text_config={**tower, "vocab_size": 4096, "max_position_embeddings": 16},
                                vision_config={**tower, "image_size": 32, "patch_size": 8}), 32, 16
        tower = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
        return SiglipConfig(text_config={**tower, "vocab_size": 32000, "max_position_embeddings": 64},
                            vision_config={**tower, "image_size": 224, "patch_size": 16}), 224, 64
    if tiny:
        tower = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2}
        return CLIPConfig(text_config={**tower, "vocab_size": 4096, "max_position_embeddings": 16},
                          vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=64), 32, 16
    return CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
                     "max_position_embeddings": 77},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                       "image_size": 224, "patch_size": 16},
        projection_dim=512,
    ), 224, 77


def measured_peak(device: torch.device) -> tuple[float, str]:
    """FLOP/s of one large matmul (bf16 8192^3 on a GPU, float32 1024^3 on a CPU): the peak MFU is measured against."""
    size, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    times = []
    for _ in range(8):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times[2:]), f"{size}^3 {str(dtype).removeprefix('torch.')} matmul"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(args, config: PreTrainedConfig, device) -> dict[str, SlipModel]:
    """One model per method, all with the same dual-encoder weights (the towers are made first, from the same seed).
    On SigLIP, StructXLIP runs without its local loss, which needs CLIP's token projections."""
    models = {}
    for name in args.methods:
        torch.manual_seed(0)
        changes = {"num_labels": 20, "graph_hidden_size": 64 if args.tiny else 512, **METHODS[name]}
        if args.backbone == "siglip":
            changes.pop("lambda_structxlip_local", None)
        model = SlipModel(SlipConfig(clip_config=config.to_dict(), **changes))
        model.clip.set_attn_implementation(ATTENTION[args.attn])
        if args.ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        models[name] = model.to(device).train()
    return models


def make_batch(batch_size: int, rows: np.ndarray, graph: NodeGraph, image_size: int, tokens: int, tokenizer, device,
               generator: torch.Generator, simple_edges: bool) -> tuple[dict, list[dict]]:
    """One graph-aware batch on the device, and the rows the objectives' preparers read."""
    titles = [" ".join(_WORDS[i] for i in torch.randint(0, len(_WORDS), (8,), generator=generator).tolist()) for _ in range(batch_size)]
    text = tokenizer(titles, padding="max_length", truncation=True, max_length=tokens, return_tensors="pt")
    edge_index, _ = graph.batch_edge_index(rows)
    batch = {
        "input_ids": text["input_ids"].to(device), "attention_mask": text["attention_mask"].to(device),
        "pixel_values": torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device),
        "edge_index": edge_index.to(device), "labels": torch.randint(0, 20, (batch_size,), generator=generator).to(device),
        "simple_edges": simple_edges,
    }
    # Structure-CLIP's annotations, made up (their cost is the tokens and the extra text passes, not the parse)
    rows_out = [{"text": title, "negative_caption": " ".join(reversed(title.split())),
                 "triples": [[title.split()[0], "for", title.split()[-1]], [title.split()[1], "is", "black"]]} for title in titles]
    return batch, rows_out


def prepared_batches(preparers: dict[str, list], batch: dict, rows: list[dict]) -> dict[str, dict]:
    """Each method's batch: SLIP's fields plus its objectives' (StructXLIP's edge maps are made on the device,
    inside the timed step, as the tensor image path does; Structure-CLIP's tokens come from the data workers)."""
    out = {}
    for name, method_preparers in preparers.items():
        method_batch = dict(batch)
        if name == "CLIP":
            for key in ("edge_index", "labels", "simple_edges"):
                method_batch.pop(key)
        for prepare in method_preparers:
            if not prepare.needs_pixels:
                prepare(method_batch, rows)
        device = batch["pixel_values"].device
        out[name] = {k: v.to(device) if torch.is_tensor(v) else v for k, v in method_batch.items()}
    return out


def train_step(model, optimizer, batch: dict, rows: list[dict], preparers: list, autocast) -> torch.Tensor:
    for prepare in preparers:
        if prepare.needs_pixels:  # StructXLIP's Canny edge maps, on the device
            prepare(batch, rows)
    with autocast:
        loss = model(**batch, return_loss=True).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def run(args) -> list[dict]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config, image_size, tokens = dual_encoder_config(args.tiny, args.backbone)
    generator = torch.Generator().manual_seed(0)
    tokenizer = train_toy_tokenizer([" ".join(_WORDS[i::3]) for i in range(60)] * 5, vocab_size=512, max_length=tokens,
                                    family=args.backbone)
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tokenizer))
    config.text_config.bos_token_id, config.text_config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    image_processor = toy_image_processor(image_size, args.backbone)
    edges = power_law_edges(args.graph_nodes, args.graph_nodes * 20, exponent=2.5, seed=0)
    graph = NodeGraph.from_edges(edges[0], edges[1], args.graph_nodes)
    peak, peak_how = measured_peak(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and not args.fp32 else nullcontext()
    rows_table = []
    print(f"# {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}: peak {peak / 1e12:.1f} TFLOP/s "
          f"({peak_how}); {'tiny' if args.tiny else 'ViT-B/16'} {BASELINE_NAMES[args.backbone]}, attention {args.attn}, "
          f"{'checkpointing' if args.ckpt else 'no checkpointing'}, {'compiled' if args.compile else 'eager'}, "
          f"{'float32' if args.fp32 or device.type != 'cuda' else 'bf16 autocast'}, "
          f"{'deduplicating edges' if args.no_simple_edges else 'collator edges'}")
    for batch_size in args.batch:
        models = build_models(args, config, device)
        preparers = {name: batch_preparers(model.config, tokenizer, image_processor) for name, model in models.items()}
        compiled = {name: torch.compile(model) for name, model in models.items()} if args.compile else models
        optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
                      for name, model in models.items()}
        sampler = iter(GraphClusterBatchSampler(graph, np.arange(graph.num_nodes), batch_size, seed=0))
        times = {name: [] for name in models}
        memory = dict.fromkeys(models, 0)
        flops = {}
        for step in range(args.warmup + args.steps):
            batch, rows = make_batch(batch_size, np.asarray(next(sampler)), graph, image_size, tokens, tokenizer, device,
                                     generator, not args.no_simple_edges)
            batches = prepared_batches(preparers, batch, rows)
            names = list(models)[step % len(models):] + list(models)[: step % len(models)]  # rotate the order
            for name in names:
                def one_step(name=name):
                    return train_step(compiled[name], optimizers[name], dict(batches[name]), rows, preparers[name], autocast)

                if step == args.warmup - 1 or (args.warmup == 0 and step == 0):
                    flops[name] = count_flops(one_step)
                    continue
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                _sync(device)
                start = time.perf_counter()
                one_step()
                _sync(device)
                if step >= args.warmup:
                    times[name].append(time.perf_counter() - start)
                if device.type == "cuda":
                    memory[name] = max(memory[name], torch.cuda.max_memory_allocated(device))
        clip_time = statistics.median(times["CLIP"]) if "CLIP" in times else None
        for name in models:
            median = statistics.median(times[name])
            achieved = flops[name] / median
            rows_table.append({
                "method": name, "batch": batch_size, "samples_per_s": batch_size / median, "step_ms": 1000 * median,
                "gflop_per_sample": flops[name] / batch_size / 1e9, "tflops": achieved / 1e12, "mfu": achieved / peak,
                "peak_gib": memory[name] / 2**30 if device.type == "cuda" else None,
                "vs_clip": median / clip_time if clip_time else None,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "ckpt": args.ckpt,
                "compile": args.compile, "attn": args.attn, "simple_edges": not args.no_simple_edges,
            })
        del models, compiled, optimizers
        if device.type == "cuda":
            torch.cuda.empty_cache()
    baseline = BASELINE_NAMES[args.backbone]
    print(f"| method | batch | samples/s | step (ms) | GFLOP/sample | TFLOP/s | MFU | peak GiB | step / {baseline}'s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows_table:
        row["method"] = row["method"].replace("CLIP", baseline) if row["method"] == "CLIP" else row["method"]
        row["backbone"] = args.backbone
        memory_cell = f"{row['peak_gib']:.1f}" if row["peak_gib"] is not None else "-"
        ratio = f"{row['vs_clip']:.3f}" if row["vs_clip"] is not None else "-"
        print(f"| {row['method']} | {row['batch']} | {row['samples_per_s']:,.0f} | {row['step_ms']:.1f} | "
              f"{row['gflop_per_sample']:.2f} | {row['tflops']:.2f} | {row['mfu']:.1%} | {memory_cell} | {ratio} |")
    return rows_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (default: 256 512; --tiny: 16)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--backbone", choices=list(BASELINE_NAMES), default="clip",
                        help="the dual encoder: ViT-B/16 CLIP (default) or SigLIP B/16 with its sigmoid loss")
    parser.add_argument("--ckpt", action="store_true", help="gradient checkpointing of the towers")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--attn", choices=list(ATTENTION), default="sdpa", help="attention of the towers (default: sdpa)")
    parser.add_argument("--no_simple_edges", action="store_true", help="let the model deduplicate the batch edges")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on a GPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10; --tiny: 3)")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (the last one counts the FLOPs)")
    parser.add_argument("--graph_nodes", type=int, default=None, help="power-law graph size (default: 100,000; --tiny: 2,000)")
    parser.add_argument("--tiny", action="store_true", help="a tiny CLIP on the CPU: checks the script in seconds")
    parser.add_argument("--device", default=None, help="default: cuda when there is one")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    args.batch = args.batch or ([16] if args.tiny else [256, 512])
    args.steps = args.steps or (3 if args.tiny else 10)
    args.graph_nodes = args.graph_nodes or (2_000 if args.tiny else 100_000)
    hf_logging.set_verbosity_error()
    rows = run(args)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
