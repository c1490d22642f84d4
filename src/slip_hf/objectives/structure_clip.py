r"""Structure-CLIP (seed 003): scene-graph semantic negatives and the Knowledge-Enhanced Encoder, as objectives.

With l2-normalised image embeddings :math:`v_i`, true captions :math:`t_i` and semantic negatives :math:`n_i`
(the caption with subject and object, or two attributes, exchanged; `structure_clip_inputs`):

* `structure_clip_margin`: the true caption must beat its own negative for the same image by a margin m
  (the reference's `MarginLoss`, `nn.MarginRankingLoss` on cosine similarities), over the items V that have
  a negative:

  .. math::
      \mathcal{L}_{margin} = \frac{1}{|V|}\sum_{i \in V} \max\big(0,\ m - \langle v_i, t_i\rangle + \langle v_i, n_i\rangle\big)

* `structure_clip_hinge`: the reference's hinge contrastive `WinoLoss` on the knowledge-enhanced text
  :math:`\tilde t_i = t_i + w K_i` (`slip_hf.knowledge_encoder`; :math:`\tilde t = t` without it), with the
  hardest in-batch negatives (`structure_clip_hard_negatives`; else the mean similarity of the text's row):

  .. math::
      \mathcal{L}_{hinge} = \frac1N \sum_i \max\big(0,\ \max_{j\neq i}\langle v_i, \tilde t_j\rangle + m' - \langle v_i, \tilde t_i\rangle\big)
      + \max\big(0,\ \max_{j\neq i}\langle \tilde t_i, v_j\rangle + m' - \langle v_i, \tilde t_i\rangle\big)

* `structure_clip_negclip`: CLIP's InfoNCE with the negatives as extra text candidates of every image
  (NegCLIP): the image-to-text softmax runs over the batch's texts and its negatives, the text-to-image
  direction is CLIP's. With `lambda_clip = 0` and this weight at 1 it replaces CLIP's loss.

The reference trains with the margin and hinge losses only (weights 1 and 1); here they add to whatever else
is enabled. Each loss computes in float32, is 0 with finite gradients when no item qualifies, and returns this
process's share of the global-batch loss in a multi-process run.
"""

import torch
import torch.nn.functional as F

from .base import ForwardState, Objective, float32_loss, zero_loss
from .structure_clip_inputs import StructureClipBatchPreparer


@float32_loss
def semantic_margin_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, negative_embeds: torch.Tensor, valid: torch.Tensor,
    margin: float, num_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """`structure_clip_margin` (module docstring); inputs `(b, d)` l2-normalised, `valid` `(b,)`."""
    valid = valid.to(image_embeds.device).bool()
    total = valid.sum() if num_valid is None else num_valid
    if not bool(valid.any()) or int(total) == 0:
        return zero_loss(image_embeds, text_embeds, negative_embeds)
    image, text, negative = image_embeds.float()[valid], text_embeds.float()[valid], negative_embeds.float()[valid]
    return F.relu(margin - (image * text).sum(-1) + (image * negative).sum(-1)).sum() / total


