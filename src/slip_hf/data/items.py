"""Step 3 of the graph build: item metadata, and which items are usable nodes.

An item is dropped, with the reason counted, when it has no metadata line, a malformed one, a missing or
blank title, no usable image URL, or (with `require_description=True`) an empty description. The image URL
is the `MAIN` image's `hi_res` version, else its `large` one; without a `MAIN` image, the first image that
has either.
"""

import gc
import os
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from tqdm.auto import tqdm

from .amazon_raw import read_item_metadata
from .json_lines import BadLines

ITEM_SCHEMA = pa.schema(
    [
        ("parent_asin", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("features", pa.list_(pa.string())),
        ("store", pa.string()),
        ("main_category", pa.string()),
        ("category_path", pa.list_(pa.string())),
        ("image_url", pa.string()),
    ]
)
"""Columns of the valid-item table."""

DROP_REASONS = ("no_metadata", "malformed_metadata", "blank_title", "no_image_url", "blank_description")


def select_image_url(images: Sequence[dict[str, Any]] | None) -> str | None:
    """The URL to download for an item: its `MAIN` image in `hi_res`, else `large`; without a `MAIN` image,
    the first image with a `hi_res` or `large` URL. `None` when there is none."""

    def best(image: dict[str, Any]) -> str | None:
        for size in ("hi_res", "large"):
            url = image.get(size)
            if isinstance(url, str) and url.strip().lower().startswith(("http://", "https://", "file://")):
                return url.strip()
        return None

    images = [image for image in images or [] if isinstance(image, dict)]
    for image in sorted(images, key=lambda image: image.get("variant") != "MAIN"):  # MAIN first, stable
        url = best(image)
        if url is not None:
            return url
    return None


def _text(value: Any) -> str:
    """Amazon metadata holds text as a string or a list of strings (`description`)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(part).strip() for part in value if part is not None and str(part).strip())
    return str(value).strip()


def _string_list(value: Any) -> list[str]:
    return [str(part).strip() for part in value if part is not None and str(part).strip()] if isinstance(value, list) else []


def parse_item(record: dict[str, Any], require_description: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """One metadata record as a row of [`ITEM_SCHEMA`], or `(None, reason)` with a reason of `DROP_REASONS`."""
    if "_error" in record:
        return None, "malformed_metadata"
    title = _text(record.get("title"))
    if not title:
        return None, "blank_title"
    image_url = select_image_url(record.get("images"))
    if image_url is None:
        return None, "no_image_url"
    description = _text(record.get("description"))
    if require_description and not description:
        return None, "blank_description"
    row = {
        "parent_asin": record["parent_asin"],
        "title": title,
        "description": description,
        "features": _string_list(record.get("features")),
        "store": _text(record.get("store")),
        "main_category": _text(record.get("main_category")),
        "category_path": _string_list(record.get("categories")),
        "image_url": image_url,
    }
    return row, None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while decoding: the decoded records hold no cycles, and with the modules
    of a training stack loaded (~450k objects) each full collection takes about a second, which made decoding
    several times slower (measured: 22 s against 4.7 s for 333k metadata lines)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_items(
    meta_path: str | os.PathLike, wanted: Collection[str], require_description: bool = False, on_bad_lines: str = "error"
) -> tuple[pa.Table, dict]:
    """Valid items among `wanted` (parent ASINs), read from a metadata file.

    Args:
        on_bad_lines: `"error"` stops at the first line that is not a JSON object; `"skip"` skips and counts
            such lines ([`json_lines.BadLines`]). A wanted item whose line is bad counts as `malformed_metadata`.

    Returns:
        (items, stats): `items` follows [`ITEM_SCHEMA`], sorted by `parent_asin`; `stats` has one count per
        drop reason of [`DROP_REASONS`], `valid_items`, and the file's skipped lines under `bad_lines`. An ASIN
        listed twice keeps its first line.
    """
    wanted = set(wanted)
    rows: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    stats: dict = dict.fromkeys(DROP_REASONS, 0)
    bad_lines = BadLines(str(meta_path), on_bad_lines)
    with _collector_paused(), tqdm(desc="item metadata", unit=" items", leave=False) as bar:
        for record in read_item_metadata(meta_path, wanted, bad_lines):
            bar.update()
            asin = record["parent_asin"]
            if asin in seen:
                continue
            seen.add(asin)
            row, reason = parse_item(record, require_description)
            if row is None:
                stats[reason] += 1
            else:
                rows[asin] = row
    stats["no_metadata"] = len(wanted - seen)
    stats["valid_items"] = len(rows)
    stats["bad_lines"] = bad_lines.as_dict()
    ordered = [rows[asin] for asin in sorted(rows)]
    return pa.Table.from_pylist(ordered, schema=ITEM_SCHEMA), stats


__all__ = ["DROP_REASONS", "ITEM_SCHEMA", "load_items", "parse_item", "select_image_url"]
