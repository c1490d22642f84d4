r"""StructXLIP (seed 002): structure *inside* each image-text pair. The image's edge map goes through the same
vision tower as the image, the caption loses its appearance words (colours, materials, textures), and three
losses tie them together:

* `structxlip_global`: the edge-map embedding :math:`\hat E_e` against the filtered caption's embedding
  :math:`\hat E_s`, a symmetric InfoNCE over the items V that have a usable edge map and filtered caption,

  .. math::
      \mathcal{L}_{global} = \frac{1}{2|V|}\sum_{i \in V}\Big[\mathrm{CE}\big(s\,\hat E_{e,i}\hat E_{s,V}^\top, i\big)
      + \mathrm{CE}\big(s\,\hat E_{s,i}\hat E_{e,V}^\top, i\big)\Big]

  with CLIP's scale s = exp(logit_scale), not trained by this loss (as the reference detaches it);
* `structxlip_local`: caption chunks c (adaptive word windows of the filtered caption) against the edge map's
  regions r, a multi-positive InfoNCE in which the regions of the same item are the positives,

  .. math::
      \ell_c = -\log \frac{\sum_{r \in R_{item(c)}} \exp(s' \langle c, r\rangle)}{\sum_{r \in R} \exp(s' \langle c, r\rangle)},
      \qquad s' = \min(\mathrm{e}^{\text{logit\_scale}} / \tau_{chunk}, 100),

  averaged over each item's chunks, then over the items with at least one chunk and one usable region;
* `structxlip_consistency`: :math:`\frac{1}{|V|}\sum_{i\in V} 1 - \cos(E_{v,i}, \hat E_{e,i})`, which keeps
  the RGB and edge embeddings of an item together (`cosine_embedding_loss` with target 1).

Regions here are the ViT's patch tokens of the edge map pooled on an R x R grid (`structxlip_num_regions`),
from the same forward pass as the global edge embedding; the reference encodes K segment crops of the edge map
(from an external segmenter) as K further images. Chunks are pooled from the filtered caption's own token
states; the reference pools the original caption's tokens over spans found in the filtered caption.

Every loss computes in float32, gives exactly 0 with finite gradients when no item qualifies, and returns this
process's share of the global-batch loss in a multi-process run.
"""

import torch
import torch.nn.functional as F

from .base import ForwardState, Objective, float32_loss, zero_loss
from .structxlip_inputs import StructXlipBatchPreparer

MAX_CHUNK_LOGIT_SCALE = 100.0


