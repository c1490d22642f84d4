"""Two gloo processes on one global batch = one process on the concatenated batch (losses and every gradient)."""

import os
import socket
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from transformers import CLIPConfig, SiglipConfig

from slip_hf import SlipConfig, SlipModel
from slip_hf.distributed import GlobalBatch
from slip_hf.graph_batching import GraphClusterBatchSampler, NodeGraph, UniformBatchSampler

WORLD = 2
LOCAL = 4  # nodes per process; the global batch is 8 nodes
# Edges of the global batch: inside rank 0 (0-1, 2-3), inside rank 1 (4-5), and across ranks (3-4, 1-6).
GLOBAL_EDGES = torch.tensor([[0, 2, 4, 3, 1], [1, 3, 5, 4, 6]])
LABELS = torch.tensor([0, 1, 2, 0, 1, -100, -100, 2])  # rank 1 has fewer labelled nodes
CASES = {
    "hops1": dict(hops=1, gather_with_grad=True, local_loss=True),
    "hops2": dict(hops=2, gather_with_grad=True, local_loss=True),
    "full_rows": dict(hops=1, gather_with_grad=True, local_loss=False),
    "no_grad_gather": dict(hops=1, gather_with_grad=False, local_loss=True),
    "structxlip": dict(hops=1, gather_with_grad=True, local_loss=True, structxlip=True),
    "structxlip_full_rows": dict(hops=1, gather_with_grad=True, local_loss=False, structxlip=True),
    "all_methods": dict(hops=1, gather_with_grad=True, local_loss=True, structxlip=True, structure_clip=True),
    # SigLIP: its sigmoid loss over the global batch, with the structural loss in either form
    "siglip": dict(hops=1, gather_with_grad=True, local_loss=True, family="siglip"),
    "siglip_full_rows": dict(hops=1, gather_with_grad=True, local_loss=False, family="siglip"),
    "siglip_sigmoid_graph": dict(hops=2, gather_with_grad=True, local_loss=True, family="siglip", graph_loss_form="sigmoid"),
    "clip_sigmoid_graph": dict(hops=1, gather_with_grad=True, local_loss=True, graph_loss_form="sigmoid"),
}
MODEL_KEYS = ("hops", "structxlip", "structure_clip", "family", "graph_loss_form")
STRUCTXLIP_PARTS = ("loss_structxlip_global", "loss_structxlip_local", "loss_structxlip_consistency")
STRUCTURE_CLIP_PARTS = ("loss_structure_clip_margin", "loss_structure_clip_hinge", "loss_structure_clip_negclip")


def _model(hops: int, structxlip: bool = False, structure_clip: bool = False, family: str = "clip",
           graph_loss_form: str = "infonce") -> SlipModel:
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    text = {**tower, "vocab_size": 64, "max_position_embeddings": 8, "bos_token_id": 0, "eos_token_id": 1}
    if family == "siglip":
        clip = SiglipConfig(text_config=text, vision_config={**tower, "image_size": 8, "patch_size": 4})
    else:
        clip = CLIPConfig(text_config=text, vision_config={**tower, "image_size": 8, "patch_size": 4}, projection_dim=16)
    config = SlipConfig(clip_config=clip, graph_hidden_size=16, graph_num_heads=2, graph_dropout=0.0, num_labels=3,
                        hops=hops, lambda_graph=0.5, lambda_aux=0.3, graph_loss_form=graph_loss_form,
                        **({"lambda_structxlip_global": 0.5, "lambda_structxlip_local": 0.2,
                            "lambda_structxlip_consistency": 0.1} if structxlip else {}),
                        **({"lambda_structure_clip_margin": 1.0, "lambda_structure_clip_hinge": 0.5,
                            "lambda_structure_clip_negclip": 0.3} if structure_clip else {}))
    torch.manual_seed(0)
    model = SlipModel(config)
    if family == "siglip":  # SigLIP's own starting temperature and bias (transformers initialises both at 0)
        with torch.no_grad():
            model.clip.logit_scale.fill_(2.3)
            model.clip.logit_bias.fill_(-10.0)
    return model


