"""The three parts of the SLIP objective (Eq. 1, 5, 6) and the weighted sum of any objectives (Eq. 7), with the
sigmoid forms that a SigLIP backbone trains with (its base loss, and the structural loss's `"sigmoid"` form).

Each loss is a plain function of tensors so that the model, the trainer and the distributed variants
(`slip_hf.distributed`) share one implementation. All of them compute in float32 whatever the input dtype,
so fp16/bf16 activations give the same loss as fp32 ones up to the inputs' own rounding.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F


def clip_contrastive_loss(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Symmetric InfoNCE of CLIP (Eq. 1).

    .. math::
        \mathcal{L}_{clip} = \tfrac12\left[\mathrm{CE}(\hat Y_v, Y) + \mathrm{CE}(\hat Y_t, Y)\right],
        \qquad \hat Y_v = e^{\tau} E_v E_t^\top,\ \hat Y_t = e^{\tau} E_t E_v^\top

    Args:
        logits_per_image (`torch.Tensor` of shape `(n, m)`): scaled image-to-text similarities; row i's
            positive is column `targets[i]`.
        logits_per_text (`torch.Tensor` of shape `(n, m)`): scaled text-to-image similarities, same targets.
            With a single process `logits_per_text == logits_per_image.T`.
        targets (`torch.LongTensor` of shape `(n,)`, *optional*): column of each row's positive; defaults to
            `arange(n)` (the diagonal).

    Returns:
        Scalar `torch.Tensor` (float32).
    """
    if targets is None:
        targets = torch.arange(logits_per_image.size(0), device=logits_per_image.device)
    loss_image = F.cross_entropy(logits_per_image.float(), targets)
    loss_text = F.cross_entropy(logits_per_text.float(), targets)
    return (loss_image + loss_text) / 2


