"""Streaming readers for the raw Amazon Reviews 2023 files (hou2024bridging).

The McAuley-Lab release (`McAuley-Lab/Amazon-Reviews-2023` on the Hub) ships one review file and one
metadata file per category, as JSON lines, optionally gzip-compressed:

    raw/review_categories/<Category>.jsonl[.gz]       one review per line
    raw/meta_categories/meta_<Category>.jsonl[.gz]    one item per line

Review fields used here: `user_id`, `parent_asin` (the item; `asin` is the variant), `timestamp` (Unix
milliseconds), `verified_purchase`, `helpful_vote` and `text`. Metadata fields: `parent_asin`, `title`,
`main_category`, `categories` (the category path), `images` (a list of `{thumb, large, hi_res, variant}`),
`description` and `features` (lists of strings), `store`.

Nothing here holds a raw file in memory: reviews are parsed block by block by pyarrow's JSON reader (C++,
multi-threaded) with an explicit schema, so unknown or irregular fields (`details`, `images`, ...) are never
materialised; metadata lines are only JSON-decoded for the items a build needs.
"""

import gzip
import json
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from tqdm.auto import tqdm

HUB_REPO_ID = "McAuley-Lab/Amazon-Reviews-2023"
"""The raw data on the Hugging Face Hub (dataset repository)."""

REVIEW_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("parent_asin", pa.string()),
        ("timestamp", pa.int64()),
        ("verified_purchase", pa.bool_()),
        ("helpful_vote", pa.int64()),
    ]
)
"""The review fields the graph is built from; every other field is skipped by the parser."""

_PARENT_ASIN = re.compile(rb'"parent_asin"\s*:\s*"([^"]*)"')
_BLOCK_SIZE = 16 << 20


@dataclass(frozen=True)
class RawCategoryFiles:
    """Paths of one category's raw files."""

    category: str
    reviews: Path
    meta: Path


_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def _find(directories: list[Path], stem: str) -> Path:
    tried = [directory / f"{stem}{suffix}" for directory in directories for suffix in _SUFFIXES]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {stem}.jsonl[.gz] found; tried: {', '.join(str(path) for path in tried)}")


def locate_raw_files(raw_dir: str | os.PathLike, category: str) -> RawCategoryFiles:
    """Find one category's review and metadata files (`.jsonl`, `.jsonl.gz`, `.json` or `.json.gz`) under
    `raw_dir`, in the release's layout (`review_categories/<category>.*` and `meta_categories/meta_<category>.*`,
    optionally under a leading `raw/`) or side by side in `raw_dir` itself (as the site's download links give
    them).

    Raises:
        FileNotFoundError: `raw_dir` is not a folder, or a file is in none of those places (the message lists
            every path tried).
    """
    root = Path(raw_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--raw-dir {root}: no such folder.")

    def places(subfolder: str) -> list[Path]:
        return [root / subfolder, root / "raw" / subfolder, root]

    return RawCategoryFiles(
        category=category,
        reviews=_find(places("review_categories"), category),
        meta=_find(places("meta_categories"), f"meta_{category}"),
    )


def download_raw_files(category: str, cache_dir: str | os.PathLike | None = None) -> RawCategoryFiles:
    """Fetch one category's raw files from the Hub (`McAuley-Lab/Amazon-Reviews-2023`) with
    `huggingface_hub`, into its cache (or `cache_dir`), and return their local paths."""
    from huggingface_hub import hf_hub_download

    def fetch(filename: str) -> Path:
        return Path(hf_hub_download(HUB_REPO_ID, filename, repo_type="dataset", cache_dir=cache_dir))

    return RawCategoryFiles(
        category=category,
        reviews=fetch(f"raw/review_categories/{category}.jsonl"),
        meta=fetch(f"raw/meta_categories/meta_{category}.jsonl"),
    )


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _byte_progress(path: Path, desc: str) -> tqdm:
    """Bytes read from `path`; no total for gzip files, whose decompressed size is unknown up front."""
    total = None if path.suffix == ".gz" else path.stat().st_size
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)


def iter_review_batches(path: str | os.PathLike, columns: pa.Schema = REVIEW_SCHEMA) -> Iterator[pa.RecordBatch]:
    """Record batches of the review fields in `columns`, streamed from a review file.

    Raises:
        ValueError: naming the file when a block cannot be parsed (broken JSON, a field of the wrong type).
    """
    path = Path(path)
    try:
        reader = pa_json.open_json(
            path,
            read_options=pa_json.ReadOptions(block_size=_BLOCK_SIZE),
            parse_options=pa_json.ParseOptions(explicit_schema=columns, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowInvalid as error:  # the first block is parsed on open
        raise ValueError(f"{path}: review block cannot be parsed ({error}).") from error
    with tqdm(unit=" reviews", unit_scale=True, desc=f"read {path.name}", leave=False) as bar:
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as error:
                raise ValueError(f"{path}: review block cannot be parsed ({error}).") from error
            bar.update(batch.num_rows)
            yield batch


def read_item_metadata(path: str | os.PathLike, wanted: Collection[str]) -> Iterator[dict]:
    """Metadata records (decoded JSON objects) of the items whose `parent_asin` is in `wanted`.

    Each line's `parent_asin` is found with a byte-level regular expression first, so only the needed lines
    are decoded. A wanted line that is not valid JSON is skipped and reported with its line number through
    the `_error` key of a stub record (`{"parent_asin": ..., "_error": ...}`), so the caller can count it.
    """
    path = Path(path)
    wanted = set(wanted)
    with _open_binary(path) as handle, _byte_progress(path, f"read {path.name}") as bar:
        for line_number, line in enumerate(handle, start=1):
            bar.update(len(line))
            match = _PARENT_ASIN.search(line)
            if match is None or match.group(1).decode() not in wanted:
                continue
            asin = match.group(1).decode()
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield {"parent_asin": asin, "_error": f"line {line_number}: {error}"}
                continue
            yield record


def iter_review_texts(path: str | os.PathLike, wanted_items: Collection[str]) -> Iterator[pa.RecordBatch]:
    """Batches of `(parent_asin, helpful_vote, timestamp, text)` of the reviews of `wanted_items`."""
    schema = pa.schema(
        [("parent_asin", pa.string()), ("helpful_vote", pa.int64()), ("timestamp", pa.int64()), ("text", pa.string())]
    )
    value_set = pa.array(sorted(set(wanted_items)), type=pa.string())
    for batch in iter_review_batches(path, schema):
        keep = pc.is_in(batch.column("parent_asin"), value_set=value_set)
        yield batch.filter(keep)


__all__ = [
    "HUB_REPO_ID",
    "REVIEW_SCHEMA",
    "RawCategoryFiles",
    "download_raw_files",
    "iter_review_batches",
    "iter_review_texts",
    "locate_raw_files",
    "read_item_metadata",
]
