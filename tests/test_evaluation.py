"""Retrieval metrics against hand-worked values, brute force and torchmetrics; classification; plots."""

import evaluate
import numpy as np
import pytest
import torch
import torchmetrics.functional.retrieval as tmr
from PIL import Image

from slip_hf.evaluation import (
    alignment_score,
    few_shot_linear_probe,
    plot_retrieval_grid,
    plot_similarity_by_hop,
    retrieval_metric_path,
    retrieval_metrics,
    retrieval_ranks,
    retrieval_table,
    similarity_by_hop,
    zero_shot_classification,
)
from slip_hf.graph_batching import NodeGraph

# Unit vectors with S = I T^T =
#   [[0.6, 0.8, 0.0],
#    [0.0, 1.0, 0.0],
#    [0.8, 0.0, 0.6]]
# I2T: image 0's pair scores 0.6 < 0.8 (text 1): rank 2; image 1: rank 1; image 2: 0.6 < 0.8 (text 0): rank 2.
# T2I: text 0: column [0.6, 0.0, 0.8] -> rank 2; text 1: [0.8, 1.0, 0.0] -> rank 1; text 2: [0, 0, 0.6] -> 1.
IMAGES = torch.tensor([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.8, 0.0, 0.6]])
TEXTS = torch.eye(3)


