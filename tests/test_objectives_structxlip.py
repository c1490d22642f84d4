"""StructXLIP: the caption filter and chunks (tables), edge maps, the three losses (hand-worked values, masking,
no NaN), and the objectives inside the model, the collator and the trainer."""

import math

import pytest
import torch
import torch.nn.functional as F

from slip_hf import SlipConfig, SlipModel
from slip_hf.graph_batching import SlipDataCollator
from slip_hf.objectives import OBJECTIVES, batch_preparers, enabled_objectives, warmup_cosine_factor
from slip_hf.objectives.structxlip import (
    local_alignment_loss,
    masked_cosine_distance,
    masked_symmetric_info_nce,
)
from slip_hf.objectives.structxlip_inputs import (
    StructureCaptionFilter,
    adaptive_chunk_spans,
    render_edge_maps,
)

E = math.e
STRUCTXLIP = {"lambda_structxlip_global": 0.5, "lambda_structxlip_local": 0.1, "lambda_structxlip_consistency": 0.05}


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("Rose Gold Aluminum Phone Stand - Black", "Phone Stand"),
        ("USB-C Charger, White", "USB-C Charger"),
        ("Silicone Case for iPhone 14 (Black)", "Case for iPhone 14"),
        ("Red and Blue Wireless Mouse", "Wireless Mouse"),
        ("Stainless Steel Water Bottle 32oz", "Water Bottle 32oz"),
        ("Heavy Duty Shockproof Case in Matte Black", "Heavy Duty Shockproof Case"),
        ("Leather Wallet Case with Card Slots, Brown/Tan", "Wallet Case with Card Slots"),
        ("Space-Gray Laptop Sleeve 13 inch", "Laptop Sleeve 13 inch"),
        ("Clear Sound Bluetooth Speaker", "Clear Sound Bluetooth Speaker"),  # "clear" is not an appearance word here
        ("Black", "Black"),  # nothing would remain: the original is kept
        ("Black Leather Case", "Black Leather Case"),  # one content word < 2: the original is kept
        ("  Wireless   Earbuds ,  Blue ", "Wireless Earbuds"),
        ("", ""),
    ],
)
def test_structure_caption_filter_table(caption, expected):
    assert StructureCaptionFilter()(caption) == expected


def test_structure_caption_filter_options():
    assert StructureCaptionFilter(remove=["colors"])("Red Leather Wallet Case") == "Leather Wallet Case"
    assert StructureCaptionFilter(extra_terms=["Sunset Orange"], min_content_words=1)("Case, Sunset Orange") == "Case"
    with pytest.raises(ValueError, match="unknown appearance kinds"):
        StructureCaptionFilter(remove=["smells"])


def _word_offsets(text: str) -> list[tuple[int, int]]:
    """One token per word, plus start/end special tokens with empty spans (a fast tokenizer's layout)."""
    import re

    return [(0, 0)] + [(m.start(), m.end()) for m in re.finditer(r"\w+", text)] + [(0, 0)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("usb charger", [(1, 3)]),  # 2 words: one window of 2
        ("fast usb c wall charger", [(1, 4), (2, 5), (3, 6)]),  # 5 words: window 3
        ("case, stand", [(1, 2), (2, 3)]),  # two clauses of one word
        ("", []),
    ],
)
def test_adaptive_chunk_spans_table(text, expected):
    assert adaptive_chunk_spans(text, _word_offsets(text)) == expected


def test_adaptive_chunk_spans_cap():
    text = " ".join(f"w{i}" for i in range(30))
    assert len(adaptive_chunk_spans(text, _word_offsets(text), max_chunks=4)) == 4


def test_masked_symmetric_info_nce_hand_value():
    embeds = torch.eye(3)
    valid = torch.tensor([True, False, True])
    # items 0 and 2 only: each row sees logits (1, 0), both directions
    expected = math.log(1 + math.exp(-1))
    assert masked_symmetric_info_nce(embeds, embeds, valid, 1.0).item() == pytest.approx(expected)
    # the same as CLIP's loss on the valid items alone
    logits = embeds[[0, 2]] @ embeds[[0, 2]].T
    reference = (F.cross_entropy(logits, torch.arange(2)) + F.cross_entropy(logits.T, torch.arange(2))) / 2
    assert masked_symmetric_info_nce(embeds, embeds, valid, 1.0).item() == pytest.approx(reference.item())