def _batch(structxlip: bool = False, structure_clip: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, 64, (WORLD * LOCAL, 6), generator=generator)
    input_ids[:, -1] = 1
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(WORLD * LOCAL, 3, 8, 8, generator=generator),
    }
    if structxlip:  # StructXLIP's fields, with blank edge maps, an empty caption and missing regions on both ranks
        structure_ids = torch.randint(2, 64, (WORLD * LOCAL, 6), generator=generator)
        structure_ids[:, -1] = 1
        chunks = torch.zeros(WORLD * LOCAL, 3, 6, dtype=torch.bool)
        chunks[:, 0, 0:2], chunks[:, 1, 1:4], chunks[::3, 2, 3:5] = True, True, True
        batch.update(
            edge_pixel_values=torch.randn(WORLD * LOCAL, 3, 8, 8, generator=generator),
            edge_mask=torch.tensor([1, 1, 0, 1, 1, 1, 1, 0], dtype=torch.bool),
            edge_region_mask=torch.rand(WORLD * LOCAL, 4, generator=generator) > 0.3,
            structure_input_ids=structure_ids,
            structure_attention_mask=torch.ones_like(structure_ids),
            structure_chunk_mask=chunks,
            structure_text_mask=torch.tensor([1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool),
        )
    if structure_clip:  # semantic negatives, missing for one item of each rank
        negative_ids = torch.randint(2, 64, (WORLD * LOCAL, 6), generator=generator)
        negative_ids[:, -1] = 1
        batch.update(negative_input_ids=negative_ids, negative_attention_mask=torch.ones_like(negative_ids),
                     negative_mask=torch.tensor([1, 0, 1, 1, 1, 1, 0, 1], dtype=torch.bool))
    return batch


def _loss_parts(output) -> dict[str, torch.Tensor]:
    names = ("loss", "loss_clip", "loss_graph", "loss_aux", *STRUCTXLIP_PARTS, *STRUCTURE_CLIP_PARTS)
    return {name: getattr(output, name).detach().reshape(1) for name in names if getattr(output, name) is not None}


def _init(rank: int, port: int, **extra_env: str) -> None:
    # loopback only, and a short timeout: a broken rendezvous fails the test instead of hanging it
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", **extra_env)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))


def _worker(rank: int, port: int, out_dir: str) -> None:
    _init(rank, port)
    rows = slice(rank * LOCAL, (rank + 1) * LOCAL)
    for name, case in CASES.items():
        methods = (case.get("structxlip", False), case.get("structure_clip", False))
        model = DistributedDataParallel(_model(**{key: case[key] for key in MODEL_KEYS if key in case}))
        local = {key: value[rows] for key, value in _batch(*methods).items()}
        global_batch = GlobalBatch(GLOBAL_EDGES, gather_with_grad=case["gather_with_grad"], local_loss=case["local_loss"])
        output = model(**local, labels=LABELS[rows], return_loss=True, global_batch=global_batch)
        output.loss.backward()  # DDP averages the gradients over the two processes
        parts = _loss_parts(output)
        for value in parts.values():
            dist.all_reduce(value)
            value /= WORLD  # the mean of the processes' shares is the global loss
        if rank == 0:
            grads = {f"grad.{n}": p.grad.detach().clone() for n, p in model.module.named_parameters() if p.grad is not None}
            save_file({**grads, **parts}, os.path.join(out_dir, f"{name}.safetensors"))
        del model, output  # a DDP model must go before its process group: its destructor can hang otherwise
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return {name: load_file(str(out_dir / f"{name}.safetensors")) for name in CASES}


def _single_process(hops: int, structxlip: bool = False, structure_clip: bool = False, **model_kwargs) -> tuple[dict, dict]:
    model = _model(hops, structxlip, structure_clip, **model_kwargs)
    output = model(**_batch(structxlip, structure_clip), edge_index=GLOBAL_EDGES, labels=LABELS, return_loss=True)
    output.loss.backward()
    grads = {f"grad.{n}": p.grad for n, p in model.named_parameters() if p.grad is not None}
    return grads, _loss_parts(output)


# Tolerance: float32, and the two runs add the same terms in a different order. Losses agree to 1e-5 relative;
# a gradient tensor agrees to 1e-5 of its largest entry, with a 1e-6 floor for gradients that are zero up to
# rounding (the attention key bias: softmax ignores a constant shift of the keys).
ATOL, RTOL = 2e-6, 1e-5


def _close(result: torch.Tensor, expected: torch.Tensor) -> bool:
    return bool((result - expected).abs().max() <= 1e-5 * expected.abs().max() + 1e-6)


@pytest.mark.parametrize("case", ["hops1", "hops2", "full_rows", "structxlip", "structxlip_full_rows", "all_methods",
                                  "siglip", "siglip_full_rows", "siglip_sigmoid_graph", "clip_sigmoid_graph"])
def test_two_processes_equal_one_process_on_the_global_batch(two_process_results, case):
    grads, parts = _single_process(**{key: CASES[case][key] for key in MODEL_KEYS if key in CASES[case]})
    result = two_process_results[case]
    assert set(parts) == set(result) - {k for k in result if k.startswith("grad.")}
    if CASES[case].get("structxlip"):
        assert all(parts[name] > 0 for name in STRUCTXLIP_PARTS)
    if CASES[case].get("structure_clip"):
        assert all(parts[name] > 0 for name in STRUCTURE_CLIP_PARTS)
    for name, value in parts.items():
        assert torch.allclose(result[name], value, atol=ATOL, rtol=RTOL), (name, result[name], value)
    assert parts["loss_graph"] > 0 and set(grads) == {k for k in result if k.startswith("grad.")}
    for name, grad in grads.items():
        assert _close(result[name], grad), (name, (result[name] - grad).abs().max(), grad.abs().max())


def test_cross_process_edges_change_the_loss():
    # Without the edges 3-4 and 1-6 (what each process sees locally), the structural loss is different.
    model = _model(1)
    with_cross = model(**_batch(), edge_index=GLOBAL_EDGES, labels=LABELS, return_loss=True).loss_graph
    without = model(**_batch(), edge_index=GLOBAL_EDGES[:, :3], labels=LABELS, return_loss=True).loss_graph
    assert not torch.isclose(with_cross, without)


def test_gather_without_grad_keeps_the_loss_but_not_the_encoder_gradients(two_process_results):
    grads, parts = _single_process(1)
    result = two_process_results["no_grad_gather"]
    for name, value in parts.items():
        assert torch.allclose(result[name], value, atol=ATOL, rtol=RTOL), name
    # The graph head sees the whole global batch on each process: its gradient is exact ...
    assert _close(result["grad.fusion.dense.weight"], grads["grad.fusion.dense.weight"])
    # ... the encoders only get their own process's share: an approximation (open_clip's default).
    name = "grad.clip.visual_projection.weight"
    assert (result[name] - grads[name]).abs().max() > 1e-2 * grads[name].abs().max()


@pytest.mark.parametrize("sampler_name", ["graph", "uniform"])
def test_sharded_samplers_cover_every_node_once_with_equal_steps(node_graph, sampler_name):
    rows = np.arange(151)
    make = {
        "graph": lambda rank: GraphClusterBatchSampler(node_graph, rows, 16, seed=5, num_replicas=3, rank=rank),
        "uniform": lambda rank: UniformBatchSampler(rows, 16, seed=5, num_replicas=3, rank=rank),
    }[sampler_name]
    shards = [list(make(rank)) for rank in range(3)]
    assert len({len(shard) for shard in shards}) == 1 == len({len(make(r)) for r in range(3)})
    assert len(shards[0]) == 4  # 151 nodes in global batches of 48: 3 full ones and one of 7
    for step in zip(*shards):
        assert len({len(part) for part in step}) == 1
        seen = [node for part in step for node in part]
        assert len(seen) == len(set(seen))  # a global batch never holds a node twice
    covered = [node for shard in shards for part in shard for node in part]
    assert set(covered) == set(range(151)) and len(covered) == 151 + 2  # 7 nodes padded to 9 for 3 ranks
    assert [list(make(rank)) for rank in range(3)] == shards  # deterministic


def test_graph_sampler_shards_keep_clusters_across_ranks(node_graph):
    rows = np.arange(node_graph.num_nodes)
    samplers = [GraphClusterBatchSampler(node_graph, rows, 32, seed=0, num_replicas=2, rank=r) for r in range(2)]
    cross = 0
    for part0, part1 in zip(*samplers):
        edges, _ = node_graph.batch_edge_index(part0 + part1)
        cross += int(((edges[0] < len(part0)) & (edges[1] >= len(part0))).sum())
    assert cross > 0  # some neighbours sit on the other rank: only a global loss sees them as positives


def _trainer_worker(rank: int, port: int, out_dir: str) -> None:
    # accelerate initialises the process group from these variables
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo", RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    from slip_hf.processing import NodeTransform
    from slip_hf.toy import make_toy_graph, tiny_clip_config, toy_image_processor, train_toy_tokenizer
    from slip_hf.trainer import SlipTrainer, SlipTrainingArguments

    nodes, edges = make_toy_graph(num_nodes=96, num_categories=3, items_per_line=6, image_size=16, seed=0)
    graph = NodeGraph.from_edge_table(edges, nodes.num_rows)
    tokenizer = train_toy_tokenizer(nodes["title"], vocab_size=200, max_length=16)
    data = nodes.with_transform(NodeTransform(toy_image_processor(16), tokenizer, max_length=16))
    clip = tiny_clip_config(tokenizer, hidden_size=32, num_layers=1, image_size=16, patch_size=4, projection_dim=16)
    torch.manual_seed(0)
    model = SlipModel(SlipConfig(clip_config=clip, graph_hidden_size=16, num_labels=3))
    args = SlipTrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=4, logging_steps=2,
        eval_strategy="steps", eval_steps=4, save_strategy="no", report_to="none", use_cpu=True, ddp_backend="gloo",
        ddp_find_unused_parameters=False, disable_tqdm=True, seed=0,
    )
    trainer = SlipTrainer(model=model, args=args, graph=graph, train_dataset=data, eval_dataset=data)
    trainer.train()
    first_batch = next(iter(trainer.get_train_dataloader().batch_sampler))
    record = {"world": trainer.accelerator.num_processes, "first_batch": first_batch, "log": trainer.state.log_history}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        import json

        json.dump(record, handle)


def test_slip_trainer_runs_on_two_processes(tmp_path):
    import json

    mp.spawn(_trainer_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    records = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    assert [r["world"] for r in records] == [WORLD, WORLD]
    assert len(records[0]["first_batch"]) == 8 and not set(records[0]["first_batch"]) & set(records[1]["first_batch"])
    logs = [entry for entry in records[0]["log"] if "loss" in entry]
    assert len(logs) == 2 and all("loss_graph" in entry and "loss_aux" in entry for entry in logs)
    evaluation = [entry for entry in records[0]["log"] if "eval_mrr" in entry][0]
    assert 0 < evaluation["eval_mrr"] < 1 and evaluation["eval_mean_rank"] <= 96
    numbers = [[{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k} for e in r["log"]] for r in records]
    assert numbers[0] == numbers[1]  # every process logs the same averaged numbers
