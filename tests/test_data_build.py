"""The whole builder on generated Amazon-schema input: planted bad rows, resume, loading, card, Hub upload."""

import json
import math

import numpy as np
import pytest
import torch
from datasets import load_dataset
from transformers import CLIPModel

from slip_hf.data import (
    BuildConfig,
    build_dataset,
    generate_synthetic_raw,
    load_copurchase_graph,
    push_dataset_to_hub,
)
from slip_hf.data.clip_score import clip_t_scores
from slip_hf.embedding import encode_images, encode_texts
from slip_hf.toy import tiny_clip_config, toy_image_processor, train_toy_tokenizer


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    raw_dir = tmp_path_factory.mktemp("raw")
    summary = generate_synthetic_raw(raw_dir, num_bundles=10, shoppers_per_bundle=400, image_size=24, bad_row_rate=0.03, seed=1)
    return raw_dir, summary


def _config(raw_dir, out_dir, **overrides):
    return BuildConfig(**{"raw_dir": str(raw_dir), "out_dir": str(out_dir), "min_class_size": 5, "image_size": 24,
                          "download_workers": 4, "allow_local_files": True,
                          "on_bad_lines": "skip", **overrides})


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    raw_dir, _ = raw
    out_dir = tmp_path_factory.mktemp("dataset")
    return build_dataset(_config(raw_dir, out_dir)), out_dir


def _dropped(result, step_prefix):
    return next(record.dropped for record in result.steps if record.step.startswith(step_prefix))


def test_every_planted_bad_row_is_counted_where_it_is_dropped(raw, built):
    _, summary = raw
    result, _ = built
    purchases = result.stats["purchases"]
    assert purchases["malformed_reviews"] == summary.reviews_without_user
    assert purchases["duplicate_purchases"] == summary.repeated_reviews
    assert purchases["unverified_reviews"] == summary.unverified_reviews
    assert purchases["single_purchase_users"] == summary.single_purchase_users
    items = _dropped(result, "3.")
    assert items["no metadata"] == summary.items_without_metadata
    assert items["malformed metadata"] == summary.malformed_metadata_lines
    assert items["blank title"] == summary.blank_titles
    assert items["no image url"] == summary.items_without_images
    assert not any(_dropped(result, "4.").values())  # the core removes nobody here, so all planted images reach step 5
    images = _dropped(result, "5.")
    assert images == {
        "image invalid_url": summary.missing_image_files,
        "image not_image": summary.non_image_files,
        "image corrupt_image": summary.cut_off_images,
    }


def test_published_graph_is_a_k_core_with_a_60_10_30_split(built):
    result, out_dir = built
    graph = load_copurchase_graph(out_dir, "electronics")
    assert graph.num_nodes == result.num_nodes and graph.edges.num_rows == result.num_edges
    degree = graph.node_graph().degree()
    assert degree.min() >= 5
    sizes = {split: graph.nodes[split].num_rows for split in ("train", "validation", "test")}
    assert sizes == result.stats["splits"]
    assert sizes["train"] == round(0.6 * result.num_nodes) and sizes["validation"] == round(0.1 * result.num_nodes)
    assert set(graph.nodes["test"]["split"]) == {"test"}
    row = graph.nodes["train"][0]
    assert row["image"].size[0] >= 24 and row["title"].strip() and row["category_path"][0] == "Electronics"
    assert graph.nodes["train"].features["label"].names == list(result.stats["labels"])
    src, dst = np.asarray(graph.edges["src"]), np.asarray(graph.edges["dst"])
    assert (src < dst).all() and (np.asarray(graph.edges["count"]) >= 3).all()
    assert (np.asarray(graph.edges["first_time"]) <= np.asarray(graph.edges["last_time"])).all()


def test_pyg_view_matches_the_tables(built):
    result, out_dir = built
    data = load_copurchase_graph(out_dir, "electronics").to_pyg()
    assert data.num_nodes == result.num_nodes and data.edge_index.size(1) == 2 * result.num_edges
    assert int(data.train_mask.sum()) == result.stats["splits"]["train"] and not (data.train_mask & data.test_mask).any()
    assert (data.y >= 0).all()


def test_card_carries_the_builds_numbers(built):
    result, out_dir = built
    card = (out_dir / "README.md").read_text()
    assert "config_name: electronics_edges" in card and "path: electronics/train-*.parquet" in card
    assert f"| Electronics | {result.num_nodes / 1000:,.1f} | {result.num_edges / 1000:,.1f} |" in card
    assert "Graph signal" in card and "| 2-hop |" in card
    assert "## Time-aware use" in card and "temporal_cut=0.8" in card and "`center_crop_images=False`" in card
    signal = result.stats["graph_signal"]
    assert signal["2-hop"] > 5 * signal["random pairs"] and signal["1-hop"] < signal["2-hop"]  # 30 lines: random ~ 1/30
    assert json.loads((out_dir / "stats" / "electronics.json").read_text())["nodes"] == result.num_nodes
    assert load_dataset(str(out_dir), "electronics_edges", split="train").num_rows == result.num_edges


