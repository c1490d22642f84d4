import io

import pytest
from PIL import Image

from slip_hf.processing import NodeTransform
from slip_hf.toy import toy_image_processor


def _transform(tokenizer):
    return NodeTransform(toy_image_processor(16), tokenizer, max_length=16)


def test_transform_outputs_model_inputs(tokenizer):
    out = _transform(tokenizer)(
        {"node_id": [3], "title": ["acme red circle audio"], "image": [Image.new("RGB", (20, 24))], "label": [2]}
    )
    assert out["pixel_values"].shape == (1, 3, 16, 16)
    assert out["input_ids"].shape == (1, 16) and out["input_ids"][0, 0] == tokenizer.bos_token_id
    assert out["labels"] == [2] and out["node_id"] == [3]


def test_empty_title_is_rejected_with_its_node_id(tokenizer):
    with pytest.raises(ValueError, match="node 7: empty 'title'"):
        _transform(tokenizer)({"node_id": [7], "title": ["  "], "image": [Image.new("RGB", (8, 8))]})


def test_corrupt_image_is_rejected_with_its_node_id(tokenizer):
    corrupt = io.BytesIO(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="node 9: image cannot be decoded"):
        _transform(tokenizer)({"node_id": [9], "title": ["ok"], "image": [corrupt]})
