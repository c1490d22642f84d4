import math

import pytest
import torch
from float_order import assert_equal_up_to_float_order
from transformers import AutoModel, CLIPModel

from slip_hf import SlipConfig, SlipModel

EDGES = torch.tensor([[0, 1, 2], [1, 2, 3]])


def test_forward_returns_every_part_with_documented_shapes(slip_model, model_inputs):
    out = slip_model(**model_inputs, edge_index=EDGES, labels=torch.tensor([0, 1, 2, 3, 0]), return_loss=True)
    assert out.logits_per_image.shape == (5, 5) and torch.equal(out.logits_per_text, out.logits_per_image.T)
    assert out.image_embeds.shape == out.text_embeds.shape == (5, 16)
    assert out.node_embeds.shape == (5, 16)
    assert torch.allclose(out.node_embeds.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert out.class_logits.shape == (5, 4)
    assert out.num_positive_pairs.item() == 6
    expected = out.loss_clip + 0.05 * out.loss_graph + 0.1 * out.loss_aux
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out.loss.backward()
    grads = {n: p.grad for n, p in slip_model.named_parameters()}
    assert grads["vision_graph.layers.0.lin.weight"].abs().sum() > 0
    assert grads["graph_logit_scale"] is not None and grads["classifier.weight"].abs().sum() > 0


def test_no_loss_without_return_loss(slip_model, model_inputs):
    out = slip_model(**model_inputs)
    assert out.loss is None and out.node_embeds is not None


def test_batch_without_edges_gives_zero_graph_loss(slip_model, model_inputs):
    out = slip_model(**model_inputs, edge_index=torch.empty((2, 0), dtype=torch.long), return_loss=True)
    assert out.loss_graph.item() == 0.0 and out.num_positive_pairs.item() == 0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in slip_model.parameters() if p.grad is not None)
    assert slip_model(**model_inputs, return_loss=True).loss_graph.item() == 0.0  # edge_index=None


def test_edge_to_unknown_batch_position_is_a_clear_error(slip_model, model_inputs):
    with pytest.raises(ValueError, match="outside the batch of 5 nodes"):
        slip_model(**model_inputs, edge_index=torch.tensor([[0], [5]]), return_loss=True)


def test_aux_head_reads_concatenated_clip_embeddings_without_graph(clip_config, model_inputs):
    model = SlipModel(SlipConfig(clip_config=clip_config, use_graph=False, num_labels=3))
    assert model.vision_graph is None and model.classifier.in_features == 2 * 16
    out = model(**model_inputs, labels=torch.tensor([0, 1, 2, 0, 1]), return_loss=True)
    assert out.node_embeds is None and out.loss_graph is None and out.loss_aux is not None


def test_zero_weights_are_plain_clip(clip_config, model_inputs):
    """SLIP with zero graph and aux weights is `CLIPModel`: same loss and gradients, and no gradient elsewhere.

    Both compute the same logits and the same InfoNCE, but through two code paths whose gradient sums run in
    another order (the logits' gradient arrives once as a transposed view, once contiguous), so they agree to
    rounding, not bit for bit: on one CPU they matched exactly, on another `logit_scale`'s gradient moved in the
    last bit. The largest gradient here is a sum of at most a few hundred products (5 x 5 logits, 32-wide
    layers); 64 ulps of the largest value bounds any reordering of such sums, while a wrong term (a missing
    1/2, a swapped direction, a loss leaking in at weight 0) moves it by 1e4 ulps or more.
    """
    torch.manual_seed(0)
    slip = SlipModel(SlipConfig(clip_config=clip_config, lambda_graph=0.0, lambda_aux=0.0, num_labels=4))
    clip = CLIPModel(clip_config)
    clip.load_state_dict(slip.clip.state_dict())
    slip_out = slip(**model_inputs, edge_index=EDGES, labels=torch.tensor([0, 1, 2, 3, 0]), return_loss=True)
    clip_out = clip(**model_inputs, return_loss=True)
    assert_equal_up_to_float_order(slip_out.loss, clip_out.loss, ulps=4, name="loss")
    slip_out.loss.backward()
    clip_out.loss.backward()
    clip_grads = dict(clip.named_parameters())
    for name, param in slip.clip.named_parameters():
        assert_equal_up_to_float_order(param.grad, clip_grads[name].grad, ulps=64, name=name)
    assert all(p.grad is None for n, p in slip.named_parameters() if not n.startswith("clip."))


def test_features_are_clip_features_and_need_no_graph(slip_model, model_inputs):
    image = slip_model.get_image_features(pixel_values=model_inputs["pixel_values"]).pooler_output
    text = slip_model.get_text_features(model_inputs["input_ids"], model_inputs["attention_mask"]).pooler_output
    out = slip_model(**model_inputs)
    assert torch.allclose(torch.nn.functional.normalize(image, dim=-1), out.image_embeds, atol=1e-6)
    assert torch.allclose(torch.nn.functional.normalize(text, dim=-1), out.text_embeds, atol=1e-6)


