"""StructXLIP's inputs: Canny edge maps of the (augmented) training images, structure-centric captions (the
title without its appearance words) and the caption's adaptive word windows (chunks).

Edge maps are computed with `kornia.filters.canny` on the collated `pixel_values`, batched in torch: after the
augmentation, so an edge map always matches the crop and flip its image got (a cached OpenCV pass over the
stored images could not), and on the device the batch lives on. `benchmarks/step_overhead.py` measures the
cost. Edges are drawn black on white (a line drawing) and normalised like the images, so the vision tower
reads them as ordinary images, as the reference does with its structure maps.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .base import BatchPreparer

STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on", "or", "that",
    "the", "to", "with", "x",
})


@dataclass(frozen=True)
class AppearanceVocabulary:
    """Words and phrases that describe how a thing looks rather than what it is, by kind."""

    colors: tuple[str, ...]
    materials: tuple[str, ...]
    textures: tuple[str, ...]


PRODUCT_APPEARANCE_VOCABULARY = AppearanceVocabulary(
    colors=(
        "red", "blue", "green", "yellow", "black", "white", "gray", "grey", "orange", "purple", "pink", "brown",
        "beige", "cyan", "magenta", "turquoise", "teal", "maroon", "navy", "violet", "indigo", "gold", "golden",
        "silver", "ivory", "cream", "olive", "tan", "peach", "mint", "burgundy", "crimson", "scarlet", "lavender",
        "lilac", "azure", "aqua", "coral", "khaki", "charcoal", "bronze", "copper", "multicolor", "multicolour",
        "colorful", "rainbow",
        # product-domain colour names
        "rose gold", "space gray", "space grey", "midnight", "graphite", "champagne", "gunmetal", "jet black",
        "matte black", "starlight", "sierra blue", "pacific blue", "alpine green", "deep purple", "titanium",
        "light blue", "dark blue", "navy blue", "sky blue", "light green", "dark green", "light gray", "dark gray",
        "light grey", "dark grey", "hot pink", "light pink", "off white", "wine red",
    ),
    materials=(
        "leather", "faux leather", "pu leather", "vegan leather", "silicone", "tpu", "plastic", "polycarbonate",
        "metal", "aluminum", "aluminium", "stainless steel", "steel", "alloy", "zinc alloy", "carbon fiber",
        "carbon fibre", "tempered glass", "glass", "wood", "wooden", "bamboo", "rubber", "nylon", "polyester",
        "cotton", "canvas", "fabric", "mesh", "microfiber", "neoprene", "ceramic", "acrylic", "kevlar", "felt",
        "suede", "velvet", "foam",
    ),
    textures=(  # not "clear": "clear sound", "clear view" describe function, not looks
        "glossy", "matte", "shiny", "brushed", "textured", "frosted", "transparent", "translucent",
        "smooth", "soft touch", "rugged", "striped", "plaid", "checkered", "polka dot", "floral", "camo",
        "camouflage", "marble", "glitter", "sparkle", "holographic", "iridescent", "metallic", "gradient",
    ),
)

_SEPARATORS = r"[\s,;:/&|+\-–—]"


def _phrase_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive pattern for whole-word phrases, longest first; spaces match spaces or hyphens."""
    terms = sorted({t.strip().lower() for t in terms if t and t.strip()}, key=lambda t: (-len(t), t))
    if not terms:
        return re.compile(r"(?!x)x")
    alternatives = [re.escape(t).replace(r"\ ", r"[\s-]+") for t in terms]
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", flags=re.IGNORECASE)


def _tidy(text: str) -> str:
    """Whitespace, empty brackets and separators left behind by removed words."""
    previous = None
    while previous != text:
        previous = text
        text = re.sub(r"\(\s*[,/&\-]*\s*\)|\[\s*[,/&\-]*\s*\]", " ", text)
        text = re.sub(r"\s+", " ", text)
        text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
        text = re.sub(r"([,;/&])(\s*[,;/&])+", r"\1", text)  # "a, , b" -> "a, b"
        text = re.sub(r"(?:\s|^)(?:[-–—/&]\s*)+(?=,|$)", "", text)  # a dangling " -" or " /" before a comma or the end
        text = re.sub(rf"^{_SEPARATORS}+|{_SEPARATORS}+$", "", text)
        text = re.sub(r"\s+(?:and|or|with|in|for|of)$|^(?:and|or|with|in|of)\s+", "", text, flags=re.IGNORECASE)
        text = text.strip()
    return text


