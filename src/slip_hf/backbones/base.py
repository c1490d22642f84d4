r"""The interface of a backbone adapter: what SLIP needs to know about one family of image–text dual encoders.

SLIP's idea does not depend on the dual encoder: the graph path reads the two towers' embeddings, and the
structural and category losses sit on top of whatever image–text loss the encoder was trained with. What
*does* differ between families lives in one small adapter each (one file per family in this folder):

* how the model is built and loaded (its `transformers` class, by `model_type`);
* its image and text features, un-normalised, `(b, d)`;
* its base loss (`"infonce"`: CLIP's symmetric softmax; `"sigmoid"`: SigLIP's pairwise sigmoid with a learned
  bias) and the parameters that hold its temperature and bias;
* its layer names, for discriminative learning rates;
* the rule its text was trained with (padding to `max_length`, or any padding);
* the class an export goes back to, and its processor class.

The image normalisation and size come from the family's image processor (`PixelPipeline.from_image_processor`),
which every checkpoint ships, so the adapter does not repeat them.
"""

import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import torch
from torch import nn


class DualEncoderBackbone(ABC):
    """One family of dual encoders. Adapters are stateless: every method takes the wrapped model or its config.

    Class attributes:
        family: the name users write (`"clip"`, `"siglip"`).
        model_classes: `model_type` -> name of the `transformers` class that holds it (e.g. `"clip"` ->
            `"CLIPModel"`, `"metaclip_2"` -> `"MetaClip2Model"`).
        processor_class: name of the family's `transformers` processor class (image processor + tokenizer).
        base_loss: `"infonce"` or `"sigmoid"`.
        pads_to_max_length: whether the text tower was trained on texts padded to its full length (SigLIP pools
            the last position, so another padding gives other vectors).
    """

    family: ClassVar[str]
    model_classes: ClassVar[dict[str, str]]
    processor_class: ClassVar[str]
    base_loss: ClassVar[Literal["infonce", "sigmoid"]]
    pads_to_max_length: ClassVar[bool]
    no_split_modules: ClassVar[tuple[str, ...]] = ()

    def model_class(self, model_type: str) -> type:
        """The `transformers` class of `model_type` (one of `model_classes`)."""
        import transformers

        return getattr(transformers, self.model_classes[model_type])

    # ---- features ------------------------------------------------------------------------------------------
    def image_features(self, model: nn.Module, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Un-normalised image embeddings `(b, d)`: the family's own `get_image_features(...).pooler_output`."""
        return model.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).pooler_output

    def text_features(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Un-normalised text embeddings `(b, d)`: the family's own `get_text_features(...).pooler_output`."""
        return model.get_text_features(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).pooler_output

    @abstractmethod
    def embed_dim(self, config: Any) -> int:
        """Width d of the shared image–text space."""

    def text_positions(self, config: Any) -> int:
        """Tokens the text tower has positions for."""
        return config.text_config.max_position_embeddings

    def token_embedding(self, model: nn.Module) -> nn.Embedding:
        """The text tower's token table (Structure-CLIP's knowledge encoder shares it)."""
        return model.text_model.embeddings.token_embedding

    # ---- loss parameters -----------------------------------------------------------------------------------
    def logit_scale(self, model: nn.Module) -> torch.Tensor:
        """The learned log-temperature (exponentiated by the loss)."""
        return model.logit_scale

    def logit_bias(self, model: nn.Module) -> torch.Tensor | None:
        """The learned logit bias of a sigmoid loss; `None` for InfoNCE."""
        return None

    # ---- text ----------------------------------------------------------------------------------------------
    def tokenizer_kwargs(self, config: Any, max_length: int | None = None) -> dict[str, Any]:
        """Keyword arguments of `tokenizer(texts, **kwargs)` that give the vectors the backbone was trained with.

        Families trained on texts padded to their full length (SigLIP: 64) pad to `max_length` (default: the
        tower's positions); the others pad to the longest text of the batch, which gives them the same vectors.
        """
        positions = self.text_positions(config)
        length = min(max_length or positions, positions)
        padding = "max_length" if self.pads_to_max_length else "longest"
        return {"padding": padding, "truncation": True, "max_length": length}

    def check_tokenizer(self, tokenizer: Any, config: Any) -> None:
        """Refuse, in one line, a tokenizer that cannot give the backbone's text (no pad token, another vocabulary)."""
        vocab = config.text_config.vocab_size
        if tokenizer.pad_token_id is None:
            raise ValueError(f"the tokenizer has no pad token: a {self.family} text tower needs one to pad its texts.")
        if len(tokenizer) > vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the {self.family} text tower has {vocab}: "
                             "they do not belong together.")

    # ---- layer names (relative to the dual encoder) --------------------------------------------------------
    text_layer_pattern: ClassVar[re.Pattern] = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")
    vision_layer_pattern: ClassVar[re.Pattern] = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")
    text_prefixes: ClassVar[tuple[str, ...]] = ("text_model.",)
    bottom_prefixes: ClassVar[tuple[str, ...]] = ("text_model.embeddings.", "vision_model.embeddings.")

    def num_layers(self, config: Any) -> tuple[int, int]:
        """`(text layers, vision layers)`."""
        return config.text_config.num_hidden_layers, config.vision_config.num_hidden_layers

    def layer_depth(self, name: str, config: Any) -> tuple[int, int]:
        """`(depth, top)` of a dual-encoder parameter named relative to the dual encoder: embeddings are depth 0,
        encoder layer i depth i + 1, the final norms, heads, projections and temperatures the top (L + 1)."""
        num_text, num_vision = self.num_layers(config)
        for pattern, layers in ((self.text_layer_pattern, num_text), (self.vision_layer_pattern, num_vision)):
            match = pattern.match(name)
            if match:
                return int(match.group(1)) + 1, layers + 1
        top = (num_text if self.is_text_parameter(name) else num_vision) + 1
        return (0, top) if name.startswith(self.bottom_prefixes) else (top, top)

    def is_text_parameter(self, name: str) -> bool:
        return name.startswith(self.text_prefixes)

    # ---- token states, for objectives that reach inside the towers (StructXLIP) ---------------------------
    supports_token_embeddings: ClassVar[bool] = False
    """Whether patch and text token states can be projected into the shared space (StructXLIP's local loss)."""

    @abstractmethod
    def vision_tokens(self, model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One vision forward: `(image embeddings (b, d), patch token states (b, P, H))`, class token dropped."""

    @abstractmethod
    def text_tokens(
        self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One text forward: `(text embeddings (b, d), token states (b, L, H) after the final norm)`."""

    def project_patch_tokens(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Patch token states `(..., H)` -> the shared space `(..., d)`; only where `supports_token_embeddings`."""
        raise ValueError(f"a {self.family} backbone has no projection of patch tokens into its embedding space.")

    def project_text_tokens(self, model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """Text token states `(..., H)` -> the shared space `(..., d)`; only where `supports_token_embeddings`."""
        raise ValueError(f"a {self.family} backbone has no projection of text tokens into its embedding space.")


__all__ = ["DualEncoderBackbone"]