def test_save_and_load_round_trip_bit_exactly(tmp_path, slip_model, model_inputs):
    slip_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, SlipModel)
    for (name, a), (_, b) in zip(slip_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    slip_model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(slip_model(**model_inputs, edge_index=EDGES).node_embeds, loaded(**model_inputs, edge_index=EDGES).node_embeds)


def test_from_clip_loads_a_local_clip_checkpoint(tmp_path, clip_config):
    torch.manual_seed(1)
    clip = CLIPModel(clip_config)
    clip.save_pretrained(tmp_path)
    slip = SlipModel.from_clip(str(tmp_path), num_labels=5, hops=2)
    assert slip.config.num_labels == 5 and slip.config.hops == 2
    for name, param in clip.state_dict().items():
        assert torch.equal(slip.clip.state_dict()[name], param), name


def test_checkpoint_with_other_num_labels_fails_clearly_or_loads_with_ignore(tmp_path, slip_model):
    slip_model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_labels.: 9"):
        SlipModel.from_pretrained(tmp_path, num_labels=9)
    model = SlipModel.from_pretrained(tmp_path, num_labels=9, ignore_mismatched_sizes=True)
    assert model.classifier.out_features == 9
    assert torch.equal(model.clip.logit_scale, slip_model.clip.logit_scale)


def test_gradient_checkpointing_gives_the_same_gradients(slip_config, model_inputs):
    slip_config.graph_dropout = 0.0
    torch.manual_seed(0)
    model = SlipModel(slip_config)
    model.train()
    reference = model(**model_inputs, edge_index=EDGES, return_loss=True).loss
    reference.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model(**model_inputs, edge_index=EDGES, return_loss=True).loss.backward()
    for name, param in model.named_parameters():
        if name in expected:
            assert torch.allclose(param.grad, expected[name], atol=1e-6), name


def _brute_force_eq5(embeds: torch.Tensor, positives: set[tuple[int, int]], scale: float) -> float:
    """Eq. 5 with loops in float64: -1/|M+| sum over (i, j) in M+ of log softmax_j(scale * e_i . e_k)."""
    e = embeds.detach().double()
    total = 0.0
    for i, j in positives:
        logits = [scale * float(e[i] @ e[k]) for k in range(e.size(0))]
        top = max(logits)
        total -= logits[j] - (top + math.log(sum(math.exp(x - top) for x in logits)))
    return total / len(positives)


@pytest.mark.parametrize("loss_on", ["z", "e", "both"])
def test_graph_loss_on_z_e_or_both_equals_brute_force_eq5(clip_config, model_inputs, loss_on):
    torch.manual_seed(0)
    model = SlipModel(SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, graph_loss_on=loss_on)).eval()
    edges = torch.tensor([[0, 1, 3], [1, 2, 4]])
    out = model(**model_inputs, edge_index=edges, return_loss=True)
    positives = {(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)}
    scale = float(model.graph_logit_scale.detach().exp())
    on_z = _brute_force_eq5(out.node_embeds, positives, scale)
    on_e = (_brute_force_eq5(out.image_embeds, positives, scale) + _brute_force_eq5(out.text_embeds, positives, scale)) / 2
    expected = {"z": on_z, "e": on_e, "both": (on_z + on_e) / 2}[loss_on]
    assert float(out.loss_graph.detach()) == pytest.approx(expected, rel=1e-5)


def test_graph_loss_on_e_trains_the_encoders_through_the_structural_loss(clip_config, model_inputs):
    torch.manual_seed(0)
    model = SlipModel(SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, graph_loss_on="e",
                                 lambda_clip=0.0, lambda_aux=0.0))
    model(**model_inputs, edge_index=torch.tensor([[0, 1], [1, 2]]), return_loss=True).loss.backward()
    assert model.clip.visual_projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.vision_graph.parameters())  # Z takes no part


def test_forward_and_losses_trace_as_one_graph_with_the_collators_edges(slip_model, model_inputs):
    """`torch.compile` sees the whole SLIP step (towers, GAT, fusion, every loss) as one graph when the edges come
    from the collator (`simple_edges`); deduplicating raw edges has data-dependent shapes, which break it."""
    inputs = {**model_inputs, "edge_index": torch.tensor([[0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]]),
              "labels": torch.tensor([0, 1, 2, 3, 0]), "return_loss": True}
    collated = torch._dynamo.explain(slip_model)(**inputs, simple_edges=True)
    assert collated.graph_break_count == 0 and collated.graph_count == 1
    raw = torch._dynamo.explain(slip_model)(**inputs, simple_edges=False)
    assert raw.graph_break_count > 0