def test_local_alignment_loss_hand_value_and_masking():
    e1, e2, e3 = torch.eye(3)
    chunks = torch.stack([e1, e2]).reshape(2, 1, 3)
    regions = torch.stack([torch.stack([e1, e3]), torch.stack([e2, e3])])  # (2 items, 2 regions, 3)
    every = torch.ones(2, 2, dtype=torch.bool)
    # chunk 0: positives (1, 0), all candidates (1, 0, 0, 0)
    expected = math.log((E + 3) / (E + 1))
    assert local_alignment_loss(chunks, torch.ones(2, 1, dtype=torch.bool), regions, every, 1.0).item() == pytest.approx(expected)
    # item 1 has no usable region: it is no anchor, and its regions are no candidates
    partial = torch.tensor([[True, True], [False, False]])
    assert local_alignment_loss(chunks, torch.ones(2, 1, dtype=torch.bool), regions, partial, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_masked_cosine_distance_hand_value():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [1.0, 1.0], [0.0, 1.0]])
    assert masked_cosine_distance(a, b, torch.tensor([True, True, False])).item() == pytest.approx((1 + (1 - 2**-0.5)) / 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_losses_without_valid_items_are_zero_with_finite_gradients(dtype):
    a = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    b = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    none = torch.zeros(4, dtype=torch.bool)
    chunks = torch.randn(4, 3, 8, dtype=dtype, requires_grad=True)
    regions = torch.randn(4, 2, 8, dtype=dtype, requires_grad=True)
    losses = [
        masked_symmetric_info_nce(a, b, none, 100.0),
        local_alignment_loss(chunks, torch.ones(4, 3, dtype=torch.bool), regions, torch.zeros(4, 2, dtype=torch.bool), 100.0),
        masked_cosine_distance(a, b, none),
    ]
    sum(losses).backward()
    assert all(loss.item() == 0.0 for loss in losses)
    assert all(torch.isfinite(t.grad).all() and not t.grad.any() for t in (a, b, chunks, regions))


def test_losses_in_bf16_are_finite_and_close_to_fp32():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    valid = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    full = masked_symmetric_info_nce(a, b, valid, 100.0)
    half = masked_symmetric_info_nce(a.bfloat16(), b.bfloat16(), valid, 100.0)
    assert torch.isfinite(half) and half.item() == pytest.approx(full.item(), rel=0.05)


def test_edge_maps_find_a_square_and_blank_images_are_masked():
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    images = torch.zeros(2, 3, 32, 32)
    images[0, :, 8:24, 8:24] = 1.0  # a white square on black; image 1 stays blank
    pixel_values = (images - 0.5) / 0.25
    edges, fraction, regions = render_edge_maps(pixel_values, mean, std, num_regions=2)
    assert edges.shape == pixel_values.shape
    assert fraction[0] > 0.05 and fraction[1] == 0
    assert regions.shape == (2, 4) and bool((regions[0] > 0).all()) and not regions[1].any()
    drawing = edges * 0.25 + 0.5  # back to [0, 1]: black lines on white
    assert drawing[1].min() == pytest.approx(1.0) and drawing[0].min() == pytest.approx(0.0)


def test_weight_schedule_warms_up_then_decays_to_the_floor():
    factors = [warmup_cosine_factor(epoch, warmup=1, decay_start=1, decay_end=5, floor=0.4) for epoch in range(7)]
    assert factors[0] == 1.0 and factors[1] == 1.0
    assert factors[3] == pytest.approx(0.4 + 0.6 * 0.5)
    assert factors[5] == pytest.approx(0.4) and factors[6] == pytest.approx(0.4)
    assert warmup_cosine_factor(0, warmup=2) == 0.5


def test_registry_names_every_weight_and_output():
    config = SlipConfig(num_labels=3)
    assert list(OBJECTIVES)[:3] == ["clip", "graph", "aux"]
    assert enabled_objectives(config) == ["clip", "graph", "aux"]
    # a weight on what the model cannot compute (no graph path, no classifier) enables nothing
    assert enabled_objectives(SlipConfig(use_graph=False, lambda_graph=0.05, lambda_aux=0.1)) == ["clip"]
    assert enabled_objectives(SlipConfig(**STRUCTXLIP, lambda_graph=0.0, num_labels=3)) == [
        "clip", "aux", "structxlip_global", "structxlip_local", "structxlip_consistency"
    ]
    assert batch_preparers(config) == []


@pytest.fixture
def structxlip_batch(processed_nodes, node_graph, tokenizer, slip_config):
    from slip_hf.toy import toy_image_processor

    config = SlipConfig(**{**slip_config.to_dict(), **STRUCTXLIP})
    collator = SlipDataCollator(node_graph, tokenizer=tokenizer, preparers=batch_preparers(config, tokenizer, toy_image_processor(16)))
    rows = [processed_nodes[i] for i in range(24)]
    return config, collator(rows)


def test_collator_prepares_structxlip_fields_only_when_enabled(processed_nodes, node_graph, tokenizer, structxlip_batch):
    config, batch = structxlip_batch
    assert batch["edge_pixel_values"].shape == batch["pixel_values"].shape
    assert batch["structure_chunk_mask"].shape == (24, config.structxlip_max_chunks, batch["input_ids"].size(1))
    assert batch["structure_chunk_mask"].any(dim=(1, 2)).all() and batch["edge_mask"].any()
    plain = SlipDataCollator(node_graph, tokenizer=tokenizer)([processed_nodes[i] for i in range(4)])
    assert "edge_pixel_values" not in plain


def test_model_with_every_objective_reports_each_part_and_sums_them(structxlip_batch):
    config, batch = structxlip_batch
    torch.manual_seed(0)
    model = SlipModel(config)
    inputs = {k: v for k, v in batch.items() if k not in ("node_ids", "num_cut_edges")}
    output = model(**inputs, return_loss=True)
    enabled = enabled_objectives(config)
    assert enabled == ["clip", "graph", "aux", "structxlip_global", "structxlip_local", "structxlip_consistency"]
    parts = {name: getattr(output, f"loss_{name}") for name in enabled}
    assert all(torch.isfinite(part) and part > 0 for part in parts.values())
    expected = sum(getattr(config, f"lambda_{name}") * parts[name].item() for name in enabled)
    assert output.loss.item() == pytest.approx(expected, rel=1e-6)
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_model_without_structxlip_inputs_fails_clearly_in_training(structxlip_batch):
    config, batch = structxlip_batch
    model = SlipModel(config).train()
    with pytest.raises(ValueError, match="structxlip_global.*batch_preparers"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], return_loss=True)
    with pytest.raises(TypeError, match="unknown inputs"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], edge_map=batch["pixel_values"])
    # evaluation without the fields (retrieval): the StructXLIP parts are simply absent
    output = model.eval()(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], return_loss=True)
    assert output.loss_structxlip_global is None and torch.isfinite(output.loss)