def test_rebuild_reuses_finished_steps_and_recomputes_changed_ones(raw, built):
    raw_dir, _ = raw
    result, out_dir = built
    again = build_dataset(_config(raw_dir, out_dir))
    assert [r.reused for r in again.steps[:3]] == [True, True, True]
    assert again.num_nodes == result.num_nodes and again.num_edges == result.num_edges
    changed = build_dataset(_config(raw_dir, out_dir, min_copurchase=4))
    assert [r.reused for r in changed.steps[:3]] == [True, False, False]
    assert changed.num_edges < result.num_edges
    build_dataset(_config(raw_dir, out_dir))  # leave the module's dataset as the other tests expect it


def test_bipartite_kcore_order(raw, tmp_path):
    raw_dir, _ = raw
    with pytest.raises(ValueError, match="left no node"):  # synthetic shoppers buy <= 4 items: no user has 5
        build_dataset(_config(raw_dir, tmp_path / "bip5", kcore_on="bipartite"))
    result = build_dataset(_config(raw_dir, tmp_path / "bip", kcore_on="bipartite", kcore_k=2, config_name="bip"))
    steps = [record.step for record in result.steps]
    assert steps[1].startswith("3.") and "bipartite" in steps[2]  # no separate edge step: edges follow the core
    graph = load_copurchase_graph(tmp_path / "bip", "bip")
    assert graph.num_nodes == result.num_nodes > 0 and graph.node_graph().degree().min() >= 1


def test_review_texts_are_kept_most_helpful_first(raw, tmp_path):
    raw_dir, _ = raw
    build_dataset(_config(raw_dir, tmp_path / "rev", max_reviews_per_node=2))
    nodes = load_copurchase_graph(tmp_path / "rev", "electronics").nodes["train"]
    counts = [len(reviews) for reviews in nodes["reviews"]]
    assert max(counts) == 2 and min(counts) >= 1


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("clip")
    tokenizer = train_toy_tokenizer(["acme red headphones model 1", "zenith blue phone cases"], vocab_size=300, max_length=32)
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config(tokenizer, hidden_size=32, image_size=24, patch_size=8, projection_dim=16)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    toy_image_processor(24).save_pretrained(directory)
    return directory


def test_clip_t_is_100_times_the_cosine(tiny_clip_dir, raw):
    raw_dir, _ = raw
    images = sorted((raw_dir / "images").glob("*.jpg"))[:3]
    titles, descriptions = ["red headphones", "blue case", "acme"], ["a description", "", "another"]
    title_scores, description_scores = clip_t_scores(str(tiny_clip_dir), images, titles, descriptions, batch_size=2, device="cpu")
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    from transformers import AutoImageProcessor, AutoTokenizer

    image_embeds = encode_images(model, AutoImageProcessor.from_pretrained(tiny_clip_dir), images)
    text_embeds = encode_texts(model, AutoTokenizer.from_pretrained(tiny_clip_dir), titles)
    np.testing.assert_allclose(title_scores, 100 * (image_embeds * text_embeds).sum(-1).numpy(), atol=1e-4)
    assert math.isnan(description_scores[1]) and not math.isnan(description_scores[0])


def test_clip_t_threshold_drops_nodes_and_reaches_the_card(raw, tiny_clip_dir, tmp_path):
    raw_dir, _ = raw
    result = build_dataset(_config(raw_dir, tmp_path / "clip", clip_t_model=str(tiny_clip_dir), min_clip_t=0.0))
    (dropped,) = _dropped(result, "6.").values()
    assert dropped > 0  # a random CLIP puts about half the pairs below cosine 0
    assert result.stats["clip_t"]["title"]["count"] == result.num_nodes
    nodes = load_copurchase_graph(tmp_path / "clip", "electronics").nodes
    assert min(min(split["clip_t_title"]) for split in nodes.values()) >= 0.0
    assert "CLIP-T title" in (tmp_path / "clip" / "README.md").read_text()


def test_push_uploads_the_folder_without_work_files(built, fake_hub):
    _, out_dir = built
    url = push_dataset_to_hub(out_dir, "me/amazon-copurchase-mm", private=True)
    assert url.endswith("/commit/abc")
    assert fake_hub["create"] == ("me/amazon-copurchase-mm", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert fake_hub["upload"]["repo_type"] == "dataset" and fake_hub["upload"]["folder_path"] == str(out_dir)
    assert ".work/*" in fake_hub["upload"]["ignore_patterns"]


def test_bad_config_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="kcore_on"):
        BuildConfig(out_dir=str(tmp_path), kcore_on="users")
    with pytest.raises(ValueError, match="train_fraction"):
        BuildConfig(out_dir=str(tmp_path), train_fraction=0.9, validation_fraction=0.2)
    with pytest.raises(FileNotFoundError, match="review_categories"):
        build_dataset(BuildConfig(raw_dir=str(tmp_path), out_dir=str(tmp_path / "o")))
