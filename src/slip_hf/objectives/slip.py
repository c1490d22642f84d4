"""SLIP's objectives (Eq. 1, 5, 6): the backbone's image-text loss (CLIP's InfoNCE, SigLIP's sigmoid), the
structural contrastive loss over graph neighbours, and the auxiliary category loss. The math lives in `slip_hf.losses`; these wrap it for one process or the
global batch of several."""

import math

import torch

from ..graph_masks import edge_weight_matrix, hop_positive_mask
from ..losses import (
    auxiliary_classification_loss,
    clip_contrastive_loss,
    sigmoid_contrastive_loss,
    structural_contrastive_loss,
    structural_sigmoid_loss,
)
from .base import ForwardState, Objective

# CLIP caps its temperature at 1/100; the structural loss uses the same ceiling.
MAX_GRAPH_LOGIT_SCALE = math.log(100.0)


class ClipObjective(Objective):
    """The backbone's own image-text loss over the batch (global under `accelerate launch`); weight `lambda_clip` (1).

    CLIP and MetaCLIP 2: the symmetric InfoNCE of Eq. 1. SigLIP and SigLIP 2: the pairwise sigmoid loss with the
    learned bias (`slip_hf.losses.sigmoid_contrastive_loss`); with several processes this process's texts are
    scored against the images of every process, so each image-text pair of the global batch is counted once
    (the role of open_clip's exchange of negatives between neighbours in `SigLipLoss`)."""

    name = "clip"
    report_when_off = True

    def __call__(self, state: ForwardState) -> torch.Tensor:
        if state.model.backbone.base_loss == "sigmoid":
            loss = sigmoid_contrastive_loss(state.logits_per_text, targets=state.anchors)
        else:
            loss = clip_contrastive_loss(state.logits_per_image, state.logits_per_text, targets=state.anchors)
        return loss * state.share if state.anchors is not None else loss


class GraphObjective(Objective):
    r"""Structural contrastive loss of Eq. 5, positives within `config.hops` hops (Eq. 2); weight `lambda_graph`.

    `config.graph_loss_on` picks the embeddings it pulls together:

    .. math::
        \mathcal{L}_{graph} = \begin{cases} \mathcal{L}_5(Z) & \texttt{z} \text{ (the paper)} \\
        \tfrac12\left[\mathcal{L}_5(E_v) + \mathcal{L}_5(E_t)\right] & \texttt{e} \\
        \tfrac12\left[\mathcal{L}_5(Z) + \tfrac12\left(\mathcal{L}_5(E_v) + \mathcal{L}_5(E_t)\right)\right] & \texttt{both}
        \end{cases}

    with one mask :math:`M^+` and one temperature. `config.graph_loss_form="sigmoid"` (the default, `"auto"`, on a SigLIP backbone) replaces Eq. 5 by its pairwise
    sigmoid form (`slip_hf.losses.structural_sigmoid_loss`, with the learned bias `graph_logit_bias`). With
    `config.weights_positives`, each positive weighs its
    edge's `edge_weight` (recency / count, `slip_hf.positive_weights`). Reports `num_positive_pairs` (|M+| of the
    batch, or the sum of the weights). `None` when the graph path is off."""

    name = "graph"
    report_when_off = True

    @classmethod
    def applies_to(cls, config) -> bool:
        return config.use_graph

    def __call__(self, state: ForwardState) -> torch.Tensor | None:
        if state.node_embeds_all is None:
            return None
        config = state.model.config
        anchors = state.anchors if state.graph_is_global else None
        z = state.node_embeds_all
        if config.weights_positives:
            edge_index, edge_weight = state.graph_input
            if edge_weight is None:
                raise ValueError(
                    "config.weights_positives is set but the batch has no edge_weight: build the NodeGraph with "
                    "slip_hf.positive_weights.config_edge_weights (CopurchaseGraph.node_graph(config) does)."
                )
            mask = edge_weight_matrix(edge_index.to(z.device), edge_weight, z.size(0), rows=anchors)
        else:
            mask = hop_positive_mask(state.edges, z.size(0), config.hops, config.hop_mode, rows=anchors, simple=True)
        positives = state.sum_over_processes(mask.sum()) if anchors is not None else mask.sum()
        state.diagnostics["num_positive_pairs"] = positives
        scale = state.model.graph_logit_scale.clamp(max=MAX_GRAPH_LOGIT_SCALE).exp()

        def eq5(embeds: torch.Tensor) -> torch.Tensor:
            if config.resolved_graph_loss_form == "sigmoid":
                return structural_sigmoid_loss(
                    embeds if anchors is None else embeds[anchors], mask, scale, state.model.graph_logit_bias,
                    key_embeds=None if anchors is None else embeds, self_index=anchors,
                    num_rows=None if anchors is None else embeds.size(0),
                )
            return structural_contrastive_loss(
                embeds if anchors is None else embeds[anchors], mask, scale, key_embeds=None if anchors is None else embeds,
                self_index=anchors, exclude_self=config.graph_loss_exclude_self, eps=config.graph_loss_eps,
                num_positives=positives,
            )

        terms = []
        if config.graph_loss_on in ("z", "both"):
            terms.append(eq5(z))
        if config.graph_loss_on in ("e", "both"):  # the CLIP-space embeddings of the same nodes as Z
            image, text = (state.image_all, state.text_all) if state.graph_is_global else (state.image_embeds, state.text_embeds)
            terms.append((eq5(image) + eq5(text)) / 2)
        loss = terms[0] if len(terms) == 1 else (terms[0] + terms[1]) / 2
        return loss * state.world if anchors is not None else loss


class AuxiliaryObjective(Objective):
    """Category cross-entropy of the auxiliary head (Eq. 6); weight `lambda_aux`. `None` without a head or
    labels."""

    name = "aux"
    report_when_off = True

    @classmethod
    def applies_to(cls, config) -> bool:
        return config.num_labels > 0

    def __call__(self, state: ForwardState) -> torch.Tensor | None:
        if state.class_logits is None or state.labels is None:
            return None
        if state.distributed:
            labelled = state.sum_over_processes((state.labels != -100).sum()).clamp(min=1)
            return auxiliary_classification_loss(state.class_logits, state.labels, num_labelled=labelled) * state.world
        return auxiliary_classification_loss(state.class_logits, state.labels)


__all__ = ["MAX_GRAPH_LOGIT_SCALE", "AuxiliaryObjective", "ClipObjective", "GraphObjective"]