def test_batch_without_usable_edge_maps_gives_zero_parts(structxlip_batch):
    config, batch = structxlip_batch
    batch = {k: v for k, v in batch.items() if k not in ("node_ids", "num_cut_edges")}
    batch["edge_mask"] = torch.zeros_like(batch["edge_mask"])
    model = SlipModel(config)
    output = model(**batch, return_loss=True)
    assert output.loss_structxlip_global.item() == 0 and output.loss_structxlip_consistency.item() == 0
    assert output.loss_structxlip_local.item() == 0
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_every_objective_is_finite_under_bf16_autocast(structxlip_batch):
    config, batch = structxlip_batch
    config = SlipConfig(**{**config.to_dict(), "lambda_structure_clip_margin": 1.0, "lambda_structure_clip_hinge": 1.0,
                           "lambda_structure_clip_negclip": 0.5, "use_knowledge_encoder": True})
    batch = {k: v for k, v in batch.items() if k not in ("node_ids", "num_cut_edges")}
    size = batch["input_ids"].size(0)
    batch.update(negative_input_ids=batch["input_ids"].flip(0), negative_attention_mask=batch["attention_mask"],
                 negative_mask=torch.arange(size) % 3 > 0, triple_input_ids=torch.randint(2, 50, (size, 8, 3, 8)),
                 triple_attention_mask=torch.ones(size, 8, 3, 8, dtype=torch.long), triple_mask=torch.arange(8).expand(size, 8) < 2)
    model = SlipModel(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**batch, return_loss=True)
    output.loss.backward()
    assert all(torch.isfinite(getattr(output, f"loss_{name}")) for name in enabled_objectives(config))
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
