"""The layout of an embeddings folder (what `slip-hf embed` writes) and its record, `embeddings.json`.

    <out_dir>/embeddings.json                       the record: model and dataset (with fingerprints), rows,
                                                    columns and their sizes, storage dtype, shards, indexes
    <out_dir>/README.md                             the dataset card (`load_dataset(<out_dir>)`, `push-dataset`)
    <out_dir>/data/train-00000-of-0000N.parquet     node_id, title, image_embedding, text_embedding
                                                    [, node_embedding]: one row per catalogue item, in its order
    <out_dir>/index/<column>.faiss                  a saved index of a column (`slip-hf index`); its entry in the
                                                    record says how it was built, its measured recall, fingerprints
    <out_dir>/.work/                                a run in progress: shards, features, the plan

The final files appear only when every shard is done (the shards are moved out of `.work/` and the record, written
last, says `complete`), so neither `load_dataset` nor slip_hf ever reads a half-written folder; a stopped run
keeps its finished shards in `.work/` and the same command resumes from them.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..paths import write_whole

RECORD = "embeddings.json"
DATA = "data"
INDEX = "index"
WORK = ".work"
COLUMNS = ("image_embedding", "text_embedding", "node_embedding")
"""The vector columns an embeddings folder can hold; `node_embedding` (Z) only for a SLIP model with a graph path."""


def write_json_whole(path: Path, payload: Any) -> None:
    """Write JSON to `path` whole (`slip_hf.paths.write_whole`): a reader finds the old file or the new one."""
    write_whole(path, lambda temporary: temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))


def shard_name(shard: int, num_shards: int) -> str:
    """`train-00003-of-00008.parquet`: the Hub's naming of a split's parquet shards."""
    return f"train-{shard:05d}-of-{num_shards:05d}.parquet"


@dataclass
class EmbeddingsRecord:
    """What an embeddings folder holds and what it was computed from.

    Attributes:
        model, model_fingerprint: the model (folder or Hub id, as given) and its fingerprint
            (`slip_hf.search.fingerprints`).
        dataset, dataset_config, split, dataset_fingerprint: the catalogue's dataset, config, split (`"all"`: every
            split, in train, validation, test order) and its fingerprint.
        rows: catalogue items (rows of every shard together).
        shard_rows, num_shards: rows per parquet shard and their number.
        dims: `{column: vector size}` of the vector columns it holds.
        dtype: `"float32"` or `"float16"`, how the vectors are stored.
        text_column, image_column, max_text_length: what was embedded and how titles were tokenized.
        complete: every shard is written (a record that says otherwise belongs to a run in progress).
        slip_hf_version: the version that wrote it.
        indexes: `{column: index record}` of the saved indexes ([`slip_hf.search.index`]).
    """

    model: str
    model_fingerprint: str
    dataset: str
    dataset_config: str
    split: str
    dataset_fingerprint: str
    rows: int
    shard_rows: int
    num_shards: int
    dims: dict[str, int]
    dtype: str
    text_column: str = "title"
    image_column: str = "image"
    max_text_length: int | None = None
    complete: bool = False
    slip_hf_version: str = ""
    indexes: dict[str, dict] = field(default_factory=dict)

    def plan(self) -> dict:
        """The fields that decide the folder's content: a run resumes a folder only when they are equal."""
        fields = asdict(self)
        for volatile in ("complete", "slip_hf_version", "indexes", "model", "dataset"):
            fields.pop(volatile)
        return fields

    def save(self, path: Path) -> None:
        write_json_whole(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "EmbeddingsRecord":
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: not an embeddings record that this slip_hf can read ({error}).") from None


def read_record(folder: str | os.PathLike) -> EmbeddingsRecord:
    """The record of a finished embeddings folder.

    Raises:
        FileNotFoundError: the folder is not an embeddings folder.
        ValueError: the folder holds a run that has not finished (its finished shards are counted).
    """
    folder = Path(folder)
    path = folder / RECORD
    if not path.is_file():
        plan = folder / WORK / RECORD
        if plan.is_file():
            record = EmbeddingsRecord.load(plan)
            done = len(list((folder / WORK / DATA).glob("train-*.parquet")))
            raise ValueError(f"embeddings {folder}: not finished ({done} of {record.num_shards} shards written); run the "
                             "same slip-hf embed command again to resume it.")
        raise FileNotFoundError(f"embeddings {folder}: no {RECORD}; this is not a folder written by slip-hf embed.")
    return EmbeddingsRecord.load(path)


def data_files(folder: str | os.PathLike, record: EmbeddingsRecord) -> list[Path]:
    """The record's parquet shards, in row order.

    Raises:
        FileNotFoundError: if one is missing.
    """
    files = [Path(folder) / DATA / shard_name(shard, record.num_shards) for shard in range(record.num_shards)]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"embeddings {folder}: {len(missing)} of {len(files)} shards are missing (first: {missing[0]}).")
    return files


__all__ = ["COLUMNS", "DATA", "INDEX", "RECORD", "WORK", "EmbeddingsRecord", "data_files", "read_record",
           "shard_name", "write_json_whole"]