class StructureCaptionFilter:
    """Removes appearance words (colours, materials, textures) from a caption, keeping what the edges show.

    When fewer than `min_content_words` non-stopwords remain, the original caption is kept (as the reference
    does), so a caption that *is* a colour ("Black") never becomes empty.

    Args:
        remove: which kinds of [`AppearanceVocabulary`] to remove.
        extra_terms: further words or phrases to remove (a shop's own colour names, say).
        vocabulary: the vocabulary; default: [`PRODUCT_APPEARANCE_VOCABULARY`].
        min_content_words: minimum non-stopwords of a filtered caption.

    Example:
        >>> StructureCaptionFilter()("Rose Gold Aluminum Phone Stand - Black")
        'Phone Stand'
    """

    def __init__(
        self,
        remove: Sequence[str] = ("colors", "materials", "textures"),
        extra_terms: Sequence[str] = (),
        vocabulary: AppearanceVocabulary = PRODUCT_APPEARANCE_VOCABULARY,
        min_content_words: int = 2,
    ):
        unknown = set(remove) - {"colors", "materials", "textures"}
        if unknown:
            raise ValueError(f"unknown appearance kinds {sorted(unknown)}: choose from colors, materials, textures.")
        terms = [term for kind in remove for term in getattr(vocabulary, kind)] + list(extra_terms)
        self.pattern = _phrase_pattern(terms)
        self.min_content_words = max(1, int(min_content_words))

    def __call__(self, text: str | None) -> str:
        original = _tidy(text or "")
        filtered = _tidy(self.pattern.sub(" ", original))
        content = [w for w in re.findall(r"\w+", filtered.lower()) if w not in STOPWORDS]
        return filtered if len(content) >= self.min_content_words else original


def adaptive_chunk_spans(
    text: str, offsets: Sequence[tuple[int, int]], base_window: int = 3, stride: int = 1, max_chunks: int = 16
) -> list[tuple[int, int]]:
    """Token spans `[start, end)` of sliding word windows over `text`, as in StructXLIP: within each clause
    (split at `.,;!?`), windows of 2 words (clauses of <= 4 words), `base_window` (<= 10), +1 (<= 20), +2 (<= 40)
    or +3 words, moved by `stride` words; a clause shorter than its window gives one window over all of it.

    Args:
        text: the caption.
        offsets: `(char start, char end)` of every token (a fast tokenizer's `offset_mapping`; special tokens
            have empty spans).
        base_window, stride, max_chunks: window width, step and cap.
    """
    words = list(re.finditer(r"\w+", text))
    if not words:
        return []

    def token_of(char: int) -> int | None:
        for index, (start, end) in enumerate(offsets):
            if start <= char < end:
                return index
        return None

    bounds, begin = [], 0
    for match in re.finditer(r"[.,;!?]+", text):
        bounds.append((begin, match.end()))
        begin = match.end()
    bounds.append((begin, len(text)))
    spans: list[tuple[int, int]] = []
    pointer = 0
    for _, clause_end in bounds:
        first = pointer
        while pointer < len(words) and words[pointer].start() < clause_end:
            pointer += 1
        count = pointer - first
        if count <= 0:
            continue
        window = 2 if count <= 4 else base_window + (0 if count <= 10 else 1 if count <= 20 else 2 if count <= 40 else 3)
        window = min(window, count)
        for i in range(first, pointer - window + 1, stride):
            start, end = token_of(words[i].start()), token_of(words[i + window - 1].end() - 1)
            if start is not None and end is not None and end >= start:
                spans.append((start, end + 1))
            if len(spans) >= max_chunks:
                return spans
    return spans