@float32_loss
def masked_symmetric_info_nce(
    embeds_a: torch.Tensor,
    embeds_b: torch.Tensor,
    valid: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    rows: torch.Tensor | None = None,
    num_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Symmetric InfoNCE over the valid items only (`structxlip_global`; see the module docstring).

    Args:
        embeds_a, embeds_b (`torch.Tensor` of shape `(N, d)`): l2-normalised pairs; row i of each pairs up.
        valid (`torch.BoolTensor` of shape `(N,)`): items that take part, as anchors and as candidates.
        logit_scale: s, already exponentiated.
        rows (`torch.LongTensor`, *optional*): the anchor rows this process computes (default: all).
        num_valid (*optional*): |V| of the whole batch when `rows` are some of its rows.

    Returns:
        Scalar float32: the sum over the valid anchor rows divided by |V| (0 when V is empty).
    """
    valid = valid.to(embeds_a.device).bool()
    rows = torch.arange(embeds_a.size(0), device=embeds_a.device) if rows is None else rows
    rows = rows[valid[rows]]
    total = valid.sum() if num_valid is None else num_valid
    if rows.numel() == 0 or int(total) == 0:
        return zero_loss(embeds_a, embeds_b)
    a, b = embeds_a.float(), embeds_b.float()
    lowest = torch.finfo(torch.float32).min
    logits_ab = (logit_scale * (a[rows] @ b.T)).masked_fill(~valid[None, :], lowest)
    logits_ba = (logit_scale * (b[rows] @ a.T)).masked_fill(~valid[None, :], lowest)
    loss = F.cross_entropy(logits_ab, rows, reduction="sum") + F.cross_entropy(logits_ba, rows, reduction="sum")
    return loss / (2 * total)


@float32_loss
def local_alignment_loss(
    chunk_embeds: torch.Tensor,
    chunk_valid: torch.Tensor,
    region_embeds: torch.Tensor,
    region_valid: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    item_rows: torch.Tensor | None = None,
    num_items: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Multi-positive chunk-to-region InfoNCE (`structxlip_local`; see the module docstring).

    Args:
        chunk_embeds (`torch.Tensor` of shape `(b, C, d)`): l2-normalised chunk embeddings of b items.
        chunk_valid (`torch.BoolTensor` of shape `(b, C)`): real chunks (the rest is padding).
        region_embeds (`torch.Tensor` of shape `(N, K, d)`): l2-normalised region embeddings of all N items.
        region_valid (`torch.BoolTensor` of shape `(N, K)`): regions with edges (the candidates).
        logit_scale: s', already exponentiated and capped.
        item_rows (`torch.LongTensor` of shape `(b,)`, *optional*): the rows of the b chunk items among the N
            (default: `arange(b)`, b = N).
        num_items (*optional*): number of qualifying items of the whole batch when these are some of them.

    Returns:
        Scalar float32: the sum over qualifying items of their mean chunk loss, divided by the number of
        qualifying items (0 when none qualifies).
    """
    b, num_chunks, dim = chunk_embeds.shape
    n, num_regions, _ = region_embeds.shape
    device = chunk_embeds.device
    item_rows = torch.arange(b, device=device) if item_rows is None else item_rows
    region_valid, chunk_valid = region_valid.to(device).bool(), chunk_valid.to(device).bool()
    usable = chunk_valid & region_valid[item_rows].any(dim=1, keepdim=True)  # (b, C)
    items = usable.any(dim=1)
    total = items.sum() if num_items is None else num_items
    if not bool(items.any()) or int(total) == 0:
        return zero_loss(chunk_embeds, region_embeds)
    similarity = logit_scale * (chunk_embeds.float().reshape(b * num_chunks, dim) @ region_embeds.float().reshape(n * num_regions, dim).T)
    candidates = region_valid.reshape(1, -1)
    owner = torch.arange(n, device=device).repeat_interleave(num_regions).reshape(1, -1)
    positives = candidates & (owner == item_rows.repeat_interleave(num_chunks).reshape(-1, 1))
    lowest = torch.finfo(torch.float32).min
    log_all = torch.logsumexp(similarity.masked_fill(~candidates, lowest), dim=1)
    log_positive = torch.logsumexp(similarity.masked_fill(~positives, lowest), dim=1)
    per_chunk = torch.where(usable.reshape(-1), log_all - log_positive, torch.zeros_like(log_all)).reshape(b, num_chunks)
    per_item = per_chunk.sum(dim=1) / usable.sum(dim=1).clamp(min=1)
    return per_item.sum() / total


@float32_loss
def masked_cosine_distance(embeds_a: torch.Tensor, embeds_b: torch.Tensor, valid: torch.Tensor, num_valid=None) -> torch.Tensor:
    r""":math:`\frac{1}{|V|}\sum_{i \in V} 1 - \cos(a_i, b_i)` (`structxlip_consistency`); 0 when V is empty.

    Args:
        embeds_a, embeds_b (`torch.Tensor` of shape `(b, d)`): paired embeddings (any norm).
        valid (`torch.BoolTensor` of shape `(b,)`): items that take part.
        num_valid (*optional*): |V| of the whole batch when these are some of its items.
    """
    valid = valid.to(embeds_a.device).bool()
    total = valid.sum() if num_valid is None else num_valid
    if not bool(valid.any()) or int(total) == 0:
        return zero_loss(embeds_a, embeds_b)
    cosine = F.cosine_similarity(embeds_a.float()[valid], embeds_b.float()[valid], dim=-1)
    return (1 - cosine).sum() / total


def _edge_outputs(state: ForwardState) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(edge embeds (b, d), region embeds (b, R*R, d) or None)`, both l2-normalised, from one vision forward.
    Region embeddings need a backbone that projects patch tokens (CLIP's family); the others give `None`."""
    model, grid = state.model, state.model.config.structxlip_num_regions
    backbone = model.backbone
    edge_embeds, patches = backbone.vision_tokens(model.clip, state.inputs["edge_pixel_values"])  # patches (b, P, H)
    if not backbone.supports_token_embeddings:
        return F.normalize(edge_embeds, dim=-1), None
    side = round(patches.size(1) ** 0.5)
    patches = patches.transpose(1, 2).reshape(patches.size(0), -1, side, side)
    regions = F.adaptive_avg_pool2d(patches, grid).flatten(2).transpose(1, 2)  # (b, R*R, H)
    region_embeds = backbone.project_patch_tokens(model.clip, regions)
    return F.normalize(edge_embeds, dim=-1), F.normalize(region_embeds, dim=-1)


def _structure_text_outputs(state: ForwardState) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(filtered-caption embeds (b, d), chunk embeds (b, C, d) or None)`, l2-normalised, from one text forward.

    A chunk is the softmax(token norm)-weighted mean of its token states (weights without gradient, as in the
    reference), projected by the text projection (CLIP's family; `None` for the others)."""
    model = state.model
    backbone = model.backbone
    caption_embeds, hidden = backbone.text_tokens(
        model.clip, state.inputs["structure_input_ids"], state.inputs.get("structure_attention_mask")
    )  # hidden (b, L, H), after the final layer norm
    if not backbone.supports_token_embeddings:
        return F.normalize(caption_embeds, dim=-1), None
    member = state.inputs["structure_chunk_mask"].to(hidden.device).bool()  # (b, C, L)
    with torch.no_grad():
        scores = hidden.float().norm(dim=-1).unsqueeze(1).expand(-1, member.size(1), -1)
        weights = torch.softmax(scores.masked_fill(~member, float("-inf")), dim=-1).nan_to_num(0.0)
    chunks = torch.einsum("bcl,blh->bch", weights.to(hidden.dtype), hidden)
    chunk_embeds = backbone.project_text_tokens(model.clip, chunks)
    return F.normalize(caption_embeds, dim=-1), F.normalize(chunk_embeds, dim=-1)


def _valid_items(state: ForwardState) -> torch.Tensor:
    """Items with a usable edge map and a non-empty filtered caption, `(b,)` bool."""
    return state.inputs["edge_mask"].bool() & state.inputs["structure_text_mask"].bool()


class StructXlipObjective(Objective):
    """What the three StructXLIP objectives share: their batch fields and the preparer that makes them."""

    batch_fields = (
        "edge_pixel_values", "edge_mask", "edge_region_mask",
        "structure_input_ids", "structure_attention_mask", "structure_chunk_mask", "structure_text_mask",
    )
    preparer = StructXlipBatchPreparer


class StructXlipGlobalObjective(StructXlipObjective):
    """Edge map <-> filtered caption, symmetric InfoNCE over the valid items; weight `lambda_structxlip_global`."""

    name = "structxlip_global"

    def __call__(self, state: ForwardState) -> torch.Tensor:
        edge_embeds, _ = state.cached("structxlip_edges", lambda: _edge_outputs(state))
        caption_embeds, _ = state.cached("structxlip_texts", lambda: _structure_text_outputs(state))
        valid = _valid_items(state)
        scale = state.model.backbone.logit_scale(state.model.clip).detach().exp()
        if not state.distributed:
            return masked_symmetric_info_nce(edge_embeds, caption_embeds, valid, scale)
        valid_all = state.gather(valid.long()).bool()
        rows = state.local_rows if state.anchors is not None else None
        loss = masked_symmetric_info_nce(
            state.gather(edge_embeds), state.gather(caption_embeds), valid_all, scale, rows=rows, num_valid=valid_all.sum()
        )
        return loss * state.world if rows is not None else loss


class StructXlipLocalObjective(StructXlipObjective):
    """Caption chunks <-> edge-map regions, multi-positive InfoNCE; weight `lambda_structxlip_local`."""

    name = "structxlip_local"

    def __call__(self, state: ForwardState) -> torch.Tensor:
        _, region_embeds = state.cached("structxlip_edges", lambda: _edge_outputs(state))
        _, chunk_embeds = state.cached("structxlip_texts", lambda: _structure_text_outputs(state))
        config = state.model.config
        scale = (state.model.backbone.logit_scale(state.model.clip).exp() / config.structxlip_chunk_tau).clamp(max=MAX_CHUNK_LOGIT_SCALE)
        chunk_valid = state.inputs["structure_chunk_mask"].bool().any(dim=-1) & _valid_items(state)[:, None]
        region_valid = state.inputs["edge_region_mask"].bool() & state.inputs["edge_mask"].bool()[:, None]
        if not state.distributed:
            return local_alignment_loss(chunk_embeds, chunk_valid, region_embeds, region_valid, scale)
        region_valid_all = state.gather(region_valid.long()).bool()
        items = (chunk_valid & region_valid.any(dim=1, keepdim=True)).any(dim=1)
        loss = local_alignment_loss(
            chunk_embeds, chunk_valid, state.gather(region_embeds), region_valid_all, scale,
            item_rows=state.local_rows, num_items=state.sum_over_processes(items.sum()),
        )
        return loss * state.world


class StructXlipConsistencyObjective(StructXlipObjective):
    """RGB <-> edge-map embedding of each item, 1 - cosine; weight `lambda_structxlip_consistency`."""

    name = "structxlip_consistency"

    def __call__(self, state: ForwardState) -> torch.Tensor:
        edge_embeds, _ = state.cached("structxlip_edges", lambda: _edge_outputs(state))
        valid = state.inputs["edge_mask"].bool()
        if not state.distributed:
            return masked_cosine_distance(state.image_embeds, edge_embeds, valid)
        loss = masked_cosine_distance(state.image_embeds, edge_embeds, valid, num_valid=state.sum_over_processes(valid.sum()))
        return loss * state.world


__all__ = [
    "StructXlipConsistencyObjective",
    "StructXlipGlobalObjective",
    "StructXlipLocalObjective",
    "local_alignment_loss",
    "masked_cosine_distance",
    "masked_symmetric_info_nce",
]
