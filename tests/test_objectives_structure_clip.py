"""Structure-CLIP: scene graphs and semantic negatives (tables), the margin / hinge / NegCLIP losses (hand-worked
values, masking, no NaN), the knowledge encoder (saved, restored, optional at retrieval), the cached
annotation, a training run with all three methods, and the ARO harness."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from slip_hf import SlipConfig, SlipModel
from slip_hf.evaluation.aro import aro_accuracy, load_aro_cases, score_cases
from slip_hf.objectives.structure_clip import hinge_contrastive_loss, semantic_margin_loss

pytest.importorskip("sng_parser", reason="needs the structure extra: pip install 'slip_hf[structure]'")

from slip_hf.objectives.structure_clip_inputs import (
    SceneGraphExtractor,
    annotate_scene_graphs,
    semantic_negative,
    structure_coverage,
)


@pytest.fixture(scope="module")
def extractor():
    return SceneGraphExtractor()


@pytest.mark.parametrize(
    ("text", "triples", "negative", "kind"),
    [
        ("a red case for a blue phone",
         [["a red case", "for", "a blue phone"], ["a red case", "is", "red"], ["a blue phone", "is", "blue"]],
         "a blue phone for a red case", "relation"),
        ("an astronaut rides a horse", [["an astronaut", "rides", "a horse"]], "a horse rides an astronaut", "relation"),
        ("Phone Case with Card Holder, Black", [["Phone Case", "with", "Card Holder"], ["Phone Case", "is", "Black"]],
         "Card Holder with Phone Case, Black", "relation"),
        ("USB-C Charger compatible with Phones, Red",
         [["USB-C Charger", "compatible with", "Phones"], ["USB-C Charger", "is", "Red"]],
         "Phones compatible with USB-C Charger, Red", "relation"),
        ("red mouse and blue keyboard", [["red mouse", "is", "red"], ["blue keyboard", "is", "blue"]],
         "blue mouse and red keyboard", "attribute_swap"),
        ("wireless earbuds", [], "", ""),
    ],
)
def test_scene_graphs_and_negatives_table(extractor, text, triples, negative, kind):
    graph = extractor(text)
    assert graph.triples() == triples
    assert semantic_negative(graph) == (negative, kind)


def test_one_object_titles_get_a_replaced_colour_or_none(extractor):
    graph = extractor("lumen glide-000 purple controllers, model 1")
    negative, kind = semantic_negative(graph)
    assert kind == "attribute_replace" and negative != graph.text
    assert negative.replace(negative.split()[2], "purple") == graph.text  # only the colour word differs
    assert semantic_negative(graph, replace_attributes=False) == ("", "")


def test_margin_loss_hand_value_and_masking():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    true = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # cos 1 and 0
    negative = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # cos 0.6 and 1
    # item 0: max(0, 0.1 - 1 + 0.6) = 0; item 1: max(0, 0.1 - 0 + 1) = 1.1
    assert semantic_margin_loss(image, true, negative, torch.tensor([True, True]), 0.1).item() == pytest.approx(0.55)
    assert semantic_margin_loss(image, true, negative, torch.tensor([True, False]), 0.1).item() == 0.0


def test_hinge_loss_hand_value():
    image = torch.eye(2)
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # cos(v_i, t_j) = [[1, .6], [0, .8]]; pos = (1, .8)
    # row 0: image negative .6 -> relu(.6 + .2 - 1) = 0; text negative cos(t0, v1) = 0 -> 0
    # row 1: image negative 0 -> 0; text negative cos(t1, v0) = .6 -> relu(.6 + .2 - .8) = 0
    assert hinge_contrastive_loss(image, text, 0.2).item() == pytest.approx(0.0, abs=1e-7)
    # margin 0.5: row 0: relu(.6+.5-1)=.1, relu(0+.5-1)=0; row 1: relu(0+.5-.8)=0, relu(.6+.5-.8)=.3 -> .4 / 2
    assert hinge_contrastive_loss(image, text, 0.5).item() == pytest.approx(0.2)
    # the soft warm-up uses the mean of the text's row: row 0 mean(1, 0) = .5, row 1 mean(.6, .8) = .7
    expected = (0.1 + max(0, 0.5 + 0.5 - 1) + 0 + max(0, 0.7 + 0.5 - 0.8)) / 2
    assert hinge_contrastive_loss(image, text, 0.5, hard=False).item() == pytest.approx(expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_losses_without_negatives_are_zero_with_finite_gradients(dtype):
    a, b, c = (torch.randn(3, 4, dtype=dtype, requires_grad=True) for _ in range(3))
    loss = semantic_margin_loss(a, b, c, torch.zeros(3, dtype=torch.bool), 0.1) + hinge_contrastive_loss(a[:1], b[:1], 0.2)
    loss.backward()
    assert loss.item() == 0 and all(torch.isfinite(t.grad).all() for t in (a, b, c))


def _model(clip_config, **kwargs):
    torch.manual_seed(0)
    return SlipModel(SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, graph_num_heads=4, **kwargs))


def test_negclip_equals_clip_without_negatives_and_adds_candidates_with_them(clip_config, model_inputs):
    model = _model(clip_config, lambda_structure_clip_negclip=1.0, lambda_clip=0.0)
    inputs = {**model_inputs, "negative_input_ids": model_inputs["input_ids"].flip(1),
              "negative_attention_mask": model_inputs["attention_mask"]}
    none = model(**inputs, negative_mask=torch.zeros(5, dtype=torch.bool), return_loss=True)
    assert none.loss_structure_clip_negclip.item() == pytest.approx(none.loss_clip.item(), rel=1e-6)
    every = model(**inputs, negative_mask=torch.ones(5, dtype=torch.bool), return_loss=True)
    assert every.loss_structure_clip_negclip > none.loss_structure_clip_negclip
    assert every.loss.item() == pytest.approx(every.loss_structure_clip_negclip.item())


def test_knowledge_encoder_is_saved_restored_and_optional_at_retrieval(tmp_path, clip_config, model_inputs):
    model = _model(clip_config, use_knowledge_encoder=True, lambda_structure_clip_hinge=1.0, knowledge_weight=0.5).eval()
    ids = torch.randint(2, 100, (5, 8, 3, 8))
    attention, mask = torch.ones_like(ids), torch.tensor([[1] * 3 + [0] * 5] * 4 + [[0] * 8], dtype=torch.bool)
    knowledge = model.get_knowledge_features(ids, attention, mask)
    assert knowledge.shape == (5, 16) and not knowledge[4].any() and torch.allclose(knowledge[0].norm(), torch.tensor(1.0))
    with_triples = model(**model_inputs, triple_input_ids=ids, triple_attention_mask=attention, triple_mask=mask, return_loss=True)
    without = model(**model_inputs, return_loss=True)
    assert with_triples.loss_structure_clip_hinge != without.loss_structure_clip_hinge
    model.save_pretrained(tmp_path)
    restored = SlipModel.from_pretrained(tmp_path).eval()
    assert restored.config.use_knowledge_encoder and torch.equal(restored.get_knowledge_features(ids, attention, mask), knowledge)
    features = restored.get_text_features(model_inputs["input_ids"]).pooler_output  # retrieval needs no triples
    assert torch.equal(features, model.get_text_features(model_inputs["input_ids"]).pooler_output)


def test_annotation_is_cached_and_counted(toy_graph):
    nodes, _ = toy_graph
    first = annotate_scene_graphs(nodes.select(range(40)))
    again = annotate_scene_graphs(nodes.select(range(40)))
    assert first._fingerprint == again._fingerprint and first["negative_caption"] == again["negative_caption"]
    coverage = structure_coverage(first)
    assert coverage["texts"] == 40 and 0 <= coverage["with_triple"] <= 1
    assert coverage["skipped"] == sum(not kind for kind in first["negative_kind"])


def test_training_with_all_three_methods_logs_every_part(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.experiment import parse_arguments, run_experiment

    model_args, data_args, training_args = parse_arguments([
        "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir), "--output_dir", str(tmp_path),
        "--per_device_train_batch_size", "32", "--max_steps", "3", "--logging_steps", "1", "--eval_strategy", "no",
        "--save_strategy", "no", "--graph_hidden_size", "32", "--max_text_length", "24", "--few_shot", "1",
        "--report_to", "none", "--disable_tqdm", "True", "--plots", "False",
        "--lambda_structxlip_global", "0.5", "--lambda_structxlip_local", "0.1", "--lambda_structxlip_consistency", "0.05",
        "--lambda_structure_clip_margin", "1.0", "--lambda_structure_clip_hinge", "1.0",
    ])
    result = run_experiment(model_args, data_args, training_args)
    assert result["objectives"] == ["clip", "graph", "aux", "structxlip_global", "structxlip_local", "structxlip_consistency",
                                    "structure_clip_margin", "structure_clip_hinge"]
    logged = [entry for entry in result["log_history"] if "loss" in entry]
    for name in result["objectives"]:
        assert all(math.isfinite(entry[f"loss_{name}"]) for entry in logged), name


def _aro_folder(root, cases):
    (root / "images").mkdir(parents=True)
    for index, colour in enumerate(("red", "blue")):
        Image.new("RGB", (40, 20), colour).save(root / "images" / f"{index}.png")
    (root / "visual_genome_relation.json").write_text(json.dumps(cases))
    return root


def test_aro_harness_scores_crops_and_macro_averages(tmp_path, tiny_clip_checkpoint):
    from slip_hf.embedding import load_dual_encoder

    cases = [
        {"image_path": f"{i % 2}.png", "bbox_x": 0, "bbox_y": 0, "bbox_w": 20, "bbox_h": 20, "relation_name": relation,
         "true_caption": "a red case for a phone", "false_caption": "a phone for a red case"}
        for i, relation in enumerate(["for", "for", "for", "on"])
    ]
    folder = _aro_folder(tmp_path / "aro", cases)
    loaded = load_aro_cases(folder, "VG-Relation")
    assert loaded[0]["image_path"] == str(folder / "images" / "0.png")
    model, processor, tokenizer = load_dual_encoder(tiny_clip_checkpoint)  # a plain CLIP checkpoint
    correct = score_cases(model, processor, tokenizer, loaded, batch_size=3, max_length=24)
    assert correct.shape == (4,) and correct.dtype == bool
    result = aro_accuracy("VG-Relation", torch.tensor([True, False, True, False]).numpy(), loaded)
    assert result.accuracy == 0.5 and result.groups == {"for": (pytest.approx(2 / 3), 3), "on": (0.0, 1)}
    assert result.macro_accuracy == pytest.approx((2 / 3 + 0) / 2)


def test_aro_harness_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="visual_genome_attribution.json"):
        load_aro_cases(tmp_path, "VG-Attribution")
    folder = _aro_folder(tmp_path / "aro", [{"image_path": "0.png", "true_caption": "x"}])
    with pytest.raises(ValueError, match="case 0 lacks"):
        load_aro_cases(folder, "VG-Relation")


def test_product_benchmark_and_cli_end_to_end(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, capsys):
    from slip_hf.cli import main

    assert main(["make-structure-benchmark", "--dataset_dir", str(graph_dataset_dir), "--out_dir", str(tmp_path / "bench"),
                 "--num_cases", "20", "--image_size", "16"]) == 0
    attribution = json.loads((tmp_path / "bench" / "visual_genome_attribution.json").read_text())
    relation = json.loads((tmp_path / "bench" / "visual_genome_relation.json").read_text())
    assert len(attribution) == 20 and relation
    first = attribution[0]
    assert sorted(first["true_caption"].split()) == sorted(first["false_caption"].split())  # same words, other binding
    assert relation[0]["true_caption"].split(" for ") == relation[0]["false_caption"].split(" for ")[::-1]
    assert main(["evaluate-aro", "--aro_dir", str(tmp_path / "bench"), "--model_name_or_path", tiny_clip_checkpoint,
                 "--max_text_length", "24", "--output_file", str(tmp_path / "aro.json")]) == 0
    assert "VG-Attribution macro" in capsys.readouterr().out
    scores = json.loads((tmp_path / "aro.json").read_text())[tiny_clip_checkpoint]
    assert scores["VG-Attribution"]["num_cases"] == 20 and 0 <= scores["VG-Relation"]["accuracy"] <= 1


def test_margin_loss_is_mean_over_items_with_negatives_in_the_model(clip_config, model_inputs):
    model = _model(clip_config, lambda_structure_clip_margin=1.0)
    inputs = {**model_inputs, "negative_input_ids": model_inputs["input_ids"].flip(1),
              "negative_attention_mask": model_inputs["attention_mask"], "negative_mask": torch.tensor([1, 1, 0, 0, 1]).bool()}
    output = model(**inputs, return_loss=True)
    negatives = F.normalize(model.get_text_features(inputs["negative_input_ids"]).pooler_output, dim=-1)
    expected = semantic_margin_loss(output.image_embeds, output.text_embeds, negatives, inputs["negative_mask"], 0.1)
    assert output.loss_structure_clip_margin.item() == pytest.approx(expected.item(), rel=1e-6)
