"""Batched, l2-normalised image and text embeddings from any model with CLIP's feature API.

Works with [`SlipModel`] and the dual encoders it wraps (`CLIPModel`, `MetaClip2Model`, `SiglipModel`) alike: all
have `get_image_features(pixel_values)` and `get_text_features(input_ids, attention_mask)` whose `pooler_output` is
the embedding (transformers 5.x). Texts are tokenized by the backbone's rule (`slip_hf.backbones`): SigLIP's padded
to `max_length`, as it was trained. Used by the dataset builder (CLIP-T scores) and by the evaluation (retrieval,
zero-shot, plots); inference never needs the graph.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .paths import require_folder
from .pixels import decode_image
from .viewed_image import open_image, viewed_rgb


def _features(output: Any) -> torch.Tensor:
    """`pooler_output` of a transformers 5 feature output, or the tensor older versions returned."""
    return output.pooler_output if hasattr(output, "pooler_output") else output


def load_dual_encoder(model_name_or_path: str):
    """`(model, image_processor, tokenizer)` of a SLIP checkpoint or a plain dual encoder of a supported family
    (CLIP, MetaCLIP 2, SigLIP, SigLIP 2; folder or Hub id)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

    from .backbones import backbone_for_config
    from .modeling_slip import SlipModel

    require_folder(model_name_or_path, "model")
    config = AutoConfig.from_pretrained(model_name_or_path)
    model_class = SlipModel if config.model_type == "slip" else backbone_for_config(config).model_class(config.model_type)
    return (model_class.from_pretrained(model_name_or_path), AutoImageProcessor.from_pretrained(model_name_or_path),
            AutoTokenizer.from_pretrained(model_name_or_path))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


class ImageBatch:
    """`collate_fn` of the image loader: load a batch of images and preprocess them, in the data workers.

    With an image processor: `pixel_values` `(b, 3, h, w)`. Without one (the tensor image path): the decoded
    `(3, H, W)` uint8 tensors, which a [`PixelPipeline`] preprocesses on the model's device.
    """

    def __init__(self, load_image: Callable[[Any], Image.Image], image_processor: Any | None):
        self.load_image, self.image_processor = load_image, image_processor

    def __call__(self, items: list[Any]) -> torch.Tensor | list[torch.Tensor]:
        images = [self.load_image(item) for item in items]
        if self.image_processor is None:  # decode_image turns the image upright and into RGB itself
            return [decode_image(image) for image in images]
        return self.image_processor(images=[viewed_rgb(image) for image in images], return_tensors="pt")["pixel_values"]


@torch.no_grad()
def encode_images(
    model: torch.nn.Module,
    image_processor: Any,
    images: Sequence[Any],
    batch_size: int = 64,
    load_image: Callable[[Any], Image.Image] | None = None,
    desc: str = "image embeddings",
    pixel_pipeline: Any = None,
    num_workers: int = 0,
) -> torch.Tensor:
    """Embed images.

    Args:
        model: exposes `get_image_features(pixel_values=...)`.
        image_processor: the model's image processor.
        images: PIL images, or anything `load_image` turns into one (e.g. file paths).
        batch_size: images per forward pass.
        load_image: maps an element of `images` to a PIL image; default [`open_image`]. With `num_workers > 0` it
            runs in the workers, so it must be picklable under the `spawn` start method (no lambda).
        pixel_pipeline: a [`PixelPipeline`] (the tensor image path): decode to uint8 and preprocess batched on
            the model's device instead of with `image_processor`.
        num_workers: data-loader processes that load and preprocess (or decode) the images while the model
            embeds the previous batch.

    Returns:
        `torch.FloatTensor` of shape `(N, d)` on the CPU, l2-normalised rows.
    """
    device = model_device(model)
    collate = ImageBatch(load_image or open_image, None if pixel_pipeline is not None else image_processor)
    loader = DataLoader(images, batch_size=batch_size, collate_fn=collate, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    chunks = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=len(images) <= batch_size):
        pixel_values = pixel_pipeline(batch, device=device) if pixel_pipeline is not None else batch.to(device, non_blocking=True)
        chunks.append(F.normalize(_features(model.get_image_features(pixel_values=pixel_values)).float(), dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 256,
    max_length: int | None = None,
    desc: str = "text embeddings",
) -> torch.Tensor:
    """Embed texts, tokenized by the backbone's rule (`slip_hf.backbones.text_tokenizer_kwargs`): truncated to
    `max_length` tokens (default: the text tower's positions), and for SigLIP padded to that length, as it was
    trained; a SigLIP text padded to the longest text of its batch would give another vector.

    Args:
        model: a [`SlipModel`] or a plain dual encoder (`get_text_features`, and a `config`).
        tokenizer: the model's tokenizer.
        texts: the strings.
        batch_size: texts per forward pass.
        max_length (`int`, *optional*): tokens per text; default the text tower's positions.
        desc: the progress bar's label.

    Returns:
        `torch.FloatTensor` of shape `(N, d)` on the CPU, l2-normalised rows.
    """
    from .backbones import text_tokenizer_kwargs

    device = model_device(model)
    tokenizer_kwargs = text_tokenizer_kwargs(model.config, max_length)
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False, disable=len(texts) <= batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", **tokenizer_kwargs).to(device)
        features = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        chunks.append(F.normalize(_features(features).float(), dim=-1).cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


__all__ = ["ImageBatch", "encode_images", "encode_texts", "load_dual_encoder", "model_device"]
