"""`slip-hf embed`: every item of a catalogue through a model, into an embeddings folder
([`slip_hf.search.record`]): the image and text embeddings of each item and, for a SLIP model, Z over the
dataset's graph.

The catalogue is cut into shards of `shard_rows` items, each embedded with the same batches whatever else runs,
so a shard's vectors do not depend on which process embeds it or when: under `accelerate launch` each process
takes every `world_size`-th shard and the folder equals a one-process run's. Image and text embeddings go to
float32 memory maps in `.work/` (file pages, which the kernel can drop, not the process's own memory) with a
marker per finished shard; Z is then computed shard by shard on the `graph_num_layers`-hop neighbourhood of the
shard's items (GAT layers see no further, so this equals Z over the whole graph) and each shard's parquet file is
written under a temporary name and renamed. A run stopped at any instant resumes from its finished shards and
ends with the same files; the folder's final files appear only at the end.
"""

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from datasets import Dataset, Features, List, Value
from tqdm.auto import tqdm

from .. import __version__
from ..embedding import encode_images, encode_texts, load_dual_encoder
from ..evaluation.runner import RowImage
from ..paths import write_whole
from ..pixels import PixelPipeline
from .card import write_card
from .catalogue import catalogue_edges, catalogue_items
from .fingerprints import dataset_fingerprint, model_fingerprint
from .index import EXACT_BELOW, MEMORY_BUDGET
from .record import DATA, INDEX, RECORD, WORK, EmbeddingsRecord, read_record, shard_name

FEATURES = ("image_embedding", "text_embedding")
"""The columns computed by the towers (the memory-mapped features Z is computed from)."""


