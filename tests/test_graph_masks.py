import pytest
import torch

from slip_hf.graph_masks import UNREACHABLE, hop_distances, hop_positive_mask

# path 0-1-2-3-4 plus an isolated node 5
PATH = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])


def test_hop_distances_on_a_path():
    dist = hop_distances(PATH, 6, max_hops=3)
    assert dist[0].tolist() == [0, 1, 2, 3, UNREACHABLE, UNREACHABLE]
    assert dist[2].tolist() == [2, 1, 0, 1, 2, UNREACHABLE]
    assert torch.equal(dist, dist.T)
    assert dist[5].tolist() == [UNREACHABLE] * 5 + [0]


@pytest.mark.parametrize(
    ("hops", "mode", "expected_row_0"),
    [
        (1, "within", [0, 1, 0, 0, 0, 0]),
        (2, "within", [0, 1, 1, 0, 0, 0]),
        (3, "within", [0, 1, 1, 1, 0, 0]),
        (2, "exact", [0, 0, 1, 0, 0, 0]),
        (3, "exact", [0, 0, 0, 1, 0, 0]),
    ],
)
def test_positive_mask_within_and_exact(hops, mode, expected_row_0):
    mask = hop_positive_mask(PATH, 6, hops=hops, mode=mode)
    assert mask[0].int().tolist() == expected_row_0
    assert not mask.diagonal().any()
    assert torch.equal(mask, mask.T)


def test_direction_of_edges_does_not_matter():
    assert torch.equal(hop_positive_mask(PATH, 6, hops=2), hop_positive_mask(PATH.flip(0), 6, hops=2))


def test_triangle_has_no_two_hop_exact_pairs():
    triangle = torch.tensor([[0, 1, 2], [1, 2, 0]])
    assert not hop_positive_mask(triangle, 3, hops=2, mode="exact").any()


def test_bad_edge_index_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        hop_positive_mask(torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="integer"):
        hop_positive_mask(torch.tensor([[0.0], [1.0]]), 3)
    with pytest.raises(ValueError, match="hops"):
        hop_positive_mask(PATH, 6, hops=0)
