import pytest
from transformers import CLIPConfig, SiglipConfig, Trainer

from slip_hf import SlipConfig, SlipModel
from slip_hf.optimization import clip_layer_depth, slip_parameter_groups


def _vit_b16_sized_config(family="clip"):
    # ViT-B/16 has 12 layers per tower: embeddings = 13 levels below the top
    towers = {"text_config": {"num_hidden_layers": 12}, "vision_config": {"num_hidden_layers": 12}}
    if family == "siglip":
        return SlipConfig(clip_config=SiglipConfig(**towers))
    return SlipConfig(clip_config=CLIPConfig(**towers))


def test_layer_depths_of_clip_parameters():
    config = _vit_b16_sized_config()
    assert clip_layer_depth("clip.text_model.embeddings.token_embedding.weight", config) == (0, 13)
    assert clip_layer_depth("clip.vision_model.pre_layrnorm.weight", config) == (0, 13)
    assert clip_layer_depth("clip.vision_model.encoder.layers.0.mlp.fc1.weight", config) == (1, 13)
    assert clip_layer_depth("clip.text_model.encoder.layers.11.mlp.fc1.weight", config) == (12, 13)
    assert clip_layer_depth("clip.text_projection.weight", config) == (13, 13)
    assert clip_layer_depth("clip.logit_scale", config) == (13, 13)


def test_layer_depths_of_siglip_parameters():
    config = _vit_b16_sized_config("siglip")
    assert clip_layer_depth("clip.text_model.embeddings.token_embedding.weight", config) == (0, 13)
    assert clip_layer_depth("clip.vision_model.embeddings.patch_embedding.weight", config) == (0, 13)
    assert clip_layer_depth("clip.vision_model.encoder.layers.0.mlp.fc1.weight", config) == (1, 13)
    assert clip_layer_depth("clip.text_model.encoder.layers.11.mlp.fc1.weight", config) == (12, 13)
    assert clip_layer_depth("clip.text_model.head.weight", config) == (13, 13)  # SigLIP's text head: its projection
    assert clip_layer_depth("clip.vision_model.head.probe", config) == (13, 13)  # the attention-pooling head
    assert clip_layer_depth("clip.logit_bias", config) == (13, 13)


def _model(num_layers=3):
    tower = {"hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": num_layers, "num_attention_heads": 1}
    clip = CLIPConfig(text_config=tower, vision_config={**tower, "image_size": 8, "patch_size": 4}, projection_dim=8)
    return SlipModel(SlipConfig(clip_config=clip, graph_hidden_size=8, num_labels=3))


def _lr_of(groups, model):
    return {name: group["lr"] for group in groups for name, p in model.named_parameters() if any(p is q for q in group["params"])}


@pytest.mark.parametrize(
    ("direction", "base_lr", "embedding_lr"),
    [
        ("shallower_lower", 1.6e-4, 1.6e-4 * 0.8**4),  # Table 4: base at the top, decaying downwards
        ("shallower_higher", 1e-5, 1e-5 / 0.8**4),  # §6.1: 1e-5 on the deepest layers, shallower ones higher
    ],
)
def test_param_groups_have_the_papers_learning_rates(direction, base_lr, embedding_lr):
    model = _model(num_layers=3)
    groups = slip_parameter_groups(
        model,
        base_lr=base_lr,
        graph_lr=4e-3,
        weight_decay=0.1,
        decay_parameter_names=Trainer.get_decay_parameter_names(None, model),
        layer_decay=0.8,
        direction=direction,
    )
    lrs = _lr_of(groups, model)
    assert lrs["clip.text_projection.weight"] == pytest.approx(base_lr)
    assert lrs["clip.logit_scale"] == pytest.approx(base_lr)
    assert lrs["clip.vision_model.encoder.layers.2.self_attn.q_proj.weight"] == pytest.approx(base_lr * 0.8 ** (1 if direction == "shallower_lower" else -1))
    assert lrs["clip.vision_model.encoder.layers.0.self_attn.q_proj.weight"] == pytest.approx(base_lr * 0.8 ** (3 if direction == "shallower_lower" else -3))
    assert lrs["clip.text_model.embeddings.token_embedding.weight"] == pytest.approx(embedding_lr)
    for head in ("vision_graph.layers.0.lin.weight", "fusion.dense.weight", "classifier.weight", "graph_logit_scale"):
        assert lrs[head] == 4e-3
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters())


def test_weight_decay_only_on_matrices():
    model = _model()
    groups = slip_parameter_groups(
        model, base_lr=1e-4, graph_lr=4e-3, weight_decay=0.2,
        decay_parameter_names=Trainer.get_decay_parameter_names(None, model),
    )
    decay = {id(p) for g in groups if g["weight_decay"] == 0.2 for p in g["params"]}
    params = dict(model.named_parameters())
    assert id(params["fusion.dense.weight"]) in decay
    for name in ("fusion.dense.bias", "fusion.layer_norm.weight", "clip.logit_scale", "graph_logit_scale"):
        assert id(params[name]) not in decay


def test_decay_of_one_switches_discriminative_lr_off():
    model = _model()
    groups = slip_parameter_groups(model, base_lr=1e-4, graph_lr=4e-3, weight_decay=0.0, decay_parameter_names=[], layer_decay=1.0)
    assert {g["lr"] for g in groups if g["group_name"].startswith("clip")} == {1e-4}


def test_unknown_direction_is_rejected():
    with pytest.raises(ValueError, match="direction"):
        slip_parameter_groups(_model(), base_lr=1, graph_lr=1, weight_decay=0, decay_parameter_names=[], direction="up")
