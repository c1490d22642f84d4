"""SigLIP's family: SigLIP (`SiglipModel`) and the fixed-resolution SigLIP 2 checkpoints, which transformers also
loads as `SiglipModel` (`model_type: "siglip"`, e.g. `google/siglip2-base-patch16-224`).

What differs from CLIP, and lives here:

* the loss is the pairwise sigmoid of Zhai et al. (2023) with a learned `logit_scale` *and* `logit_bias`;
* the text tower has no causal mask and pools the **last position**, so it was trained, and must be fed, with
  texts padded to `max_length` (64): padding to the longest text of a batch gives other vectors;
* the towers end in their own heads (an attention-pooling head for the image, a linear head for the text), with no
  projection of single tokens into the shared space: StructXLIP's region/chunk loss, which needs one, is refused.

The NaFlex SigLIP 2 checkpoints (`Siglip2Model`, variable resolution with `pixel_attention_mask` and
`spatial_shapes`) are not supported: `slip_hf.backbones` refuses them in one line and names these ones.
"""

from typing import ClassVar

import torch
from torch import nn

from .base import DualEncoderBackbone


class SiglipBackbone(DualEncoderBackbone):
    """SigLIP and fixed-resolution SigLIP 2: pairwise sigmoid loss with a bias, texts padded to `max_length`."""

    family = "siglip"
    model_classes: ClassVar[dict[str, str]] = {"siglip": "SiglipModel"}
    processor_class = "SiglipProcessor"
    base_loss = "sigmoid"
    pads_to_max_length = True
    no_split_modules = ("SiglipTextEmbeddings", "SiglipEncoderLayer", "SiglipVisionEmbeddings",
                        "SiglipMultiheadAttentionPoolingHead")
    text_prefixes = ("text_model.",)

    def embed_dim(self, config) -> int:
        if config.text_config.projection_size != config.vision_config.hidden_size:
            raise ValueError(f"this SigLIP's text head gives {config.text_config.projection_size} dims and its image "
                             f"tower {config.vision_config.hidden_size}: they must agree.")
        return config.vision_config.hidden_size

    def logit_bias(self, model: nn.Module) -> torch.Tensor:
        return model.logit_bias

    def vision_tokens(self, model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vision = model.vision_model(pixel_values=pixel_values)
        return vision.pooler_output, vision.last_hidden_state  # SigLIP's vision tower has no class token

    def text_tokens(self, model, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        text = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return text.pooler_output, text.last_hidden_state


__all__ = ["SiglipBackbone"]
