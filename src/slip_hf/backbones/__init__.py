"""Which dual encoder SLIP wraps: one adapter per family, chosen by the checkpoint's `model_type`.

| family | `model_type` | `transformers` class | base loss | text padding |
|---|---|---|---|---|
| `clip` | `clip`, `metaclip_2` | `CLIPModel`, `MetaClip2Model` | InfoNCE | any (end-token pooling) |
| `siglip` | `siglip` (SigLIP, fixed-resolution SigLIP 2) | `SiglipModel` | pairwise sigmoid + bias | `max_length` (64) |

Adding a family: a file here with its [`DualEncoderBackbone`] subclass, and one line in `BACKBONES`.
"""

from typing import Any

from .base import DualEncoderBackbone
from .clip import ClipBackbone
from .siglip import SiglipBackbone

BACKBONES: dict[str, DualEncoderBackbone] = {backbone.family: backbone for backbone in (ClipBackbone(), SiglipBackbone())}
"""Every supported family by name."""

REFUSED_MODEL_TYPES = {
    "siglip2": "the NaFlex SigLIP 2 checkpoints (Siglip2Model: variable resolution with pixel_attention_mask and "
               "spatial_shapes) are not supported; use a fixed-resolution SigLIP 2 such as "
               "google/siglip2-base-patch16-224, -256, -384 or -512 (model_type 'siglip')",
}


def supported_model_types() -> list[str]:
    """Every `model_type` some adapter takes."""
    return sorted(model_type for backbone in BACKBONES.values() for model_type in backbone.model_classes)


def backbone_for_model_type(model_type: str) -> DualEncoderBackbone:
    """The adapter of `model_type`; a one-line `ValueError` that names the supported ones for any other.

    Args:
        model_type (`str`): a `transformers` config's `model_type` (`"clip"`, `"metaclip_2"`, `"siglip"`, ...).

    Returns:
        [`DualEncoderBackbone`]: the family's adapter.

    Raises:
        ValueError: for a model type without an adapter (the message lists the supported ones), and for the NaFlex
            SigLIP 2 checkpoints (it names the fixed-resolution ones to use).
    """
    for backbone in BACKBONES.values():
        if model_type in backbone.model_classes:
            return backbone
    if model_type in REFUSED_MODEL_TYPES:
        raise ValueError(f"model type {model_type!r}: {REFUSED_MODEL_TYPES[model_type]}.")
    families = "; ".join(f"{name}: {', '.join(backbone.model_classes.values())}" for name, backbone in BACKBONES.items())
    raise ValueError(f"model type {model_type!r} is not a dual encoder slip_hf supports (model types "
                     f"{', '.join(supported_model_types())}; families {families}).")


def backbone_for_config(config: Any) -> DualEncoderBackbone:
    """The adapter of a dual encoder's config (a `PreTrainedConfig` with its `model_type`)."""
    return backbone_for_model_type(config.model_type)


def dual_encoder_config(config: Any) -> Any:
    """The dual encoder's own config: a SLIP config's `clip_config`, any other config itself."""
    return config.clip_config if config.model_type == "slip" else config


def text_tokenizer_kwargs(config: Any, max_length: int | None = None) -> dict[str, Any]:
    """The `tokenizer(texts, **kwargs)` arguments that give the vectors a model was trained with: padding to
    `max_length` for SigLIP, to the longest text for CLIP (see [`DualEncoderBackbone.tokenizer_kwargs`]).

    Args:
        config (`PreTrainedConfig`): a SLIP model's config, or a plain dual encoder's.
        max_length (`int`, *optional*): tokens per text; default (and at most) the text tower's positions.

    Returns:
        `dict`: `padding`, `truncation` and `max_length`, e.g. `{"padding": "max_length", "truncation": True,
        "max_length": 64}` for SigLIP.

    Example:

    ```python
    tokens = tokenizer(["usb-c charger"], return_tensors="pt", **text_tokenizer_kwargs(model.config))
    ```
    """
    encoder_config = dual_encoder_config(config)
    return backbone_for_config(encoder_config).tokenizer_kwargs(encoder_config, max_length)


__all__ = [
    "BACKBONES",
    "ClipBackbone",
    "DualEncoderBackbone",
    "SiglipBackbone",
    "backbone_for_config",
    "backbone_for_model_type",
    "dual_encoder_config",
    "supported_model_types",
    "text_tokenizer_kwargs",
]