@float32_loss
def hinge_contrastive_loss(
    image_all: torch.Tensor, text_all: torch.Tensor, margin: float, hard: bool = True, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """`structure_clip_hinge` (module docstring) for the anchor `rows` (default all) against the whole batch,
    as the sum over the rows divided by N."""
    n = image_all.size(0)
    if n < 2:
        return zero_loss(image_all, text_all)
    rows = torch.arange(n, device=image_all.device) if rows is None else rows
    image, text = image_all.float(), text_all.float()
    image_to_text = image[rows] @ text.T  # (r, N)
    text_to_image = text[rows] @ image.T
    positive = image_to_text.gather(1, rows[:, None]).squeeze(1)
    self_mask = F.one_hot(rows, n).bool()
    image_negative = image_to_text.masked_fill(self_mask, float("-inf")).max(dim=1).values
    if hard:
        text_negative = text_to_image.masked_fill(self_mask, float("-inf")).max(dim=1).values
    else:  # the reference's warm-up: the mean over the row, the positive included
        text_negative = text_to_image.mean(dim=1)
    return (F.relu(image_negative + margin - positive) + F.relu(text_negative + margin - positive)).sum() / n


def _negative_embeds(state: ForwardState) -> torch.Tensor:
    """l2-normalised text embeddings of the negatives `(b, d)` (one text forward, shared)."""
    model = state.model
    output = model.clip.get_text_features(
        input_ids=state.inputs["negative_input_ids"], attention_mask=state.inputs.get("negative_attention_mask")
    )
    return F.normalize(output.pooler_output, dim=-1)


class StructureClipObjective(Objective):
    """What the Structure-CLIP objectives share: the preparer of negatives and triples."""

    batch_fields = ("negative_input_ids", "negative_attention_mask", "negative_mask")
    preparer = StructureClipBatchPreparer


class StructureClipMarginObjective(StructureClipObjective):
    """True caption vs its semantic negative, margin `structure_clip_margin`; weight `lambda_structure_clip_margin`."""

    name = "structure_clip_margin"

    def __call__(self, state: ForwardState) -> torch.Tensor:
        negatives = state.cached("structure_clip_negatives", lambda: _negative_embeds(state))
        valid, margin = state.inputs["negative_mask"].bool(), state.model.config.structure_clip_margin
        if not state.distributed:
            return semantic_margin_loss(state.image_embeds, state.text_embeds, negatives, valid, margin)
        loss = semantic_margin_loss(state.image_embeds, state.text_embeds, negatives, valid, margin,
                                    num_valid=state.sum_over_processes(valid.sum()))
        return loss * state.world


class StructureClipHingeObjective(StructureClipObjective):
    """Hinge contrastive loss on knowledge-enhanced texts; weight `lambda_structure_clip_hinge`."""

    name = "structure_clip_hinge"
    batch_fields = ()
    optional_fields = ("triple_input_ids", "triple_attention_mask", "triple_mask")

    def __call__(self, state: ForwardState) -> torch.Tensor:
        model, config = state.model, state.model.config
        text = state.text_embeds
        if model.knowledge_encoder is not None and "triple_input_ids" in state.inputs:
            knowledge = model.get_knowledge_features(
                state.inputs["triple_input_ids"], state.inputs["triple_attention_mask"], state.inputs["triple_mask"]
            )
            text = text + config.knowledge_weight * knowledge
        text_all = state.gather(text)
        loss = hinge_contrastive_loss(state.image_all, text_all, config.structure_clip_hinge_margin,
                                      config.structure_clip_hard_negatives, rows=state.anchors)
        return loss * state.world if state.anchors is not None else loss


class StructureClipNegClipObjective(StructureClipObjective):
    """CLIP's InfoNCE with the semantic negatives as extra text candidates; weight `lambda_structure_clip_negclip`."""

    name = "structure_clip_negclip"

    def __call__(self, state: ForwardState) -> torch.Tensor:
        negatives = state.cached("structure_clip_negatives", lambda: _negative_embeds(state))
        valid_all = state.gather(state.inputs["negative_mask"].long()).bool()
        scale = state.model.backbone.logit_scale(state.model.clip).exp()
        rows = state.anchors if state.anchors is not None else torch.arange(state.image_all.size(0), device=valid_all.device)
        extra = (scale * (state.image_all[rows].float() @ state.gather(negatives).float().T)).float().masked_fill(
            ~valid_all[None, :], torch.finfo(torch.float32).min
        )
        image_to_text = torch.cat([state.logits_per_image.float(), extra], dim=1)
        loss = (F.cross_entropy(image_to_text, rows) + F.cross_entropy(state.logits_per_text.float(), rows)) / 2
        return loss * state.share if state.anchors is not None else loss


__all__ = [
    "StructureClipHingeObjective",
    "StructureClipMarginObjective",
    "StructureClipNegClipObjective",
    "hinge_contrastive_loss",
    "semantic_margin_loss",
]
