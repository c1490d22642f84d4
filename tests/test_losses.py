import math

import pytest
import torch

from slip_hf.graph_masks import hop_positive_mask, restrict_edges_to_nodes
from slip_hf.losses import (
    auxiliary_classification_loss,
    clip_contrastive_loss,
    structural_contrastive_loss,
    weighted_total_loss,
)

E = math.e
# Z = (e1, e2, e1): S = Z Z^T = [[1,0,1],[0,1,0],[1,0,1]] at scale 1; one edge 0-1.
Z3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
EDGE_01 = torch.tensor([[0], [1]])


def naive_structural_loss(z, mask, scale, exclude_self=False, eps=1e-8):
    """Eq. 5 written as loops."""
    b = z.size(0)
    total, count = 0.0, 0
    for i in range(b):
        denominator = sum(
            math.exp(scale * float(z[i] @ z[k])) for k in range(b) if not (exclude_self and k == i)
        )
        for j in range(b):
            if mask[i, j]:
                total += scale * float(z[i] @ z[j]) - math.log(denominator)
                count += 1
    return -total / (count + eps)


def test_clip_loss_matches_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert clip_contrastive_loss(logits, logits.T).item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_clip_loss_is_symmetric_mean_of_both_directions():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.5, 2.0, 0.1], [0.0, 0.0, 1.0]])
    row = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    col = torch.nn.functional.cross_entropy(logits.T, torch.arange(3))
    assert clip_contrastive_loss(logits, logits.T).item() == pytest.approx(((row + col) / 2).item(), abs=1e-7)


def test_graph_loss_matches_hand_computed_value_including_self():
    mask = hop_positive_mask(EDGE_01, 3)
    expected = (math.log(2 * E + 1) + math.log(E + 2)) / 2
    assert structural_contrastive_loss(Z3, mask, 1.0).item() == pytest.approx(expected, abs=1e-6)


def test_graph_loss_matches_hand_computed_value_excluding_self():
    mask = hop_positive_mask(EDGE_01, 3)
    expected = (math.log(1 + E) + math.log(2)) / 2
    loss = structural_contrastive_loss(Z3, mask, 1.0, exclude_self=True)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("hops", [1, 2, 3])
def test_graph_loss_matches_naive_loop(exclude_self, hops):
    generator = torch.Generator().manual_seed(hops)
    z = torch.nn.functional.normalize(torch.randn(5, 4, generator=generator), dim=-1)
    edges = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    mask = hop_positive_mask(edges, 5, hops=hops)
    loss = structural_contrastive_loss(z, mask, 2.5, exclude_self=exclude_self)
    assert loss.item() == pytest.approx(naive_structural_loss(z, mask, 2.5, exclude_self), abs=1e-5)


def test_graph_loss_zero_without_edges_and_gradients_finite():
    z = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1).requires_grad_()
    scale = torch.tensor(14.0, requires_grad=True)
    mask = hop_positive_mask(torch.empty((2, 0), dtype=torch.long), 4)
    for exclude_self in (False, True):
        loss = structural_contrastive_loss(z, mask, scale, exclude_self=exclude_self)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(z.grad).all() and torch.isfinite(scale.grad).all()
        assert z.grad.abs().sum() == 0


def test_isolated_nodes_contribute_no_positives():
    # node 3 has no edges: its row of M+ is empty and the loss equals the loss of the other rows alone
    z = torch.nn.functional.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    mask = hop_positive_mask(torch.tensor([[0, 1], [1, 2]]), 4)
    assert not mask[3].any() and not mask[:, 3].any()
    assert structural_contrastive_loss(z, mask, 3.0).item() == pytest.approx(naive_structural_loss(z, mask, 3.0), abs=1e-5)


def test_duplicate_and_self_edges_change_nothing():
    clean = torch.tensor([[0, 1], [1, 2]])
    noisy = torch.tensor([[0, 1, 1, 0, 2, 2, 1], [1, 0, 2, 1, 2, 1, 1]])
    assert torch.equal(hop_positive_mask(clean, 3), hop_positive_mask(noisy, 3))
    assert structural_contrastive_loss(Z3, hop_positive_mask(noisy, 3), 1.0) == structural_contrastive_loss(
        Z3, hop_positive_mask(clean, 3), 1.0
    )


def test_edges_to_nodes_outside_the_batch_are_dropped_and_counted():
    global_edges = torch.tensor([[10, 11, 12, 10, 99], [11, 12, 50, 77, 10]])
    local, dropped = restrict_edges_to_nodes(global_edges, torch.tensor([12, 10, 11]))
    assert dropped == 3
    assert local.tolist() == [[1, 2], [2, 0]]


def test_mask_rejects_positions_outside_the_batch():
    with pytest.raises(ValueError, match="outside the batch of 3 nodes"):
        hop_positive_mask(torch.tensor([[0], [3]]), 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_accept_half_precision_inputs(dtype):
    generator = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    mask = hop_positive_mask(torch.tensor([[0, 1, 3], [1, 2, 4]]), 6)
    reference = structural_contrastive_loss(z, mask, 14.0)
    half = structural_contrastive_loss(z.to(dtype), mask, 14.0)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert half.item() == pytest.approx(reference.item(), rel=2e-2)
    logits = (z @ z.T * 10).to(dtype)
    assert torch.isfinite(clip_contrastive_loss(logits, logits.T))
    assert torch.isfinite(auxiliary_classification_loss(torch.randn(6, 3).to(dtype), torch.tensor([0, 1, 2, 0, 1, 2])))


def test_aux_loss_hand_value_and_ignored_labels():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    assert auxiliary_classification_loss(logits, torch.tensor([0, -100])).item() == pytest.approx(math.log(2))
    assert auxiliary_classification_loss(logits, torch.tensor([-100, -100])).item() == 0.0
    with pytest.raises(ValueError, match="out of range"):
        auxiliary_classification_loss(logits, torch.tensor([0, 2]))


def test_total_loss_is_eq7_and_plain_clip_with_zero_weights():
    clip, graph, aux = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    weights = {"clip": 1.0, "graph": 0.05, "aux": 0.1}
    assert weighted_total_loss({"clip": clip, "graph": graph, "aux": aux}, weights).item() == pytest.approx(2.0 + 0.15 + 0.5)
    assert weighted_total_loss({"clip": clip, "graph": graph, "aux": aux}, {**weights, "graph": 0, "aux": 0}) is clip
    assert weighted_total_loss({"clip": clip, "graph": None, "aux": None}, weights) is clip
    with pytest.raises(ValueError, match="no loss term left"):
        weighted_total_loss({"clip": clip}, {"clip": 0.0})
