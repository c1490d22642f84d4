"""Streaming readers for the raw Amazon Reviews 2023 files (hou2024bridging).

The McAuley-Lab release (`McAuley-Lab/Amazon-Reviews-2023` on the Hub) ships one review file and one
metadata file per category, as JSON lines, optionally gzip-compressed:

    raw/review_categories/<Category>.jsonl[.gz]       one review per line
    raw/meta_categories/meta_<Category>.jsonl[.gz]    one item per line

Review fields used here: `user_id`, `parent_asin` (the item; `asin` is the variant), `timestamp` (Unix
milliseconds), `verified_purchase`, `helpful_vote` and `text`. Metadata fields: `parent_asin`, `title`,
`main_category`, `categories` (the category path), `images` (a list of `{thumb, large, hi_res, variant}`),
`description` and `features` (lists of strings), `store`.

Nothing here holds a raw file in memory: both files are parsed block by block by pyarrow's JSON reader
(C++, multi-threaded) with an explicit schema, so unknown or irregular fields (`details`, `images`, ...) are
never materialised, and metadata lines are only decoded whole for the items a build needs. Bad lines are
found and numbered exactly, and raise or are skipped and counted ([`json_lines`]).
"""

import json
import os
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .json_lines import BadLines, read_json_lines

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

META_ID_SCHEMA = pa.schema([("parent_asin", pa.string())])
"""What every metadata line is parsed for; the wanted lines are then decoded whole."""

_PARENT_ASIN = re.compile(rb'"parent_asin"\s*:\s*"([^"]*)"')  # read from a bad line, to count its item


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


def iter_review_batches(
    path: str | os.PathLike, columns: pa.Schema = REVIEW_SCHEMA, bad_lines: BadLines | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of the review fields in `columns`, streamed from a review file: one per parsed block
    (~16 MB of lines) rather than the parser's ~1 MB pieces, so per-batch work is done a dozen times less often.

    Args:
        bad_lines: counts skipped bad lines (`on_bad_lines="skip"`); default: the first one raises.

    Raises:
        BadLineError: naming the file and the line, at the first bad line with `on_bad_lines="error"`.
    """
    for block in read_json_lines(path, columns, bad_lines):
        yield from block.table.combine_chunks().to_batches()


def read_item_metadata(path: str | os.PathLike, wanted: Collection[str], bad_lines: BadLines | None = None) -> Iterator[dict]:
    """Metadata records (decoded JSON objects) of the items whose `parent_asin` is in `wanted`, in file order.

    Every line is checked by pyarrow's parser (`parent_asin` only), and only the wanted lines are decoded
    into Python objects. A bad line (see [`read_json_lines`]) is counted by `bad_lines` (or raises, with
    `on_bad_lines="error"`); when its `parent_asin` can still be read and is wanted, a stub record
    `{"parent_asin": ..., "_error": ...}` is yielded, so the caller can count the item as malformed.
    """
    path, wanted = Path(path), set(wanted)
    bad_lines = bad_lines or BadLines(str(path))
    value_set = pa.array(sorted(wanted), type=pa.string())
    for block in read_json_lines(path, META_ID_SCHEMA, bad_lines):
        records = []
        rows = pc.indices_nonzero(pc.is_in(block.table.column("parent_asin"), value_set=value_set)).to_pylist()
        numbers = block.line_numbers.tolist() if rows else []
        for row in rows:
            number = numbers[row]
            try:
                records.append((number, json.loads(block.line(row))))
            except json.JSONDecodeError as error:  # pyarrow's parser accepted what Python's rejects
                bad_lines.add(number, f"JSON parse error: {error}")
                records.append((number, {"parent_asin": block.table.column("parent_asin")[row].as_py(), "_error": str(error)}))
        for number, line in block.bad:
            match = _PARENT_ASIN.search(line)
            asin = match.group(1).decode(errors="replace") if match else None
            if asin in wanted:
                records.append((number, {"parent_asin": asin, "_error": f"line {number} is malformed"}))
        records.sort(key=lambda record: record[0])
        yield from (record for _, record in records)


def iter_review_texts(path: str | os.PathLike, wanted_items: Collection[str], on_bad_lines: str = "error") -> Iterator[pa.RecordBatch]:
    """Batches of `(parent_asin, helpful_vote, timestamp, text)` of the reviews of `wanted_items`."""
    schema = pa.schema(
        [("parent_asin", pa.string()), ("helpful_vote", pa.int64()), ("timestamp", pa.int64()), ("text", pa.string())]
    )
    value_set = pa.array(sorted(set(wanted_items)), type=pa.string())
    for batch in iter_review_batches(path, schema, BadLines(str(path), on_bad_lines)):
        keep = pc.is_in(batch.column("parent_asin"), value_set=value_set)
        yield batch.filter(keep)


__all__ = [
    "HUB_REPO_ID",
    "REVIEW_SCHEMA",
    "META_ID_SCHEMA",
    "RawCategoryFiles",
    "download_raw_files",
    "iter_review_batches",
    "iter_review_texts",
    "locate_raw_files",
    "read_item_metadata",
]
