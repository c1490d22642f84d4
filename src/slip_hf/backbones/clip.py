"""CLIP's family: OpenAI's CLIP (`CLIPModel`) and MetaCLIP 2 (`MetaClip2Model`), which shares its layout.

Both train with the symmetric InfoNCE loss and a learned temperature, project each tower's pooled state with a
linear map (`visual_projection`, `text_projection`), and pool the text at its end token, so a text gives the same
vector whatever padding follows it.
"""

from typing import ClassVar

import torch
from torch import nn

from .base import DualEncoderBackbone


class ClipBackbone(DualEncoderBackbone):
    """CLIP and MetaCLIP 2: InfoNCE, linear projections, end-token pooling."""

    family = "clip"
    model_classes: ClassVar[dict[str, str]] = {"clip": "CLIPModel", "metaclip_2": "MetaClip2Model"}
    processor_class = "CLIPProcessor"
    base_loss = "infonce"
    pads_to_max_length = False
    no_split_modules = ("CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings",
                        "MetaClip2TextEmbeddings", "MetaClip2EncoderLayer", "MetaClip2VisionEmbeddings")
    text_prefixes = ("text_model.", "text_projection.")
    bottom_prefixes = ("text_model.embeddings.", "vision_model.embeddings.", "vision_model.pre_layrnorm.")
    supports_token_embeddings = True

    def embed_dim(self, config) -> int:
        return config.projection_dim

    def vision_tokens(self, model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vision = model.vision_model(pixel_values=pixel_values)
        return model.visual_projection(vision.pooler_output), vision.last_hidden_state[:, 1:]

    def text_tokens(self, model, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        text = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return model.text_projection(text.pooler_output), text.last_hidden_state

    def project_patch_tokens(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return model.visual_projection(model.vision_model.post_layernorm(tokens))

    def project_text_tokens(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return model.text_projection(tokens)


__all__ = ["ClipBackbone"]