def sigmoid_contrastive_loss(
    logits_per_text: torch.Tensor,
    targets: torch.Tensor | None = None,
    num_rows: int | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""SigLIP's pairwise sigmoid loss (Zhai et al., 2023): every text-image pair is its own binary problem.

    .. math::
        \mathcal{L}_{sig} = -\frac1n \sum_{i} \sum_{j} \log \sigma\left(z_{ij}\,(e^{t} \langle E_t^i, E_v^j \rangle + b)\right),
        \qquad z_{ij} = 1 \text{ for the matching pair, } -1 \text{ otherwise}

    the operations of `SiglipModel(..., return_loss=True)` (a sum over each row, then the mean over rows), so
    that a SLIP model on SigLIP with zero graph and category weights reproduces SigLIP's loss to rounding.

    Args:
        logits_per_text (`torch.Tensor` of shape `(n, m)`): scaled and biased text-to-image similarities; row i's
            matching image is column `targets[i]`.
        targets (`torch.LongTensor` of shape `(n,)`, *optional*): defaults to `arange(n)` (the diagonal).
        num_rows (*optional*): the number of rows of the whole batch when these are some of its rows
            (distributed training: the loss is then the sum over these rows divided by it).

    Returns:
        Scalar `torch.Tensor` (float32).
    """
    rows = logits_per_text.size(0)
    if targets is None:
        targets = torch.arange(rows, device=logits_per_text.device)
    signs = -torch.ones_like(logits_per_text, dtype=torch.float32)
    signs[torch.arange(rows, device=logits_per_text.device), targets] = 1.0
    row_losses = -torch.sum(F.logsigmoid(signs * logits_per_text.float()), dim=-1)
    return row_losses.mean() if num_rows is None else row_losses.sum() / num_rows


def structural_sigmoid_loss(
    node_embeds: torch.Tensor,
    positive_mask: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    *,
    key_embeds: torch.Tensor | None = None,
    self_index: torch.Tensor | None = None,
    num_rows: int | torch.Tensor | None = None,
) -> torch.Tensor:
    r"""The structural loss in SigLIP's form: each ordered pair of distinct nodes is a binary problem, graph
    neighbour or not.

    .. math::
        \mathcal{L}_{graph}^{sig} = -\frac1n \sum_{i} \sum_{j \ne i} \left[ w_{ij} \log\sigma(\ell_{ij})
        + [w_{ij} = 0] \log\sigma(-\ell_{ij}) \right], \qquad \ell_{ij} = e^{t'} \langle Z_i, Z_j \rangle + b'

    with :math:`w_{ij} = M^+_{ij}` (1 for a neighbour within the hop threshold, or the positive's weight). The
    anchor's own pair is left out. Unlike Eq. 5, a batch without edges still has a loss: every pair is a
    negative.

    Args:
        node_embeds (`torch.Tensor` of shape `(n, d)`): l2-normalised anchors.
        positive_mask (`torch.BoolTensor` or float `torch.Tensor` of shape `(n, m)`): :math:`M^+` (or weights),
            False at each anchor's own column.
        logit_scale (`torch.Tensor` or `float`): :math:`e^{t'}`, already exponentiated.
        logit_bias (`torch.Tensor` or `float`): :math:`b'`.
        key_embeds (`torch.Tensor` of shape `(m, d)`, *optional*): the embeddings compared against; default the
            anchors.
        self_index (`torch.LongTensor` of shape `(n,)`, *optional*): each anchor's own column; default `arange(n)`.
        num_rows (*optional*): the number of anchor rows of the whole batch when these are some of them.

    Returns:
        Scalar `torch.Tensor` (float32).
    """
    keys = node_embeds if key_embeds is None else key_embeds
    if positive_mask.shape != (node_embeds.size(0), keys.size(0)):
        raise ValueError(f"positive_mask has shape {tuple(positive_mask.shape)}, expected "
                         f"{(node_embeds.size(0), keys.size(0))} (anchors x keys).")
    rows = torch.arange(node_embeds.size(0), device=node_embeds.device)
    self_index = rows if self_index is None else self_index
    logits = logit_scale * (node_embeds.float() @ keys.float().T) + logit_bias
    weight = positive_mask.to(device=logits.device, dtype=torch.float32)
    negative = (weight == 0).float()
    negative[rows, self_index] = 0.0
    pair_losses = -(weight * F.logsigmoid(logits) + negative * F.logsigmoid(-logits))
    return pair_losses.sum() / (node_embeds.size(0) if num_rows is None else num_rows)


def structural_contrastive_loss(
    node_embeds: torch.Tensor,
    positive_mask: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    key_embeds: torch.Tensor | None = None,
    self_index: torch.Tensor | None = None,
    exclude_self: bool = False,
    eps: float = 1e-8,
    num_positives: torch.Tensor | float | None = None,
) -> torch.Tensor:
    r"""Structural contrastive loss over graph-neighbour positives (Eq. 5).

    With :math:`S = \tau^{-1} Z Z^\top` and a row-wise log-softmax

    .. math::
        \log P_{ij} = S_{ij} - \log \sum_{k=1}^{b} \exp(S_{ik}), \qquad
        \mathcal{L}_{graph} = -\frac{1}{\lVert M^+ \rVert + \epsilon} \sum_{i,j} M^+_{ij} \log P_{ij}

    where :math:`\lVert M^+ \rVert` is the number of positive pairs. The denominator runs over k = 1..b,
    the anchor included, as Eq. 5 is written; `exclude_self=True` drops k = i (SupCon style). Rows without
    positives contribute nothing, and a batch with no positive pair at all gives exactly 0 with zero,
    finite gradients.

    Args:
        node_embeds (`torch.Tensor` of shape `(n, d)`): l2-normalised node embeddings Z (the anchors).
        positive_mask (`torch.BoolTensor` or float `torch.Tensor` of shape `(n, m)`): :math:`M^+`; must be
            False (0) at each anchor's own column. A float tensor holds weights :math:`w_{ij} \ge 0`: the loss
            is then the weighted mean :math:`-\sum w_{ij} \log P_{ij} / (\sum w_{ij} + \epsilon)`
            (`slip_hf.positive_weights`); weights in {0, 1} give Eq. 5.
        logit_scale (`torch.Tensor` or `float`): :math:`1/\tau`, already exponentiated.
        key_embeds (`torch.Tensor` of shape `(m, d)`, *optional*): the embeddings compared against; defaults
            to `node_embeds` (m = n). Distributed training passes the gathered global batch here.
        self_index (`torch.LongTensor` of shape `(n,)`, *optional*): column of each anchor itself in the keys;
            defaults to `arange(n)`. Only used with `exclude_self=True`.
        exclude_self (`bool`): drop the anchor from the softmax denominator.
        eps (`float`): :math:`\epsilon` of the normaliser.
        num_positives (*optional*): :math:`\lVert M^+ \rVert` of the whole batch when `positive_mask` holds only
            some of its anchor rows (distributed training); default: `positive_mask.sum()`.

    Returns:
        Scalar `torch.Tensor` (float32).
    """
    keys = node_embeds if key_embeds is None else key_embeds
    if positive_mask.shape != (node_embeds.size(0), keys.size(0)):
        raise ValueError(
            f"positive_mask has shape {tuple(positive_mask.shape)}, expected "
            f"{(node_embeds.size(0), keys.size(0))} (anchors x keys)."
        )
    similarity = logit_scale * (node_embeds.float() @ keys.float().T)
    if exclude_self:
        if self_index is None:
            self_index = torch.arange(node_embeds.size(0), device=node_embeds.device)
        rows = torch.arange(node_embeds.size(0), device=node_embeds.device)
        similarity = similarity.index_put((rows, self_index), torch.tensor(float("-inf"), device=similarity.device))
    log_prob = F.log_softmax(similarity, dim=1)
    weight = positive_mask.to(device=log_prob.device, dtype=torch.float32)
    # torch.where, not a product: 0 * -inf at the excluded anchor would be NaN.
    positive_log_prob = torch.where(weight > 0, weight * log_prob, torch.zeros_like(log_prob))
    total = weight.sum() if num_positives is None else num_positives
    return -positive_log_prob.sum() / (total + eps)


def auxiliary_classification_loss(
    class_logits: torch.Tensor, labels: torch.Tensor, num_labelled: torch.Tensor | float | None = None
) -> torch.Tensor:
    r"""Category cross-entropy of the auxiliary head (Eq. 6).

    .. math::
        \mathcal{L}_{aux} = -\frac1N \sum_{i=1}^N \sum_{c=1}^C Y_{i,c} \log \mathrm{softmax}(C_i)_c

    Args:
        class_logits (`torch.Tensor` of shape `(n, C)`): classifier outputs.
        labels (`torch.LongTensor` of shape `(n,)`): category ids; -100 marks unlabelled nodes, which are
            skipped. A batch with no labelled node gives 0.
        num_labelled (*optional*): N of the whole batch when these are only some of its nodes (distributed
            training): the loss is then the sum over these nodes divided by it.

    Returns:
        Scalar `torch.Tensor` (float32).
    """
    labels = labels.to(class_logits.device).long()
    checkable = labels.device.type == "cpu" and not torch.compiler.is_compiling()  # a read-back would break the graph
    if checkable and labels.numel() and int(labels.max()) >= class_logits.size(-1):
        raise ValueError(  # on an accelerator the cross-entropy kernel asserts this without a host sync
            f"label {int(labels.max())} is out of range for an auxiliary head with {class_logits.size(-1)} classes."
        )
    total = F.cross_entropy(class_logits.float(), labels, ignore_index=-100, reduction="sum")
    if num_labelled is None:  # the mean over labelled nodes; 0 (with zero gradients) when there is none
        num_labelled = (labels != -100).sum().clamp(min=1)
    return total / num_labelled


def weighted_total_loss(parts: Mapping[str, torch.Tensor | None], weights: Mapping[str, float]) -> torch.Tensor:
    r"""Eq. 7, for any set of objectives: :math:`\mathcal{L} = \sum_o \lambda_o \mathcal{L}_o` in the order of
    `parts` (SLIP: :math:`\mathcal{L}_{clip} + \lambda_{graph}\mathcal{L}_{graph} + \lambda_{aux}\mathcal{L}_{aux}`).

    A part that is `None` (not applicable) or whose weight is 0 is left out, and a weight of exactly 1 is not
    multiplied, so with only CLIP's part left the result *is* that part (the plain CLIP fine-tuning
    baseline), bit for bit.

    Args:
        parts (`Mapping[str, torch.Tensor | None]`): each objective's loss, a scalar tensor of shape `()`, or `None`
            where it does not apply to this batch.
        weights (`Mapping[str, float]`): each objective's weight λ, by the same names.

    Returns:
        `torch.Tensor` of shape `()`: the weighted sum.

    Raises:
        ValueError: if no part is left.

    Example:

    ```python
    >>> weighted_total_loss({"clip": torch.tensor(2.0), "graph": torch.tensor(1.0), "aux": None},
    ...                     {"clip": 1.0, "graph": 0.05, "aux": 0.1})
    tensor(2.0500)

    ```
    """
    total = None
    for name, part in parts.items():
        weight = weights[name]
        if part is None or weight == 0:
            continue
        term = part if weight == 1 else weight * part
        total = term if total is None else total + term
    if total is None:
        raise ValueError(f"no loss term left: every part of {list(parts)} is off or has weight 0.")
    return total


__all__ = [
    "auxiliary_classification_loss",
    "clip_contrastive_loss",
    "sigmoid_contrastive_loss",
    "structural_sigmoid_loss",
    "weighted_total_loss",
    "structural_contrastive_loss",
]