def render_edge_maps(
    pixel_values: torch.Tensor,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    low_threshold: float = 0.1,
    high_threshold: float = 0.2,
    num_regions: int = 2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Canny edge maps of normalised images, drawn black on white and normalised the same way.

    Args:
        pixel_values (`torch.Tensor` of shape `(b, 3, H, W)`): images normalised with `image_mean`/`image_std`.
        image_mean, image_std: the image processor's normalisation.
        low_threshold, high_threshold: Canny's hysteresis thresholds on kornia's gradient magnitude
            (images in [0, 1]).
        num_regions: R of the R x R grid of regions.

    Returns:
        `(edge_pixel_values (b, 3, H, W), edge_fraction (b,), region_edge_fraction (b, R*R))`.
    """
    try:  # optional outside training (remote code loads the model without it)
        from kornia.filters import canny
    except ImportError as error:
        raise ImportError("StructXLIP's edge maps need kornia: pip install kornia (slip_hf installs it).") from error

    mean = torch.tensor(image_mean, dtype=torch.float32, device=pixel_values.device).view(1, -1, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32, device=pixel_values.device).view(1, -1, 1, 1)
    images = (pixel_values.float() * std + mean).clamp(0, 1)
    _, edges = canny(images, low_threshold=low_threshold, high_threshold=high_threshold)
    drawing = (1.0 - edges).expand(-1, 3, -1, -1)
    edge_pixel_values = ((drawing - mean) / std).to(pixel_values.dtype)
    region_fraction = F.adaptive_avg_pool2d(edges, num_regions).flatten(1)
    return edge_pixel_values, edges.flatten(1).mean(dim=1), region_fraction


class StructXlipBatchPreparer(BatchPreparer):
    """Adds StructXLIP's fields to a collated batch (see `StructXlipObjective.batch_fields`):

    * `edge_pixel_values` `(b, 3, H, W)`, `edge_mask` `(b,)` (edge fraction >= `structxlip_min_edge_fraction`)
      and `edge_region_mask` `(b, R*R)` (region edge fraction >= `structxlip_min_region_edge_fraction`);
    * `structure_input_ids` / `structure_attention_mask` `(b, L)`: the filtered captions, tokenized like the
      batch's texts; `structure_text_mask` `(b,)`: the filtered caption is not empty;
    * `structure_chunk_mask` `(b, C, L)`: token membership of each caption's chunks (C =
      `structxlip_max_chunks`; unused chunk rows are all False).
    """

    def __init__(self, config, tokenizer, image_processor):
        super().__init__(config, tokenizer, image_processor)
        if tokenizer is None or image_processor is None:
            raise ValueError("StructXLIP objectives need the tokenizer and the image processor in the data collator.")
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("StructXLIP's caption chunks need a fast tokenizer (offset mappings).")
        self.filter = StructureCaptionFilter(
            config.structxlip_removed_kinds, config.structxlip_extra_terms or (), min_content_words=config.structxlip_min_content_words
        )

    needs_pixels = True

    def __call__(self, batch: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        config = self.config
        texts = [str(row["text"]) for row in rows]
        edge_pixels, edge_fraction, region_fraction = render_edge_maps(
            batch["pixel_values"], self.image_processor.image_mean, self.image_processor.image_std,
            config.structxlip_canny_low, config.structxlip_canny_high, config.structxlip_num_regions,
        )
        batch["edge_pixel_values"] = edge_pixels
        batch["edge_mask"] = edge_fraction >= config.structxlip_min_edge_fraction
        batch["edge_region_mask"] = region_fraction >= config.structxlip_min_region_edge_fraction
        filtered = [self.filter(text) for text in texts]
        length = batch["input_ids"].size(1)
        encoded = self.tokenizer(
            filtered, padding="max_length", truncation=True, max_length=length, return_offsets_mapping=True,
            return_tensors="pt",
        )
        chunk_mask = torch.zeros(len(texts), config.structxlip_max_chunks, length, dtype=torch.bool)
        for row, (text, offsets) in enumerate(zip(filtered, encoded["offset_mapping"].tolist())):
            spans = adaptive_chunk_spans(text, offsets, config.structxlip_chunk_window, max_chunks=config.structxlip_max_chunks)
            for chunk, (start, end) in enumerate(spans):
                chunk_mask[row, chunk, start:end] = True
        batch["structure_input_ids"] = encoded["input_ids"]
        batch["structure_attention_mask"] = encoded["attention_mask"]
        batch["structure_text_mask"] = torch.tensor([bool(t.strip()) for t in filtered])
        batch["structure_chunk_mask"] = chunk_mask


__all__ = [
    "PRODUCT_APPEARANCE_VOCABULARY",
    "AppearanceVocabulary",
    "StructXlipBatchPreparer",
    "StructureCaptionFilter",
    "adaptive_chunk_spans",
    "render_edge_maps",
]