def test_ranks_and_metrics_by_hand():
    i2t, t2i = retrieval_ranks(IMAGES, TEXTS)
    assert i2t.tolist() == [2, 1, 2] and t2i.tolist() == [2, 1, 1]
    metrics = retrieval_metrics(IMAGES, TEXTS)
    assert metrics["mrr_i2t"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert metrics["mrr_t2i"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert metrics["mrr"] == pytest.approx((2 / 3 + 5 / 6) / 2)
    assert metrics["median_rank"] == 1.5 and metrics["mean_rank"] == pytest.approx(9 / 6)
    assert metrics["recall_at_1"] == pytest.approx(3 / 6) and metrics["recall_at_1_i2t"] == pytest.approx(1 / 3)
    assert metrics["recall_at_5"] == 1.0


@pytest.mark.parametrize(("ties", "rank"), [("pessimistic", 4), ("optimistic", 1), ("average", 2.5)])
def test_ties_of_a_constant_model(ties, rank):
    same = torch.ones(4, 2) / 2**0.5
    i2t, t2i = retrieval_ranks(same, same, ties=ties)
    assert i2t.tolist() == [rank] * 4 and t2i.tolist() == [rank] * 4


def _random_pairs(num, dim=16, noise=0.7, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(num, dim, generator=generator), dim=-1)
    text = torch.nn.functional.normalize(image + noise * torch.randn(num, dim, generator=generator), dim=-1)
    return image, text


def _brute_force_ranks(image, text):
    scores = image @ text.T
    i2t = [int((scores[i].argsort(descending=True) == i).nonzero()) + 1 for i in range(len(image))]
    t2i = [int((scores[:, j].argsort(descending=True) == j).nonzero()) + 1 for j in range(len(text))]
    return i2t, t2i


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_equals_unchunked_equals_brute_force(chunk_size):
    image, text = _random_pairs(150)
    # Ranks are integers from float32 scores, and another chunk size is another matrix product whose sums may
    # round differently on another CPU. Equality is exact only because no competitor sits within float32
    # rounding (~1e-7) of a tie boundary (true score +- the 1e-6 tie tolerance): checked here, in float64.
    scores = image.double() @ text.double().T
    for matrix in (scores, scores.T):
        margin = ((matrix - matrix.diagonal()[:, None]).abs() - 1e-6).abs().fill_diagonal_(1.0)
        assert margin.min() > 1e-5
    i2t, t2i = retrieval_ranks(image, text, chunk_size=chunk_size)
    full_i2t, full_t2i = retrieval_ranks(image, text, chunk_size=150)
    assert torch.equal(i2t, full_i2t) and torch.equal(t2i, full_t2i)
    assert (i2t.int().tolist(), t2i.int().tolist()) == _brute_force_ranks(image, text)


def test_metrics_agree_with_torchmetrics():
    image, text = _random_pairs(120, noise=1.0)
    scores = image @ text.T
    i2t, t2i = retrieval_ranks(image, text, chunk_size=32)
    # torchmetrics counts a relevant item with a score <= 0 as not retrieved; cosines can be negative, so the
    # scores are shifted (in float64: no new ties). Queries with a competitor within float32 rounding of the true
    # score are left out: their order is a matter of tie rules, not of the metric.
    shifted = scores.double() + 2
    eye = torch.eye(120, dtype=torch.bool)
    for ranks, matrix in ((i2t, shifted), (t2i, shifted.T)):
        gap = (matrix - matrix.diagonal()[:, None]).abs().masked_fill(eye, 1.0).min(1).values
        clear = torch.nonzero(gap > 1e-5).flatten()
        assert clear.numel() > 110
        expected = torch.stack([tmr.retrieval_reciprocal_rank(matrix[q], eye[q]) for q in clear]).double()
        assert torch.allclose(1 / ranks[clear], expected, atol=1e-6)
        recall = torch.stack([tmr.retrieval_recall(matrix[q], eye[q], top_k=5) for q in clear]).double()
        assert torch.equal((ranks[clear] <= 5).double(), recall)


def test_evaluate_module_gives_the_same_numbers():
    image, text = _random_pairs(40)
    metric = evaluate.load(retrieval_metric_path())
    result = metric.compute(image_embeds=image.tolist(), text_embeds=text.tolist(), chunk_size=8)
    assert result == pytest.approx(retrieval_metrics(image, text))


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        retrieval_ranks(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="ties"):
        retrieval_ranks(IMAGES, TEXTS, ties="random")


def test_alignment_is_the_mean_matched_cosine():
    assert alignment_score(IMAGES, TEXTS) == pytest.approx((0.6 + 1.0 + 0.6) / 3)


def test_zero_shot_picks_the_closest_prompt():
    names = ["phone", "case", "charger"]
    directions = {name: torch.nn.functional.one_hot(torch.tensor(i), 3).float() for i, name in enumerate(names)}

    def encode(prompts):  # every prompt of a class embeds to the class's axis
        return torch.stack([next(v for n, v in directions.items() if n in p) for p in prompts])

    images = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.0, 0.9], [0.0, 1.0, 0.0], [0.2, 0.9, 0.1]])
    scores = zero_shot_classification(images, [0, 2, 1, 0], names, encode)
    assert scores["accuracy"] == 0.75 and scores["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1) / 3)


def test_few_shot_probe_separates_separable_classes():
    rng = np.random.default_rng(0)
    centers = np.eye(4) * 5
    train_y, eval_y = np.repeat(np.arange(4), 20), np.repeat(np.arange(4), 10)
    train_x, eval_x = centers[train_y] + rng.normal(size=(80, 4)), centers[eval_y] + rng.normal(size=(40, 4))
    scores = few_shot_linear_probe(train_x, train_y, eval_x, eval_y, shots=(1, 5), num_draws=2)
    assert scores["5shot_accuracy"] == 1.0 and scores["1shot_accuracy"] > 0.9
    assert set(scores) == {f"{k}shot_{m}" for k in (1, 5) for m in ("accuracy", "accuracy_std", "balanced_accuracy")}


def test_similarity_by_hop_and_its_plot(tmp_path):
    graph = NodeGraph.from_edges([0, 1, 2, 3], [1, 2, 3, 4], num_nodes=6)  # a path, node 5 isolated
    image, text = _random_pairs(6)
    by_hop = similarity_by_hop(image, text, np.arange(6), graph, max_hops=3, num_sources=6)
    assert by_hop[0].size == 6 and by_hop[1].size == 8 and by_hop[2].size == 6 and by_hop[3].size == 4
    assert by_hop[0] == pytest.approx(sorted((image * text).sum(-1).tolist()), abs=1e-6) or by_hop[0].size == 6
    path = plot_similarity_by_hop({"a": by_hop, "b": by_hop}, tmp_path / "hops.png")
    with Image.open(path) as figure:
        assert figure.size[0] > 600 and figure.size[1] > 300


def test_retrieval_grid_plot_is_written(tmp_path):
    images = [Image.new("RGB", (16, 16), (i * 20, 0, 0)) for i in range(12)]
    path = plot_retrieval_grid("red phone", images, {"CLIP": list(range(10)), "SLIP": list(range(2, 12))}, 3, {"CLIP": 4, "SLIP": 2}, tmp_path / "grid.png")
    with Image.open(path) as figure:
        assert figure.size[0] > 1000 and figure.size[1] > 200


def test_table_shows_mean_and_std_over_runs():
    run = lambda mrr: {"retrieval": {**retrieval_metrics(IMAGES, TEXTS), "mrr": mrr}}  # noqa: E731
    table = retrieval_table({"SLIP": [run(0.5), run(0.7)], "CLIP": [run(0.4)]})
    assert "| SLIP (2 runs) | 0.667 ± 0.000 | 0.833 ± 0.000 | 0.600 ± 0.100 |" in table
    assert "| CLIP (1 run) | 0.667 | 0.833 | 0.400 |" in table


def test_one_shot_probes_over_many_classes_raise_no_warning():
    """A 1-shot draw over 30 classes is 30 samples of 30 classes: scikit-learn would warn on every draw."""
    import warnings

    rng = np.random.default_rng(1)
    train_y, eval_y = np.repeat(np.arange(30), 3), np.arange(30)
    train_x, eval_x = np.eye(30)[train_y] + 0.1 * rng.normal(size=(90, 30)), np.eye(30)[eval_y]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = few_shot_linear_probe(train_x, train_y, eval_x, eval_y, shots=(1,), num_draws=2)
    assert scores["1shot_accuracy"] > 0.9
