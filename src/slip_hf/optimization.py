"""Optimizer parameter groups of SLIP: discriminative (layer-wise) learning rates for the dual encoder's towers and
a separate, higher learning rate for the freshly initialised graph head (§6.1).

Depth of a dual-encoder parameter inside its tower (the family's adapter names the layers,
`DualEncoderBackbone.layer_depth`): embeddings (and CLIP's vision pre-LayerNorm) are depth 0, encoder layer i is
depth i + 1, and the final LayerNorm, the projection or head, `logit_scale` (and SigLIP's `logit_bias`) are the
top, depth L + 1.
A parameter k levels below the top gets

* `"shallower_lower"` (the usual layer-wise decay of ULMFiT/BEiT, and what Table 4's numbers imply):
  `lr = base_lr * decay**k`: the top keeps `base_lr`, the embeddings get the smallest rate;
* `"shallower_higher"` (§6.1 as worded): `lr = base_lr / decay**k`: the deepest layers keep `base_lr`,
  shallower ones get more.

With ViT-B/16 (12 layers) Table 4's `base_lr = 1.6e-4` and decay 0.8 under `"shallower_lower"` gives
`1.6e-4 * 0.8**13 = 8.8e-6` at the embeddings, i.e. the "1e-5" §6.1 quotes sits at the other end of the
same schedule. A decay of 1.0 switches DLR off (Table 4's "no DLR" row).
"""

from collections.abc import Collection
from typing import Literal

from torch import nn

GRAPH_HEAD_PREFIXES = ("vision_graph.", "text_graph.", "fusion.", "classifier.", "graph_logit_scale", "graph_logit_bias",
                       "knowledge_encoder.")

DUAL_ENCODER_PREFIX = "clip."
"""Where the dual encoder's parameters sit in a [`SlipModel`] (`model.clip`, whatever the family)."""


def clip_layer_depth(name: str, config) -> tuple[int, int]:
    """`(depth, top)` of a dual-encoder parameter of a [`SlipModel`] (names start with `clip.`); see the module doc.

    Args:
        name: the parameter's name in the SLIP model.
        config ([`SlipConfig`]): the model's config (its backbone names the layers).

    Returns:
        `(depth, top)`: the parameter's depth in its tower and the tower's top depth.
    """
    return config.backbone.layer_depth(name.removeprefix(DUAL_ENCODER_PREFIX), config.clip_config)


def layer_lr_scale(levels_below_top: int, decay: float, direction: str) -> float:
    """Multiplier of the base learning rate `levels_below_top` levels under the top of a tower."""
    if direction == "shallower_lower":
        return decay**levels_below_top
    if direction == "shallower_higher":
        return decay ** (-levels_below_top)
    raise ValueError(f"direction must be 'shallower_lower' or 'shallower_higher', got {direction!r}.")


def slip_parameter_groups(
    model: nn.Module,
    *,
    base_lr: float,
    graph_lr: float,
    weight_decay: float,
    decay_parameter_names: Collection[str],
    layer_decay: float = 0.8,
    direction: Literal["shallower_lower", "shallower_higher"] = "shallower_lower",
) -> list[dict]:
    """Optimizer parameter groups for a [`SlipModel`]: one group per (learning rate, weight decay) pair.

    Args:
        model: the SLIP model (parameter names as in `SlipModel.named_parameters()`).
        base_lr: learning rate of the reference CLIP layer (the top, or the bottom, by `direction`).
        graph_lr: learning rate of the GAT stacks, fusion, classifier and graph temperature (paper: 4e-3).
        weight_decay: decay of the parameters in `decay_parameter_names` that are matrices; vectors (biases,
            norms, attention vectors of size 1 x heads x C are matrices and decay) and temperatures do not.
        decay_parameter_names: names eligible for weight decay (`Trainer.get_decay_parameter_names`).
        layer_decay: per-layer factor (paper: 0.8); 1.0 disables discriminative learning rates.
        direction: `"shallower_lower"` or `"shallower_higher"` (see module doc).

    Returns:
        A list of `{"params", "lr", "weight_decay", "group_name"}` dicts, sorted by name, for `torch.optim`.
    """
    decay_names = set(decay_parameter_names)
    groups: dict[tuple[str, float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith(GRAPH_HEAD_PREFIXES):
            label, lr = "graph_head", graph_lr
        elif name.startswith(DUAL_ENCODER_PREFIX):
            depth, top = clip_layer_depth(name, model.config)
            label, lr = f"clip_top-{top - depth}", base_lr * layer_lr_scale(top - depth, layer_decay, direction)
        else:
            raise ValueError(f"parameter {name!r} belongs to neither the dual encoder nor the graph head.")
        wd = weight_decay if (name in decay_names and param.ndim >= 2) else 0.0
        groups.setdefault((f"{label}{'_decay' if wd else ''}", lr, wd), []).append(param)
    return [
        {"params": params, "lr": lr, "weight_decay": wd, "group_name": group_name}
        for (group_name, lr, wd), params in sorted(groups.items(), key=lambda item: item[0][0])
    ]


__all__ = ["DUAL_ENCODER_PREFIX", "clip_layer_depth", "layer_lr_scale", "slip_parameter_groups"]
