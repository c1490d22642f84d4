"""A searchable index of one model over a catalogue: the items' image and text embeddings, computed once per
(model, catalogue) and cached as safetensors, and queries by text or by image."""

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from ..embedding import encode_images, encode_texts, load_dual_encoder
from ..evaluation.runner import RowImage
from ..pixels import PixelPipeline
from ..viewed_image import VIEW_VERSION
from .catalog import Catalog


def _model_fingerprint(model_name_or_path: str) -> dict:
    """What identifies the weights: a local folder's weight files (name, size, mtime), or a Hub id."""
    path = Path(model_name_or_path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        return {"path": str(path.resolve()), "files": [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]}
    return {"repo": model_name_or_path}


@dataclass
class ModelIndex:
    """One model's embeddings of a catalogue, and its queries.

    Attributes:
        name: the label the page shows.
        image, text (`torch.Tensor` of shape `(N, d)`): l2-normalised embeddings of the catalogue's rows.
    """

    name: str
    model: Any
    image_processor: Any
    tokenizer: Any
    image: torch.Tensor
    text: torch.Tensor
    max_text_length: int | None = None
    pixel_pipeline: PixelPipeline | None = None
    """The tensor image path (`slip_hf.pixels`) that the catalogue's embeddings were made with; `None`: the processor."""

    def __post_init__(self):
        # Visitors search at once (the page's handlers run concurrently); a fast tokenizer refuses to be used by two
        # threads at a time ("Already borrowed"), so each model encodes one query at a time. The search itself, a
        # read-only matrix product, needs no lock.
        self._encoding = threading.Lock()

    @torch.no_grad()
    def encode_text(self, query: str) -> torch.Tensor:
        with self._encoding:
            return encode_texts(self.model, self.tokenizer, [query], 1, self.max_text_length, desc="query")[0]

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        with self._encoding:
            return encode_images(self.model, self.image_processor, [image], 1, desc="query", pixel_pipeline=self.pixel_pipeline)[0]

    def vector(self, against: str, row: int) -> torch.Tensor:
        """The embedding of catalogue row `row` among the `"image"` or `"text"` embeddings."""
        return getattr(self, against)[row]

    def search(self, query: torch.Tensor, against: str, k: int = 12) -> tuple[list[int], list[float]]:
        """The `k` catalogue rows closest to `query` `(d,)` among the `"image"` or `"text"` embeddings."""
        scores = getattr(self, against) @ query
        top = torch.topk(scores, min(k, scores.numel()))
        return top.indices.tolist(), top.values.tolist()

    def rank_of(self, query: torch.Tensor, against: str, row: int) -> int:
        """1-based rank of catalogue row `row` for `query` (ties count against it)."""
        scores = getattr(self, against) @ query
        return int((scores >= scores[row]).sum())


def load_index(
    model_name_or_path: str, catalog: Catalog, cache_dir: str | os.PathLike, name: str | None = None,
    batch_size: int = 64, max_text_length: int | None = None, progress=None,
) -> ModelIndex:
    """Load a SLIP or CLIP checkpoint and its embeddings of `catalog`: from `cache_dir` when a file for the same
    weights and catalogue exists, else computed (with `progress(fraction, desc=...)` updates, e.g. a
    `gr.Progress`) and saved there as safetensors."""
    model, image_processor, tokenizer = load_dual_encoder(model_name_or_path)
    model = model.eval()
    pixel_pipeline = PixelPipeline.from_image_processor(image_processor)  # the training default, the tensor path
    key = {"model": _model_fingerprint(model_name_or_path), "catalog": catalog.items._fingerprint, "rows": len(catalog),
           "text_column": catalog.text_column, "max_text_length": max_text_length, "image_pipeline": "tensor",
           "view_version": VIEW_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"embeddings-{digest}.safetensors"
    if path.exists():
        tensors = load_file(str(path))
    else:
        if progress is not None:
            progress(0.0, desc=f"{name or model_name_or_path}: embedding {len(catalog):,} images")
        # decoded in two data workers, not in the serving process, whose own heap grew with every image it decoded
        # (by about 16 MB per 1,000 on busy cores: the Space guide)
        image = encode_images(model, image_processor, range(len(catalog)), batch_size,
                              load_image=RowImage(catalog.items, catalog.image_column), desc="space images",
                              pixel_pipeline=pixel_pipeline, num_workers=2)
        if progress is not None:
            progress(0.5, desc=f"{name or model_name_or_path}: embedding {len(catalog):,} texts")
        text = encode_texts(model, tokenizer, catalog.titles, 256, max_text_length, desc="space texts")
        tensors = {"image": image.contiguous(), "text": text.contiguous()}
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        save_file(tensors, str(temporary), metadata={"key": json.dumps(key)})
        os.replace(temporary, path)  # an interrupted run never leaves a half-written cache under the final name
    return ModelIndex(name or Path(model_name_or_path).name, model, image_processor, tokenizer,
                      F.normalize(tensors["image"].float(), dim=-1), F.normalize(tensors["text"].float(), dim=-1), max_text_length,
                      pixel_pipeline)


__all__ = ["ModelIndex", "load_index"]
