"""What does a global-batch SLIP step cost with 2 processes, against 1 process on the same global batch?

One SLIP training step (forward, backward, AdamW) on a global batch of `--global-batch` nodes with
graph-aware batches of a power-law graph:

* 1 process, the whole global batch, `--threads` threads;
* 2 processes (gloo, DDP), half the batch each, `--threads / 2` threads each, with the global-batch losses
  (`GlobalBatch`: differentiable gather, global graph, local_loss), and with plain local losses for reference.

Medians of `--steps` steps after `--warmup`. CPU processes share the same cores, so this measures the
overhead of the distributed path (communication, repeated GAT, padding), not a speed-up.

    python benchmarks/distributed_step.py      # ~2 min on 2 cores
"""

import argparse
import os
import socket
import statistics
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from transformers import CLIPConfig
from transformers.utils import logging as hf_logging

from slip_hf import SlipConfig, SlipModel
from slip_hf.distributed import GlobalBatch
from slip_hf.graph_batching import GraphClusterBatchSampler, NodeGraph
from slip_hf.toy import power_law_edges


def build_model(hidden: int, layers: int) -> SlipModel:
    tower = {"hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": layers, "num_attention_heads": hidden // 64}
    clip = CLIPConfig(
        text_config={**tower, "vocab_size": 4096, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={**tower, "image_size": 32, "patch_size": 4},
        projection_dim=hidden,
    )
    torch.manual_seed(0)
    return SlipModel(SlipConfig(clip_config=clip, num_labels=20, graph_dropout=0.0))


def make_batches(args) -> list[tuple[dict, torch.Tensor]]:
    edges = power_law_edges(20_000, 300_000, seed=0)
    graph = NodeGraph.from_edges(edges[0], edges[1], 20_000)
    sampler = GraphClusterBatchSampler(graph, np.arange(20_000), args.global_batch, seed=0)
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _, rows in zip(range(args.warmup + args.steps), sampler):
        input_ids = torch.randint(2, 4096, (len(rows), 24), generator=generator)
        input_ids[:, -1] = 1
        edge_index, _ = graph.batch_edge_index(rows)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(len(rows), 3, 32, 32, generator=generator),
            "labels": torch.randint(0, 20, (len(rows),), generator=generator),
        }
        batches.append((inputs, edge_index))
    return batches


def local_edges(edge_index: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    keep = ((edge_index >= rank * size) & (edge_index < (rank + 1) * size)).all(0)
    return edge_index[:, keep] - rank * size


def run(rank: int, world: int, port: int, args, mode: str, queue) -> None:
    torch.set_num_threads(max(1, args.threads // world))
    hf_logging.set_verbosity_error()
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
        dist.init_process_group("gloo", rank=rank, world_size=world)
    model = build_model(args.hidden, args.layers)
    module = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    size = args.global_batch // world
    times = []
    for step, (inputs, edge_index) in enumerate(make_batches(args)):
        local = {key: value[rank * size : (rank + 1) * size] for key, value in inputs.items()}
        start = time.perf_counter()
        if mode == "global":
            output = module(**local, return_loss=True, global_batch=GlobalBatch(edge_index))
        else:
            output = module(**local, edge_index=local_edges(edge_index, rank, size), return_loss=True)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if world > 1:
            dist.barrier()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    if rank == 0:
        queue.put(statistics.median(times))
    del module, model, optimizer  # DDP must go before its process group
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def measure(world: int, mode: str, args) -> float:
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = [context.Process(target=run, args=(rank, world, port, args, mode, queue)) for rank in range(world)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    one = measure(1, "local", args)
    two_global = measure(2, "global", args)
    two_local = measure(2, "local", args)
    d, n = args.hidden, args.global_batch // 2
    print(f"## SLIP step, global batch {args.global_batch}, CLIP {args.layers} x {args.hidden}, {args.threads} CPU threads in all\n")
    print("| setup | median step (s) | ratio to 1 process |")
    print("|---|---:|---:|")
    print(f"| 1 process, whole batch | {one:.3f} | 1.00 |")
    print(f"| 2 processes, global-batch losses (exact) | {two_global:.3f} | {two_global / one:.2f} |")
    print(f"| 2 processes, local losses only (plain DDP) | {two_local:.3f} | {two_local / one:.2f} |")
    floats = 6 * (2 - 1) * n * d
    print(f"\nGlobal-batch communication per step and process: 6 (P-1) n d = {floats:,} floats = {4 * floats / 1e6:.2f} MB "
          f"(P=2, n={n}, d={d}), on top of DDP's gradient all-reduce of {sum(p.numel() for p in build_model(d, args.layers).parameters()) * 4 / 1e6:.0f} MB.")


if __name__ == "__main__":
    main()
