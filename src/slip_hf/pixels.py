r"""The tensor image path: CPU workers only decode images to uint8 tensors; resizing, cropping, augmentation
and normalisation run batched in torch on the training device (the GPU when there is one).

[`decode_image`] is the CPU side: PIL decode, the image as a person sees it (`slip_hf.viewed_image`: EXIF
orientation, transparency on white, 16-bit scaled, CMYK and palettes converted), a `(3, H, W)` uint8 tensor (a
channels-last view of the decoded `(H, W, 3)` array, which the data collator stacks with one contiguous copy).

[`PixelPipeline`] is the device side, the same preprocessing as a CLIP image processor (any checkpoint's
`preprocessor_config.json`):

1. resize so that the shortest edge is `shortest_edge` (the long edge :math:`\lfloor s \cdot L / S \rfloor`,
   as transformers computes it), bicubic with antialiasing (PIL's filter, as torch implements it);
2. centre crop to `crop_size` (top :math:`= \lfloor (H - h) / 2 \rfloor`, as transformers does);
3. :math:`x \cdot` `rescale_factor`, then :math:`(x - \mu) / \sigma`.

Images of equal size are processed as one batch; a batch of mixed sizes is grouped by size. Pixel values
match the processor's to within rounding: on average under half a 1/255 step, at most a few steps at sharp
edges (PIL's and torch's fixed-point bicubic kernels round differently).

Augmentation (training): a random resized crop and a horizontal flip, drawn per sample from a generator
seeded with `(seed, epoch, key)`, where the key is the sample's node id. The same sample in the same epoch
gets the same crop on any worker, process or machine, so a run resumed from a checkpoint replays exactly
the batches it would have seen. The crop covers `scale` of the image's area with an aspect ratio in
`ratio` (log-uniform); its centred square is resized to the crop size (bicubic, antialiased), which is what
resizing the crop's shortest edge and centre-cropping it would give.

On a GPU the crops of a whole batch are one operation: each sample's crop, resize and flip is a pair of
resampling matrices (rows: output pixels; columns: input pixels, zero outside the crop window), filled with
the weights of torch's antialiased bicubic kernel ([`resampling_matrices`]), and the batch is resized by two
batched matrix products, :math:`Y = W_y X W_x^\top`. The boxes are drawn from the same per-sample generators,
so the pixels are those of the per-sample path to within float rounding.

On the CPU the resizes run per sample on uint8 tensors (torch's uint8 kernels are several times faster there
than the float matrix products, and round like PIL); elsewhere on float32.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .viewed_image import viewed_rgb


def decode_image(image: Any) -> torch.Tensor:
    """The image as a person sees it (`slip_hf.viewed_image.viewed_rgb`), as a tensor: what the tensor path's data
    workers put in a batch.

    Args:
        image (`PIL.Image.Image | dict | bytes | str | os.PathLike | BinaryIO`): what
            `slip_hf.viewed_image.open_image` takes.

    Returns:
        `torch.Tensor` of shape `(3, H, W)`, dtype `uint8`: the RGB pixels.

    Raises:
        ImageRefused: (a `ValueError`) for what cannot be decoded.
    """
    array = np.array(viewed_rgb(image))  # a writable copy: torch refuses read-only buffers
    return torch.from_numpy(array).permute(2, 0, 1)


def _pair(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    return int(size["height"]), int(size["width"])


@dataclass
class PixelPipeline:
    """Batched CLIP preprocessing (see the module docstring). Build it from an image processor with
    [`from_image_processor`].

    Attributes:
        shortest_edge (`int`, *optional*, defaults to 224): target of the shortest edge, or `None` with `resize_to`
            (a fixed `(height, width)`) or no resizing.
        resize_to (`tuple[int, int]`, *optional*): fixed output size of the resize (processors configured with
            `height`/`width`).
        crop_size (`tuple[int, int]`, *optional*, defaults to `(224, 224)`): `(height, width)` of the centre crop, or
            `None`.
        rescale_factor (`float`, *optional*, defaults to 1/255): the processor's; `None` keeps 0..255.
        image_mean (`tuple[float, ...]`, *optional*, defaults to CLIP's): the processor's, per channel; `None` (with
            `image_std`) skips the normalisation.
        image_std (`tuple[float, ...]`, *optional*, defaults to CLIP's): the processor's, per channel.
        augment (`bool`, *optional*, defaults to `False`): draw a random resized crop and flip per sample (training).
        scale (`tuple[float, float]`, *optional*, defaults to `(0.7, 1.0)`): the crop's share of the image's area.
        ratio (`tuple[float, float]`, *optional*, defaults to `(3/4, 4/3)`): the crop's aspect ratio range.
        flip_probability (`float`, *optional*, defaults to 0.5): the chance of a horizontal flip.
        seed (`int`, *optional*, defaults to 0): the run's seed (per-sample generators are seeded with `(seed, epoch,
            key)`).
        batched (`bool`, *optional*): augment a batch with one batched resampling (`True`), per sample (`False`), or
            by device (`None`: batched off the CPU, where it is the fast way; per sample on the CPU, where uint8
            resizes are faster).

    Example:

    ```python
    >>> from PIL import Image
    >>> from transformers import CLIPImageProcessor
    >>> pipeline = PixelPipeline.from_image_processor(CLIPImageProcessor())
    >>> photo = Image.new("RGBA", (320, 240), (200, 30, 30, 255))   # any size, mode or orientation
    >>> pipeline([decode_image(photo)]).shape                         # CLIP's 224 x 224, float32
    torch.Size([1, 3, 224, 224])

    ```
    """

    shortest_edge: int | None = 224
    resize_to: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = (224, 224)
    rescale_factor: float | None = 1 / 255
    image_mean: tuple[float, ...] | None = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] | None = (0.26862954, 0.26130258, 0.27577711)
    augment: bool = False
    scale: tuple[float, float] = (0.7, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    seed: int = 0
    batched: bool | None = None

    @classmethod
    def from_image_processor(cls, processor: Any, augment: bool = False, seed: int = 0) -> "PixelPipeline":
        """The pipeline that reproduces `processor` (a CLIP-style image processor, either backend)."""
        size = getattr(processor, "size", None) or {}
        shortest = size.get("shortest_edge") if getattr(processor, "do_resize", True) else None
        resize_to = None
        if getattr(processor, "do_resize", True) and shortest is None and size.get("height"):
            resize_to = _pair(size)
        crop = _pair(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
        normalize = getattr(processor, "do_normalize", True)
        return cls(
            shortest_edge=shortest, resize_to=resize_to, crop_size=crop,
            rescale_factor=float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else None,
            image_mean=tuple(processor.image_mean) if normalize else None,
            image_std=tuple(processor.image_std) if normalize else None,
            augment=augment, seed=seed,
        )

    def __call__(
        self, images: torch.Tensor | Sequence[torch.Tensor], keys: Sequence[int] | torch.Tensor | None = None,
        epoch: int = 0, device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """`pixel_values` `(b, 3, h, w)` float32 from uint8 images (a `(b, 3, H, W)` tensor or `b` tensors
        `(3, H_i, W_i)`), on `device` (default: the images'). With `augment`, `keys` (one int per image, e.g. the
        node ids) and `epoch` seed each image's crop and flip."""
        images = list(images) if not isinstance(images, torch.Tensor) else list(images.unbind(0))
        if not images:
            raise ValueError("no images to process.")
        if self.augment and (keys is None or len(keys) != len(images)):
            raise ValueError("augmentation needs one key per image (e.g. the node ids) to seed its crop and flip.")
        device = torch.device(device) if device is not None else images[0].device
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            if image.dim() != 3 or image.size(0) != 3 or image.dtype != torch.uint8:
                raise ValueError(f"image {index}: expected a (3, H, W) uint8 tensor, got {tuple(image.shape)} {image.dtype}.")
            groups[tuple(image.shape[1:])].append(index)
        keys = [int(k) for k in keys] if keys is not None else None
        out: list[torch.Tensor | None] = [None] * len(images)
        for (height, width), indices in groups.items():
            batch = torch.stack([images[i] for i in indices]).to(device, non_blocking=True)
            if self.augment:
                boxes = [self.draw_crop(keys[i], epoch, height, width) for i in indices]
                batched = self.batched if self.batched is not None else batch.device.type != "cpu"
                batch = self._crop_batch(batch, boxes) if batched else torch.stack(
                    [self._crop_one(image, box) for image, box in zip(batch, boxes)])
            else:
                batch = self._resize(batch)
                if self.crop_size is not None:
                    batch = _center_crop(batch, *self.crop_size)
            for position, index in enumerate(indices):
                out[index] = batch[position]
        return self._normalize(torch.stack(out))

    def _resize(self, batch: torch.Tensor) -> torch.Tensor:
        """Resize as the processor does. uint8 in, uint8 out on the CPU (torch's uint8 kernels are ~5x faster
        there, and round like PIL), float on other devices."""
        height, width = batch.shape[-2:]
        if self.shortest_edge is not None:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            size = (new_long, new_short) if width <= height else (new_short, new_long)
        elif self.resize_to is not None:
            size = self.resize_to
        else:
            return batch
        if size == (height, width):
            return batch
        if batch.device.type != "cpu":
            batch = batch.float()
        resized = F.interpolate(batch, size=size, mode="bicubic", antialias=True, align_corners=False)
        return resized if resized.dtype == torch.uint8 else resized.clamp_(0, 255)  # PIL clips bicubic's overshoot

    def draw_crop(self, key: int, epoch: int, height: int, width: int) -> "CropBox":
        """One sample's crop and flip, from its own generator seeded with `(seed, epoch, key)`."""
        return draw_crop_box(np.random.default_rng([self.seed, epoch, key]), height, width, self.scale, self.ratio,
                             self.flip_probability)

    def _augmented_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of an augmented crop: the processor's output (its crop, or the fixed size of a processor without one,
        as SigLIP's), else the image's own."""
        return self.crop_size or self.resize_to or (height, width)

    def _crop_one(self, image: torch.Tensor, box: "CropBox") -> torch.Tensor:
        """One image's crop: its square window resized to the crop size (bicubic, antialiased), maybe flipped."""
        square = image[None, :, box.top : box.top + box.side, box.left : box.left + box.side]
        target = self._augmented_size(*image.shape[-2:])
        if square.device.type != "cpu":
            square = square.float()
        crop = F.interpolate(square, size=target, mode="bicubic", antialias=True, align_corners=False)[0]
        crop = crop if crop.dtype == torch.uint8 else crop.clamp_(0, 255)
        return crop.flip(-1) if box.flip else crop

    def _crop_batch(self, batch: torch.Tensor, boxes: list["CropBox"]) -> torch.Tensor:
        """Every image's crop at once: `W_y X W_x^T` with per-sample resampling matrices (float32)."""
        height, width = batch.shape[-2:]
        out_h, out_w = self._augmented_size(height, width)
        device = batch.device
        tops, lefts, sides = (torch.tensor([getattr(b, name) for b in boxes], device=device) for name in ("top", "left", "side"))
        flips = torch.tensor([b.flip for b in boxes], device=device)
        rows = resampling_matrices(tops, sides, height, out_h)
        columns = resampling_matrices(lefts, sides, width, out_w, flip=flips)
        resized = torch.matmul(rows[:, None], torch.matmul(batch.float(), columns.transpose(1, 2)[:, None]))
        return resized.clamp_(0, 255)

    def _normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """`x * rescale_factor`, then `(x - mean) / std`, as one multiply-add per channel."""
        scale = torch.full((3,), self.rescale_factor if self.rescale_factor is not None else 1.0, dtype=torch.float32)
        shift = torch.zeros(3)
        if self.image_mean is not None and self.image_std is not None:
            mean, std = torch.tensor(self.image_mean, dtype=torch.float32), torch.tensor(self.image_std, dtype=torch.float32)
            scale, shift = scale / std, -mean / std
        scale, shift = scale.to(batch.device).view(1, -1, 1, 1), shift.to(batch.device).view(1, -1, 1, 1)
        return torch.addcmul(shift, batch.float(), scale)


@dataclass(frozen=True)
class CropBox:
    """A sample's augmentation: the square window `[top, top + side) x [left, left + side)` and the flip."""

    left: int
    top: int
    side: int
    flip: bool


_BICUBIC_A = -0.5  # the antialiased (PIL-style) bicubic kernel's a, as torch and PIL use it


def _bicubic(x: torch.Tensor) -> torch.Tensor:
    x = x.abs()
    near = ((_BICUBIC_A + 2) * x - (_BICUBIC_A + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * _BICUBIC_A
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resampling_matrices(starts: torch.Tensor, lengths: torch.Tensor, in_size: int, out_size: int,
                        flip: torch.Tensor | None = None) -> torch.Tensor:
    r"""For each sample s, the `(out_size, in_size)` matrix that resizes the window `[starts[s], starts[s] +
    lengths[s])` of a line of `in_size` pixels to `out_size` pixels as `F.interpolate(mode="bicubic",
    antialias=True, align_corners=False)` does (rows reversed where `flip[s]`):

    .. math::
        W_{ij} = \frac{k\big((j - s_0 - c_i + \tfrac12)/\sigma\big)}{\sum_{j'} k\big((j' - s_0 - c_i + \tfrac12)/\sigma\big)},
        \qquad c_i = r\,(i + \tfrac12),\ r = \frac{L}{\text{out}},\ \sigma = \max(r, 1)

    over the taps j within the support `2 sigma` of the centre `c_i` (clipped to the window), k the bicubic kernel
    with a = -0.5, as torch computes its antialiasing weights.

    Returns:
        `torch.Tensor` of shape `(b, out_size, in_size)`, float32, on `starts`' device.
    """
    device = starts.device
    length = lengths.to(torch.float64)
    ratio = length / out_size
    support = torch.where(ratio >= 1, 2.0 * ratio, torch.full_like(ratio, 2.0))
    sigma = torch.clamp(ratio, min=1.0)
    centers = ratio[:, None] * (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5)
    first = (centers - support[:, None] + 0.5).trunc().clamp(min=0)  # as torch's int64 cast, then max with 0
    last = torch.minimum((centers + support[:, None] + 0.5).trunc(), length[:, None])
    # enough taps for the widest window (no window is wider than the line): a bound known without reading the device
    count = int(2 * 2.0 * max(1.0, in_size / out_size)) + 3
    taps = first[..., None] + torch.arange(count, device=device, dtype=torch.float64)
    weights = torch.where(taps < last[..., None], _bicubic((taps - centers[..., None] + 0.5) / sigma[:, None, None]),
                          torch.zeros((), dtype=torch.float64, device=device))
    weights = weights / weights.sum(-1, keepdim=True)
    columns = (taps + starts[:, None, None].to(torch.float64)).clamp(max=in_size - 1).long()
    matrices = torch.zeros(starts.numel(), out_size, in_size, dtype=torch.float64, device=device)
    matrices.scatter_add_(2, columns, weights)
    if flip is not None:
        matrices = torch.where(flip[:, None, None], matrices.flip(1), matrices)
    return matrices.float()


def _center_crop(batch: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """transformers' centre crop: top-left at floor((H - h) / 2), zero padding where the image is smaller."""
    orig_h, orig_w = batch.shape[-2:]
    pad_h, pad_w = max(0, height - orig_h), max(0, width - orig_w)
    if pad_h or pad_w:
        top_pad, left_pad = -(-pad_h // 2), -(-pad_w // 2)
        batch = F.pad(batch, (left_pad, pad_w - left_pad, top_pad, pad_h - top_pad))
        orig_h, orig_w = batch.shape[-2:]
    top, left = (orig_h - height) // 2, (orig_w - width) // 2
    return batch[..., top : top + height, left : left + width]


def draw_crop_box(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float] = (0.7, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_probability: float = 0.5) -> "CropBox":
    """The training augmentation of both image paths: a random resized crop (area share in `scale`, aspect in
    `ratio`, log-uniform; the whole image after 10 misses, as torchvision does), its centred square (what
    resizing the crop's shortest edge and centre-cropping it keeps), and a horizontal flip with probability
    `flip_probability`, all drawn from `rng`.

    Args:
        rng (`numpy.random.Generator`): the draws' source (the tensor path seeds one per sample with `(seed, epoch,
            node)`; the processor path takes it from Python's seeded RNG).
        height (`int`): the image's height in pixels.
        width (`int`): the image's width in pixels.
        scale (`tuple[float, float]`, *optional*, defaults to `(0.7, 1.0)`): the crop's share of the image's area.
        ratio (`tuple[float, float]`, *optional*, defaults to `(3/4, 4/3)`): the crop's aspect ratio range.
        flip_probability (`float`, *optional*, defaults to 0.5): the chance of a horizontal flip.

    Returns:
        CropBox: `left`, `top`, `side` of the square in pixels, and `flip`.
    """
    left, top, side = _random_square(rng, height, width, scale, ratio)
    return CropBox(left, top, side, bool(rng.random() < flip_probability))


def _random_square(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
                   ratio: tuple[float, float]) -> tuple[int, int, int]:
    """`(left, top, side)` of the centred square of a random crop (see [`draw_crop_box`])."""
    crop_w, crop_h, left, top = width, height, 0, 0
    for _ in range(10):
        area = height * width * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w, h = round(np.sqrt(area * aspect)), round(np.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            crop_w, crop_h = w, h
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            break
    side = min(crop_w, crop_h)
    return left + (crop_w - side) // 2, top + (crop_h - side) // 2, side


__all__ = ["CropBox", "PixelPipeline", "decode_image", "draw_crop_box", "resampling_matrices"]