@dataclass
class EmbedArguments:
    """`slip-hf embed`: a catalogue's embeddings."""

    model_name_or_path: str = field(metadata={"help": "A SLIP checkpoint or a plain dual encoder (CLIP, MetaCLIP 2, SigLIP, "
                                                      "SigLIP 2): folder or Hub id."})
    dataset_name: str = field(metadata={"help": "The catalogue: a dataset folder written by build-dataset or import-graph, or a Hub id."})
    output_dir: str = field(metadata={"help": "The embeddings folder to write (parquet shards, card, record); run again to resume."})
    dataset_config: str = field(default="electronics", metadata={"help": "Dataset config."})
    split: str = field(default="all", metadata={"help": "The split to embed, or 'all' (train, validation, test, in that order)."})
    dtype: Literal["float32", "float16"] = field(default="float32", metadata={"help": "How the vectors are stored (float16 halves the folder)."})
    shard_rows: int = field(default=50_000, metadata={"help": "Items per parquet shard, the unit of resuming and of work per process."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass (titles: 256 or this, the larger)."})
    num_workers: int = field(default=2, metadata={"help": "Data-loader processes that decode the images."})
    max_text_length: int | None = field(default=None, metadata={"help": "Tokens per title (default: the text tower's positions)."})
    text_column: str = field(default="title", metadata={"help": "The text column."})
    image_column: str = field(default="image", metadata={"help": "The image column."})
    index: bool = field(default=True, metadata={"help": "Then build and save the search index of the image and text "
                                                       "embeddings (slip-hf index; its options below)."})
    memory_budget: str = field(default=MEMORY_BUDGET, metadata={"help": "Memory the index may keep resident (e.g. 4GB, 512MB)."})
    exact_below: int = field(default=EXACT_BELOW, metadata={"help": "Items below which the index is exact (FAISS flat); "
                                                                      "from there on, approximate within --memory_budget."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an embeddings folder written from another model, "
                                                              "dataset or setting (default: refuse)."})


def embedding_size(model, tokenizer) -> int:
    """The size of the model's image and text embeddings (one title through the text tower)."""
    return int(encode_texts(model, tokenizer, ["size"]).shape[1])


def _create_feature_maps(work: Path, rows: int, size: int) -> None:
    """The float32 memory maps the towers' embeddings are written into, one `.npy` per feature column."""
    for column in FEATURES:
        np.lib.format.open_memmap(work / f"{column}.npy", mode="w+", dtype=np.float32, shape=(rows, size)).flush()


def _open_feature_maps(work: Path) -> dict[str, np.memmap]:
    return {column: np.load(work / f"{column}.npy", mmap_mode="r+") for column in FEATURES}


def _shard_range(shard: int, record: EmbeddingsRecord) -> range:
    return range(shard * record.shard_rows, min((shard + 1) * record.shard_rows, record.rows))


def _prepare(out: Path, record: EmbeddingsRecord, overwrite: bool) -> bool:
    """Make `out` ready for `record` (main process). Returns `True` when the folder already holds it, finished."""
    work = out / WORK
    final = out / RECORD
    if final.is_file():
        existing = EmbeddingsRecord.load(final)
        if existing.plan() == record.plan() and existing.complete:
            return True
        if not overwrite:
            raise ValueError(_other_plan(out, existing, record))
        for name in (DATA, INDEX):
            shutil.rmtree(out / name, ignore_errors=True)
        final.unlink()
    plan = work / RECORD
    if plan.is_file():
        existing = EmbeddingsRecord.load(plan)
        if existing.plan() != record.plan():
            if not overwrite:
                raise ValueError(_other_plan(out, existing, record, "an unfinished run of"))
            shutil.rmtree(work)
            shutil.rmtree(out / DATA, ignore_errors=True)
    if not (work / RECORD).is_file():
        (work / DATA).mkdir(parents=True, exist_ok=True)
        _create_feature_maps(work, record.rows, record.dims["image_embedding"])
        record.save(plan)  # last: a plan on disk means its memory maps exist
    return False


def _other_plan(out: Path, existing: EmbeddingsRecord, record: EmbeddingsRecord, what: str = "embeddings of") -> str:
    old, new = existing.plan(), record.plan()
    differences = ", ".join(f"{key} {old[key]!r} -> {new[key]!r}" for key in sorted(new) if old.get(key) != new[key])
    return (f"{out} holds {what} another model, dataset or setting ({differences}); choose another --output_dir, or "
            "pass --overwrite to replace it.")


def _write_shard(path: Path, columns: dict, features: Features) -> None:
    write_whole(path, lambda temporary: Dataset.from_dict(columns, features=features).to_parquet(str(temporary)))


def process_state():
    """accelerate's `PartialState` of this process: under `accelerate launch` one of several (NCCL on GPUs; gloo on
    CPUs, which accelerate only sets up when asked), else the only one."""
    from accelerate import PartialState

    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return PartialState(cpu=True, backend="gloo")
    return PartialState()


def embed_catalogue(args: EmbedArguments) -> Path:
    """Embed a catalogue into `args.output_dir` (see the module docstring); returns the folder.

    Under `accelerate launch` every process runs this: each embeds its shards, and the main process finishes the
    folder once all are done.

    Raises:
        ValueError: a folder written from another model, dataset or setting (without `overwrite`), a split the
            dataset does not have, a dataset without the text or image column.
    """
    from ..data.hub import load_copurchase_graph

    if args.shard_rows < 1 or args.batch_size < 1:
        raise ValueError("--shard_rows and --batch_size must be at least 1.")
    state = process_state()
    out = Path(args.output_dir)
    graph = load_copurchase_graph(args.dataset_name, args.dataset_config)
    items = catalogue_items(graph, args.split)
    for column in ("node_id", args.text_column, args.image_column):
        if column not in items.column_names:
            raise ValueError(f"the dataset has no {column!r} column (it has {items.column_names}).")
    if len(items) == 0:
        raise ValueError(f"split {args.split!r} of {args.dataset_name} has no items to embed.")
    model, image_processor, tokenizer = load_dual_encoder(args.model_name_or_path)
    model = model.to(state.device).eval()
    with_z = getattr(model.config, "use_graph", False)
    size = embedding_size(model, tokenizer)
    dims = {column: size for column in FEATURES}
    if with_z:
        dims["node_embedding"] = int(model.get_node_features(torch.zeros(1, size), torch.zeros(1, size), torch.zeros(2, 0, dtype=torch.long)).shape[1])
    record = EmbeddingsRecord(
        model=str(args.model_name_or_path), model_fingerprint=model_fingerprint(args.model_name_or_path),
        dataset=str(args.dataset_name), dataset_config=args.dataset_config, split=args.split,
        dataset_fingerprint=dataset_fingerprint(args.dataset_name, args.dataset_config), rows=len(items),
        shard_rows=args.shard_rows, num_shards=-(-len(items) // args.shard_rows), dims=dims, dtype=args.dtype,
        text_column=args.text_column, image_column=args.image_column, max_text_length=args.max_text_length,
        slip_hf_version=__version__,
    )
    finished = _prepare(out, record, args.overwrite) if state.is_main_process else False
    state.wait_for_everyone()
    if finished or (out / RECORD).is_file():
        return out
    work = out / WORK
    mine = list(range(state.process_index, record.num_shards, state.num_processes))
    node_ids = np.asarray(items["node_id"], dtype=np.int64)
    maps = _open_feature_maps(work)
    pipeline = PixelPipeline.from_image_processor(image_processor)
    bar = {"disable": not state.is_local_main_process, "unit": "shard"}
    for shard in tqdm(mine, desc="embedding", **bar):
        marker = work / f"features-{shard:05d}.done"
        if marker.is_file() or (out / DATA / shard_name(shard, record.num_shards)).is_file():
            continue
        rows = _shard_range(shard, record)
        part = items.select(rows)
        maps["image_embedding"][rows.start : rows.stop] = encode_images(
            model, image_processor, range(len(rows)), args.batch_size, load_image=RowImage(part, args.image_column),
            desc=f"shard {shard} images", pixel_pipeline=pipeline, num_workers=args.num_workers).numpy()
        titles = [str(title) for title in part.select_columns([args.text_column])[args.text_column]]
        maps["text_embedding"][rows.start : rows.stop] = encode_texts(
            model, tokenizer, titles, max(args.batch_size, 256), args.max_text_length, desc=f"shard {shard} titles").numpy()
        for array in maps.values():
            array.flush()
        marker.touch()
    state.wait_for_everyone()
    _write_shards(out, record, items, node_ids, maps, model if with_z else None, mine, graph, state.is_local_main_process)
    state.wait_for_everyone()
    if state.is_main_process:
        _finish(out, record)
    state.wait_for_everyone()
    return out


def _write_shards(out, record, items, node_ids, maps, model, shards: Sequence[int], graph, show: bool) -> None:
    """Each shard's parquet file in `.work/data/`: node id, title, the features and Z, stored as `record.dtype`."""
    from torch_geometric.utils import k_hop_subgraph

    features = Features({"node_id": Value("int64"), record.text_column: Value("string"),
                         **{column: List(Value(record.dtype), length=size) for column, size in record.dims.items()}})
    edges = catalogue_edges(graph, node_ids) if model is not None else None
    for shard in tqdm(shards, desc="writing shards", disable=not show, unit="shard"):
        path = out / WORK / DATA / shard_name(shard, record.num_shards)
        if path.is_file() or (out / DATA / path.name).is_file():
            continue
        rows = _shard_range(shard, record)
        columns = {"node_id": node_ids[rows.start : rows.stop],
                   record.text_column: [str(t) for t in items.select_columns([record.text_column]).select(rows)[record.text_column]]}
        columns.update({column: np.asarray(maps[column][rows.start : rows.stop]) for column in FEATURES})
        if model is not None:
            subset, sub_edges, mapping, _ = k_hop_subgraph(torch.arange(rows.start, rows.stop), model.config.graph_num_layers,
                                                           edges, relabel_nodes=True, num_nodes=record.rows)
            index = subset.numpy()
            image, text = (torch.from_numpy(np.asarray(maps[column][index])) for column in FEATURES)
            columns["node_embedding"] = model.get_node_features(image, text, sub_edges)[mapping].cpu().numpy()
        _write_shard(path, {name: value.astype(record.dtype) if isinstance(value, np.ndarray) and value.ndim == 2 else value
                            for name, value in columns.items()}, features)


def _finish(out: Path, record: EmbeddingsRecord) -> None:
    """Move the shards out of `.work/` at once, write the card, then the record; drop the work files."""
    work = out / WORK
    if not (out / DATA).is_dir():
        for stale in (work / DATA).glob(".*.tmp"):  # what a writer killed mid-shard left; every shard is written now
            stale.unlink()
        os.replace(work / DATA, out / DATA)
    record.complete = True
    write_card(out, record)
    record.save(out / RECORD)
    shutil.rmtree(work)


__all__ = ["EmbedArguments", "embed_catalogue", "embedding_size", "read_record"]
