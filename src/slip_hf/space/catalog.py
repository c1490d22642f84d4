"""The items a Space shows: one split (or all) of a co-purchase graph dataset, with each item's image, title,
category and co-purchase neighbours (edge counts and times)."""

import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from datasets import Dataset
from PIL import Image

from ..data.hub import load_copurchase_graph
from ..paths import write_whole
from ..search.catalogue import catalogue_edge_rows, catalogue_items


@dataclass
class Neighbour:
    """One co-purchase edge seen from an item: the other item's row in the catalogue, its buyers and times."""

    row: int
    count: int
    first_time: int
    last_time: int

    def describe(self) -> str:
        first, last = (datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m") for t in (self.first_time, self.last_time))
        return f"bought together by {self.count} · {first} – {last}"


def _read_listing(path: Path) -> list[str] | None:
    """The file names a finished `write_image_files` listed, or `None` (no list, or one that does not parse)."""
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return names if isinstance(names, list) and all(isinstance(name, str) for name in names) else None


def _write_whole(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole (`slip_hf.paths.write_whole`): a reader never finds half a file there."""
    write_whole(path, lambda temporary: temporary.write_bytes(data))


class Catalog:
    """Items of a dataset split (`"all"`: every split) in row order, and the co-purchase edges between them.

    Args:
        items: the node rows (`node_id`, `title`, `image`, optionally `category_path` / `label`).
        edges: the edge table (`src`, `dst`, `count`, `first_time`, `last_time`, node ids).
    """

    def __init__(self, items: Dataset, edges: Dataset, text_column: str = "title", image_column: str = "image"):
        for column in ("node_id", text_column, image_column):
            if column not in items.column_names:
                raise ValueError(f"the dataset has no {column!r} column (it has {items.column_names}); a Space needs images and texts.")
        self.items, self.text_column, self.image_column = items, text_column, image_column
        self._image_files: list[str] | None = None
        self._labels = items.select_columns([c for c in ("category_path", "label") if c in items.column_names])
        self.titles = [str(title) for title in items[text_column]]
        node_ids = np.asarray(items["node_id"], dtype=np.int64)
        a, b, kept = catalogue_edge_rows(node_ids, *(np.asarray(edges[c], dtype=np.int64) for c in ("src", "dst")))
        attributes = [np.asarray(edges[c], dtype=np.int64)[kept] for c in ("count", "first_time", "last_time")]
        owner, other = np.concatenate([a, b]), np.concatenate([b, a])
        order = np.lexsort((-np.concatenate([attributes[0]] * 2), owner))  # by item, most co-bought first
        self._other = other[order]
        self._attributes = [np.concatenate([x, x])[order] for x in attributes]
        self._indptr = np.searchsorted(owner[order], np.arange(len(items) + 1))

    @classmethod
    def from_dataset(cls, path_or_repo: str | os.PathLike, config: str = "electronics", split: str = "test", **kwargs) -> "Catalog":
        """Load a dataset folder or Hub repo (`slip_hf.data.load_copurchase_graph`) and keep `split` (or "all")."""
        graph = load_copurchase_graph(path_or_repo, config)
        return cls(catalogue_items(graph, split), graph.edges, **kwargs)

    def __len__(self) -> int:
        return len(self.titles)

    def write_image_files(self, cache_dir: str | os.PathLike) -> Path:
        """Write every item's image, as the dataset stores it (no decoding, no re-encoding), to
        `<cache_dir>/images-<catalogue fingerprint>/<node_id>.<format>`, once: files already there (an earlier start)
        are kept, and each new one is written under a temporary name and renamed, so that no visitor is ever sent
        half a file. Galleries then hand out these paths, and a search encodes no image. Returns the folder.

        The folder's `files.json`, written last, lists the files; a later start that finds it, and every file it
        lists, reads no image at all (300,000 items: the list, not 300,000 images)."""
        folder = Path(cache_dir) / f"images-{self.items._fingerprint}"
        listing = folder / "files.json"
        names = _read_listing(listing)
        if names is None or len(names) != len(self) or not set(names) <= {entry.name for entry in os.scandir(folder)}:
            folder.mkdir(parents=True, exist_ok=True)
            names = self._write_images(folder)
            _write_whole(listing, json.dumps(names).encode())
        self._image_files = [str(folder / name) for name in names]
        return folder

    def _write_images(self, folder: Path) -> list[str]:
        """Each row's image file in `folder` (written if missing); their names, in row order."""
        from datasets import Image as ImageFeature
        from tqdm.auto import tqdm

        stored = self.items.select_columns(["node_id", self.image_column]).cast_column(self.image_column, ImageFeature(decode=False))
        names = []
        for row in tqdm(stored, desc="space image files", total=len(stored), leave=False, disable=len(stored) < 1000):
            value = row[self.image_column]
            data = value["bytes"] if value.get("bytes") is not None else Path(value["path"]).read_bytes()
            with Image.open(io.BytesIO(data)) as image:  # reads the header only: the file's format names its suffix
                suffix = (image.format or "jpeg").lower().replace("jpeg", "jpg")
            path = folder / f"{row['node_id']}.{suffix}"
            if not path.is_file():
                _write_whole(path, data)
            names.append(path.name)
        return names

    def image_file(self, row: int) -> str:
        """The path of an item's image file ([`write_image_files`] first)."""
        if self._image_files is None:
            raise RuntimeError("call Catalog.write_image_files(cache_dir) before asking for image files.")
        return self._image_files[int(row)]

    def category(self, row: int) -> str:
        item = self._labels[int(row)]  # without the image column: no image is decoded for a category
        path = item.get("category_path")
        return " › ".join(path) if path else str(item.get("label", ""))

    def neighbours(self, row: int, limit: int = 12) -> list[Neighbour]:
        """Co-purchase neighbours of an item inside the catalogue, most co-bought first."""
        start, stop = self._indptr[row], min(self._indptr[row + 1], self._indptr[row] + limit)
        count, first, last = (x[start:stop] for x in self._attributes)
        return [Neighbour(int(o), int(c), int(f), int(t)) for o, c, f, t in zip(self._other[start:stop], count, first, last)]


__all__ = ["Catalog", "Neighbour"]
