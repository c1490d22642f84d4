"""Searching a catalogue through its saved index: the embeddings folder's rows (node id, title), its FAISS
indexes, and the model that encodes the queries, checked against the folder's fingerprints before any answer.

    from slip_hf.search import CatalogueSearch

    search = CatalogueSearch("electronics-embeddings")
    for hit in search.text("usb-c charger", k=10):
        print(hit.score, hit.node_id, hit.title)
"""

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..embedding import encode_images, encode_texts, load_dual_encoder
from ..pixels import PixelPipeline
from ..viewed_image import viewed_rgb
from .fingerprints import dataset_fingerprint, model_fingerprint, require_same, short
from .index import read_index
from .record import INDEX, EmbeddingsRecord, data_files, read_record

AGAINST = {"image": "image_embedding", "text": "text_embedding", "node": "node_embedding"}
"""What a search runs against: the items' images, titles or node embeddings Z."""

RANK_DEPTH = 1000
"""How deep an approximate index is searched for the rank of one item (an exact index ranks every item)."""


@dataclass
class Hit:
    """One search result: the catalogue row, its node id and title, and the cosine score."""

    row: int
    node_id: int
    title: str
    score: float


class CatalogueSearch:
    """An embeddings folder's indexes and the model that encodes queries for them.

    Args:
        folder: an embeddings folder (`slip-hf embed`) with its saved indexes.
        model_name_or_path (*optional*): the query model; default the one the folder records. Its fingerprint must
            equal the folder's.
        name (*optional*): a label (the Space shows it); default the model folder's name.
        load_model: `False` to search with vectors only ([`search`]), without a query model.

    Raises:
        ValueError: an unfinished folder, a query model or an index that does not match the embeddings.
    """

    def __init__(self, folder: str | os.PathLike, model_name_or_path: str | None = None, name: str | None = None,
                 load_model: bool = True):
        import pyarrow.parquet as pq

        self.folder = Path(folder)
        self.record: EmbeddingsRecord = read_record(self.folder)
        if not self.record.indexes:
            raise ValueError(f"embeddings {self.folder} have no saved index; build one with slip-hf index --index {self.folder}.")
        import pyarrow as pa

        tables = [pq.read_table(path, columns=["node_id", self.record.text_column]) for path in data_files(self.folder, self.record)]
        self.node_ids = np.concatenate([table.column("node_id").to_numpy() for table in tables])
        # the titles stay Arrow strings (10M titles as Python strings would take several GB); title() converts one
        self._titles = pa.chunked_array([chunk for table in tables for chunk in table.column(self.record.text_column).chunks])
        self._indexes: dict[str, object] = {}
        model_name_or_path = model_name_or_path or self.record.model
        self.name = name or Path(model_name_or_path).name
        self.model = self.image_processor = self.tokenizer = self.pixel_pipeline = None
        if load_model:
            require_same("model", self.record.model_fingerprint, f"{self.record.model}", model_fingerprint(model_name_or_path),
                         f"the query model {model_name_or_path}", f"embed the catalogue with it (slip-hf embed) or query with {self.record.model}.")
            self.model, self.image_processor, self.tokenizer = load_dual_encoder(model_name_or_path)
            self.model.eval()
            self.pixel_pipeline = PixelPipeline.from_image_processor(self.image_processor)
        # a fast tokenizer refuses two threads at once ("Already borrowed"): one query encoding at a time
        self._encoding = threading.Lock()

    def __len__(self) -> int:
        return self.record.rows

    def check_dataset(self, dataset: str | os.PathLike, config: str, node_ids: np.ndarray) -> None:
        """Refuse a catalogue other than the one embedded: another build of the dataset (fingerprint), or other
        rows (node ids in another order)."""
        require_same("dataset", self.record.dataset_fingerprint, f"{self.record.dataset}", dataset_fingerprint(dataset, config),
                     f"the dataset {dataset}", f"embed this build of it again (slip-hf embed --dataset_name {dataset}).")
        if not np.array_equal(np.asarray(node_ids), self.node_ids):
            raise ValueError(f"embeddings {self.folder} hold {len(self.node_ids):,} items of split {self.record.split!r}; the "
                             f"catalogue has {len(node_ids):,} other rows: serve the same split (--split {self.record.split}).")

    def index(self, against: str):
        """The saved index of `"image"`, `"text"` or `"node"` (loaded once, memory-mapped)."""
        column = AGAINST[against]
        if column not in self._indexes:
            entry = self.record.indexes.get(column)
            if entry is None:
                raise ValueError(f"embeddings {self.folder} have no index of {column} (they have {', '.join(self.record.indexes)}).")
            for what in ("model", "dataset"):
                built, embedded = entry[f"{what}_fingerprint"], getattr(self.record, f"{what}_fingerprint")
                if built != embedded:
                    raise ValueError(f"{self.folder / INDEX / column}.faiss was built from other embeddings ({what} fingerprint "
                                     f"{short(built)} against {short(embedded)}); rebuild it with slip-hf index --index {self.folder}.")
            index = read_index(self.folder / INDEX / f"{column}.faiss", entry["search_parameters"])
            if index.ntotal != self.record.rows:
                raise ValueError(f"{self.folder / INDEX / column}.faiss holds {index.ntotal:,} vectors, the embeddings "
                                 f"{self.record.rows:,}; rebuild it with slip-hf index --index {self.folder}.")
            self._indexes[column] = index
        return self._indexes[column]

    def exact(self, against: str) -> bool:
        return bool(self.record.indexes[AGAINST[against]]["exact"])

    # -- queries ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, query: str) -> torch.Tensor:
        with self._encoding:
            return encode_texts(self.model, self.tokenizer, [query], 1, self.record.max_text_length, desc="query")[0]

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        with self._encoding:
            return encode_images(self.model, self.image_processor, [image], 1, desc="query", pixel_pipeline=self.pixel_pipeline)[0]

    def vector(self, against: str, row: int) -> torch.Tensor:
        """The stored vector of catalogue row `row` (as the index holds it: exact, or float16 for an approximate one)."""
        return torch.from_numpy(self.index(against).reconstruct(int(row)))

    def search(self, query: torch.Tensor, against: str, k: int = 12) -> tuple[list[int], list[float]]:
        """The `k` catalogue rows closest to `query` `(d,)` and their scores."""
        scores, rows = self.index(against).search(np.asarray(query, dtype=np.float32).reshape(1, -1), min(k, len(self)))
        keep = rows[0] >= 0
        return rows[0][keep].tolist(), scores[0][keep].tolist()

    def rank_of(self, query: torch.Tensor, against: str, row: int) -> int | None:
        """1-based rank of catalogue row `row` for `query` (ties count against it); `None` when an approximate
        index does not find it among its first `RANK_DEPTH`."""
        depth = len(self) if self.exact(against) else min(RANK_DEPTH, len(self))
        scores, rows = self.index(against).search(np.asarray(query, dtype=np.float32).reshape(1, -1), depth)
        found = np.flatnonzero(rows[0] == row)
        return int((scores[0] >= scores[0][found[0]]).sum()) if found.size else None

    def title(self, row: int) -> str:
        """The title of catalogue row `row`."""
        return self._titles[int(row)].as_py()

    def hits(self, rows: list[int], scores: list[float]) -> list[Hit]:
        return [Hit(row, int(self.node_ids[row]), self.title(row), score) for row, score in zip(rows, scores)]

    def text(self, query: str, k: int = 10, against: str = "image") -> list[Hit]:
        """The `k` items whose images (or `against="text"`: titles) best match a text query."""
        if not query or not query.strip():
            raise ValueError("the query is empty; type what to search for, e.g. \"usb-c charger\".")
        return self.hits(*self.search(self.encode_text(query.strip()), against, k))

    def image(self, image: str | os.PathLike | Image.Image, k: int = 10, against: str = "text") -> list[Hit]:
        """The `k` items whose titles (or `against="image"`: images) best match an image (a path or a PIL image, seen
        upright with transparency on white); a file that is not an image is refused by name."""
        return self.hits(*self.search(self.encode_image(viewed_rgb(image)), against, k))


__all__ = ["AGAINST", "RANK_DEPTH", "CatalogueSearch", "Hit"]
