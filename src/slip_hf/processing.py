"""Turning raw node rows (an image and a text) into SLIP model inputs, with optional training augmentation."""

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .pixels import decode_image, draw_crop_box
from .viewed_image import viewed_rgb


class RandomResizedCropFlip:
    """Training augmentation of the processor image path, on PIL images: the tensor path's crop and flip
    (`slip_hf.pixels.draw_crop_box`: the centred square of a random resized crop, then a horizontal flip with
    probability `flip_probability`), so that `--augment` means the same on both paths. The image processor then
    resizes the square to its crop size.

    The box is drawn from a generator seeded from Python's `random` module, which `Trainer` seeds and
    checkpoints: augmented runs are reproducible. With data workers, the workers' `random` states are not in
    the checkpoint, so only the tensor path (whose crops are seeded by `(seed, epoch, node)`) resumes exactly.
    """

    def __init__(self, scale: tuple[float, float] = (0.7, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_probability: float = 0.5):
        self.scale, self.ratio, self.flip_probability = scale, ratio, flip_probability

    def __call__(self, image: Image.Image) -> Image.Image:
        rng = np.random.default_rng(random.getrandbits(64))
        box = draw_crop_box(rng, image.height, image.width, self.scale, self.ratio, self.flip_probability)
        image = image.crop((box.left, box.top, box.left + box.side, box.top + box.side))
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if box.flip else image


def undecoded_images(dataset: Any, column: str = "image") -> Any:
    """`dataset` with its `datasets.Image` column left encoded (`decode=False`), so that [`NodeTransform`] (or a
    data worker) decodes each image itself and names the node of one that cannot be decoded; `datasets` would
    raise PIL's bare error first. Other columns and datasets without such a column pass unchanged."""
    from datasets import Image as ImageFeature

    feature = getattr(dataset, "features", {}).get(column)
    if isinstance(feature, ImageFeature) and feature.decode:
        return dataset.cast_column(column, ImageFeature(decode=False))
    return dataset


class NodeTransform:
    """Batch transform for `datasets.Dataset.with_transform`: images -> `pixel_values`, texts ->
    `input_ids`/`attention_mask`; `node_id` and the label column pass through, and so does the raw text (as
    `text`, for objectives that derive inputs from it).

    Bad input fails loudly and names the row: an image that cannot be decoded or an empty text raises a
    `ValueError` with the row's `node_id`, instead of training on garbage.

    Args:
        image_processor: a CLIP image processor (`AutoImageProcessor.from_pretrained(...)`).
        tokenizer: the CLIP tokenizer.
        text_column: column holding the text (paper: the product title).
        image_column: column holding the image (`datasets.Image`, PIL images or paths).
        max_length: texts are padded/truncated to this many tokens.
        label_column: column of category ids, renamed to `labels`; `None` to skip.
        image_augmentation: optional callable applied to each PIL image before processing (training only).
        extra_columns: further columns passed through unchanged (e.g. the scene-graph annotations that
            Structure-CLIP's objectives read).
        decode_only: the tensor image path (`slip_hf.pixels`): images are only decoded, to `images` (`(3, H, W)`
            uint8 tensors), and the trainer's [`PixelPipeline`] resizes, augments and normalises them batched on
            the training device; `image_processor` and `image_augmentation` are then unused.
    """

    def __init__(
        self,
        image_processor: Any,
        tokenizer: Any,
        text_column: str = "title",
        image_column: str = "image",
        max_length: int = 77,
        label_column: str | None = "label",
        image_augmentation: Callable[[Image.Image], Image.Image] | None = None,
        extra_columns: Sequence[str] = (),
        decode_only: bool = False,
    ):
        if decode_only and image_augmentation is not None:
            raise ValueError("decode_only leaves augmentation to the PixelPipeline: pass image_augmentation=None.")
        self.decode_only = decode_only
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.text_column = text_column
        self.image_column = image_column
        self.max_length = max_length
        self.label_column = label_column
        self.image_augmentation = image_augmentation
        self.extra_columns = tuple(extra_columns)

    def _load_image(self, image: Any, node_id: Any) -> Image.Image:
        try:
            image = viewed_rgb(image)
        except ValueError as error:
            raise ValueError(f"node {node_id}: {error}") from None
        return self.image_augmentation(image) if self.image_augmentation is not None else image

    @staticmethod
    def _decode(image: Any, node_id: Any) -> Any:
        try:
            return decode_image(image)
        except ValueError as error:
            raise ValueError(f"node {node_id}: {error}") from None

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        node_ids = batch["node_id"]
        texts = batch[self.text_column]
        for node_id, text in zip(node_ids, texts):
            if text is None or not str(text).strip():
                raise ValueError(f"node {node_id}: empty {self.text_column!r}.")
        if self.decode_only:
            out: dict[str, Any] = {"images": [self._decode(image, node_id) for image, node_id in zip(batch[self.image_column], node_ids)]}
        else:
            images = [self._load_image(image, node_id) for image, node_id in zip(batch[self.image_column], node_ids)]
            out = dict(self.image_processor(images=images, return_tensors="np"))
            out["pixel_values"] = np.asarray(out["pixel_values"], dtype=np.float32)
        out.update(
            self.tokenizer(
                list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="np"
            )
        )
        out["node_id"] = node_ids
        out["text"] = [str(text) for text in texts]
        for column in self.extra_columns:
            out[column] = batch[column]
        if self.label_column is not None and self.label_column in batch:
            out["labels"] = batch[self.label_column]
        return out


__all__ = ["NodeTransform", "RandomResizedCropFlip", "undecoded_images"]
