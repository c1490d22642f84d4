"""Step 7 of the graph build: CLIP-T scores (Table 1 of the SLIP paper).

CLIP-T of an image-text pair is `100 * cos(E_image, E_text)` under a CLIP checkpoint (the paper does not name
one; `openai/clip-vit-base-patch16`, its training backbone, is the default). It is computed for the title and
for the description of every node; an empty description gets NaN. The scores go into the dataset
(`clip_t_title`, `clip_t_description`), their mean and standard deviation into the card, and an optional
threshold drops poorly aligned nodes.
"""

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..embedding import encode_images, encode_texts

DEFAULT_CLIP_T_MODEL = "openai/clip-vit-base-patch16"


def load_clip(name_or_path: str | os.PathLike, device: str | torch.device | None = None):
    """`(model, image_processor, tokenizer)` of a CLIP checkpoint (hub id or local directory)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = CLIPModel.from_pretrained(name_or_path).to(device).eval()
    return model, AutoImageProcessor.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path)


def clip_t_scores(
    model_name_or_path: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    titles: Sequence[str],
    descriptions: Sequence[str],
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """CLIP-T of every (image, title) and (image, description) pair.

    Returns:
        `(title_scores, description_scores)`, float32 arrays of shape `(N,)`; NaN where the description is
        empty.
    """
    if not len(image_paths) == len(titles) == len(descriptions):
        raise ValueError("image_paths, titles and descriptions must have the same length.")
    model, image_processor, tokenizer = load_clip(model_name_or_path, device)
    max_length = model.config.text_config.max_position_embeddings
    images = encode_images(model, image_processor, list(image_paths), batch_size, desc="CLIP-T images")
    title_embeds = encode_texts(model, tokenizer, list(titles), batch_size, max_length, desc="CLIP-T titles")
    has_description = np.array([bool(text and text.strip()) for text in descriptions])
    description_scores = np.full(len(descriptions), np.nan, dtype=np.float32)
    if has_description.any():
        described = [text for text, keep in zip(descriptions, has_description) if keep]
        description_embeds = encode_texts(model, tokenizer, described, batch_size, max_length, desc="CLIP-T descriptions")
        description_scores[has_description] = 100 * (images[torch.from_numpy(has_description)] * description_embeds).sum(-1).numpy()
    title_scores = (100 * (images * title_embeds).sum(-1)).numpy().astype(np.float32)
    return title_scores, description_scores


__all__ = ["DEFAULT_CLIP_T_MODEL", "clip_t_scores", "load_clip"]
