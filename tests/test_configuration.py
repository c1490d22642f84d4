import pytest
from transformers import AutoConfig, CLIPConfig

from slip_hf import SlipConfig


def test_defaults_are_the_papers():
    config = SlipConfig()
    assert (config.graph_num_layers, config.graph_hidden_size, config.graph_num_heads) == (2, 512, 4)
    assert config.graph_dropout == 0.1 and config.hops == 1 and config.hop_mode == "within"
    assert (config.lambda_graph, config.lambda_aux) == (0.05, 0.1)
    assert config.graph_temperature_init == 0.07 and config.learnable_graph_temperature
    assert config.graph_loss_exclude_self is False
    assert config.num_labels == 0
    assert isinstance(config.clip_config, CLIPConfig)


def test_round_trip_through_dict_and_directory(tmp_path, clip_config):
    config = SlipConfig(clip_config=clip_config, num_labels=7, hops=2, hop_mode="exact", lambda_graph=0.2)
    assert SlipConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SlipConfig)
    assert {**loaded.to_dict(), "_name_or_path": ""} == config.to_dict()
    assert loaded.clip_config.text_config.vocab_size == clip_config.text_config.vocab_size
    assert loaded.num_labels == 7


def test_zero_labels_survive_a_round_trip(tmp_path):
    SlipConfig().save_pretrained(tmp_path)
    assert SlipConfig.from_pretrained(tmp_path).num_labels == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"graph_hidden_size": 10, "graph_num_heads": 4}, "divisible"),
        ({"hops": 0}, "hops"),
        ({"hop_mode": "nearby"}, "hop_mode"),
        ({"graph_temperature_init": 0.0}, "graph_temperature_init"),
        ({"lambda_graph": -1.0}, "lambda"),
        ({"graph_num_layers": 0}, "graph_num_layers"),
    ],
)
def test_invalid_values_fail_with_a_clear_message(kwargs, message):
    with pytest.raises(Exception, match=message):
        SlipConfig(**kwargs)
