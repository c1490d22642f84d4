"""`training/run_slip.py` end to end on a small built dataset: checkpoints, metrics, card, plots, baseline,
recipes, resuming, Hub upload, and `slip-hf evaluate`."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import slip_hf
from slip_hf import SlipModel
from slip_hf.cli import main as cli_main
from slip_hf.experiment import parse_arguments, run_experiment
from slip_hf.model_card import push_model_to_hub

ROOT = Path(__file__).resolve().parents[1]


def _run_slip_main():
    spec = importlib.util.spec_from_file_location("run_slip", ROOT / "training" / "run_slip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _flags(dataset, clip, output_dir, *extra):
    return [
        "--model_name_or_path", clip, "--dataset_name", str(dataset), "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "32", "--per_device_eval_batch_size", "64", "--max_steps", "6",
        "--eval_strategy", "steps", "--eval_steps", "3", "--save_strategy", "steps", "--save_steps", "3",
        "--load_best_model_at_end", "True", "--metric_for_best_model", "mrr", "--learning_rate", "1e-3",
        "--graph_hidden_size", "32", "--max_text_length", "24", "--few_shot", "1", "2", "--report_to", "none",
        "--logging_steps", "2", "--disable_tqdm", "True", *extra,
    ]


@pytest.fixture(scope="module")
def slip_run(graph_dataset_dir, tiny_clip_checkpoint, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("slip_run")
    assert _run_slip_main()(_flags(graph_dataset_dir, tiny_clip_checkpoint, output_dir)) == 0
    return output_dir


def test_run_slip_writes_model_results_card_and_plots(slip_run):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json", "README.md",
                 "test_results.json", "test_results.md", "run_config.json", "test_embeddings.safetensors"):
        assert (slip_run / name).is_file(), name
    assert sorted(p.name for p in slip_run.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    results = json.loads((slip_run / "test_results.json").read_text())["SLIP"][0]
    assert 0 < results["retrieval"]["mrr"] <= 1 and results["num_nodes"] > 20
    assert {"zero_shot", "few_shot", "alignment", "related_items"} <= set(results)
    related = results["related_items"]
    assert set(related) == {"image", "text", "mean", "Z"} and related["text"]["num_queries"] > 0
    assert 0 < related["text"]["mrr"] <= 1 and "## Related items" in (slip_run / "test_results.md").read_text()
    assert set(results["link_prediction"]) == {"image", "text", "mean", "Z", "probe"}
    links = results["link_prediction"]["mean"]
    assert links["num_positives"] > 0 and 0 < links["mrr"] <= 1
    assert links["hits_at_100"] == 1.0 and links["num_negatives"] < 100  # a small split: fewer negatives than ranks
    protocol = results["graph_protocol"]
    assert protocol["positives_count"] + protocol["observed_edges"] == protocol["known_edges"]  # a random half held out
    assert protocol["positives_count"] == links["num_positives"]
    card = (slip_run / "README.md").read_text()
    assert "Related items:" in card
    environment = json.loads((slip_run / "run_config.json").read_text())["environment"]  # what the run ran on
    assert environment["versions"]["torch"] == torch.__version__ and environment["versions"]["slip_hf"] == slip_hf.__version__
    assert set(environment["versions"]) == {"python", "torch", "transformers", "datasets", "accelerate", "torch_geometric",
                                            "huggingface_hub", "slip_hf"}
    assert environment["hardware"]["gpu"] == "none" and environment["hardware"]["world_size"] == 1
    assert environment["hardware"]["processor"] and "not installed" not in environment["versions"].values()
    assert "## Training environment" in card and f"torch {torch.__version__}" in card
    assert "model-index" in card and f"value: {round(results['retrieval']['mrr'], 4)}" in card
    assert "type: link-prediction" in card and "name: mrr (probe)" in card and "name: ndcg_at_10 (Z)" in card
    for plot in ("similarity_by_hop.png", "retrieval_grid.png"):
        with Image.open(slip_run / plot) as image:
            assert image.size[0] > 500 and len(set(image.convert("L").getdata())) > 20  # not a blank canvas


def test_trained_model_loads_and_embeds_without_a_graph(slip_run):
    model = SlipModel.from_pretrained(slip_run).eval()
    assert model.config.use_graph and model.classifier is not None
    with torch.no_grad():
        image = model.get_image_features(pixel_values=torch.randn(2, 3, 16, 16)).pooler_output
    assert image.shape == (2, 16)


def test_validation_mrr_is_logged_and_selects_the_checkpoint(slip_run):
    state = json.loads((slip_run / "checkpoint-6" / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_mrr" in entry]
    assert [entry["step"] for entry in evaluations] == [3, 6]
    best = max(evaluations, key=lambda entry: entry["eval_mrr"])
    assert state["best_metric"] == pytest.approx(best["eval_mrr"]) and state["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")


def test_clip_baseline_has_no_graph_and_no_aux(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    model_args, data_args, training_args = parse_arguments(
        _flags(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, "--baseline", "clip", "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2")
    )
    data_args.plots = False
    results = run_experiment(model_args, data_args, training_args)
    model = SlipModel.from_pretrained(tmp_path)
    assert not model.config.use_graph and model.classifier is None
    logged = [entry for entry in results["log_history"] if "loss" in entry]
    assert logged and all("loss_graph" not in entry and entry["loss"] == pytest.approx(entry["loss_clip"], rel=1e-4) for entry in logged)
    assert "CLIP (fine-tuned)" in json.loads((tmp_path / "test_results.json").read_text())


def test_yaml_recipe_then_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: some/clip\ndataset_name: data/\noutput_dir: out\nnum_train_epochs: 7\n"
                      "layer_lr_decay: 0.9\nfew_shot: [1, 3]\nload_best_model_at_end: true\neval_strategy: epoch\nsave_strategy: epoch\n")
    model_args, data_args, training_args = parse_arguments([str(recipe), "--num_train_epochs", "2"])
    assert model_args.model_name_or_path == "some/clip" and data_args.few_shot == [1, 3]
    assert training_args.num_train_epochs == 2 and training_args.layer_lr_decay == 0.9 and training_args.load_best_model_at_end


def test_shipped_paper_recipe_parses_with_the_papers_values():
    recipe = str(ROOT / "training" / "recipes" / "slip_electronics_vitb16.yaml")
    model_args, data_args, args = parse_arguments([recipe, "--bf16", "False"])  # the recipe targets GPUs
    assert model_args.model_name_or_path == "openai/clip-vit-base-patch16" and model_args.graph_hidden_size == 512
    assert (args.learning_rate, args.layer_lr_decay, args.graph_learning_rate, args.warmup_steps) == (1.6e-4, 0.8, 4e-3, 500)
    assert (args.num_train_epochs, args.early_stopping_patience, args.early_stopping_threshold) == (50, 10, 0.001)
    assert (args.lambda_graph, args.lambda_aux, args.metric_for_best_model) == (0.05, 0.1, "mrr")


def test_resume_continues_from_the_last_checkpoint(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    first = parse_arguments(_flags(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, "--max_steps", "3", "--load_best_model_at_end", "False"))
    first[1].test_split = ""
    run_experiment(*first)
    second = parse_arguments(_flags(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, "--resume_from_checkpoint", "True", "--load_best_model_at_end", "False"))
    second[1].test_split = ""
    results = run_experiment(*second)
    steps = [entry["step"] for entry in results["log_history"] if "loss" in entry]
    assert steps == [2, 4, 6] and results["train"]["epoch"] > 0  # steps 1-3 came from checkpoint-3's state


def test_model_push_uploads_without_checkpoints(slip_run, fake_hub):
    assert push_model_to_hub(slip_run, "me/slip-electronics").endswith("/commit/abc")
    assert fake_hub["create"][1]["repo_type"] == "model" and "checkpoint-*" in fake_hub["upload"]["ignore_patterns"]


def test_cli_evaluates_a_plain_clip_checkpoint(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, capsys):
    code = cli_main(["evaluate", "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir),
                     "--output_dir", str(tmp_path), "--name", "CLIP (random init)", "--few_shot", "1", "--max_text_length", "24"])
    assert code == 0
    results = json.loads((tmp_path / "test_results.json").read_text())["CLIP (random init)"][0]
    assert 0 < results["retrieval"]["mrr"] < 1 and "| CLIP (random init) (1 run) |" in capsys.readouterr().out
    assert (tmp_path / "similarity_by_hop.png").stat().st_size > 10_000 and (tmp_path / "retrieval_grid.png").is_file()


def test_cli_evaluates_new_relations_over_every_item_on_the_tensor_path(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.data.hub import load_copurchase_graph

    code = cli_main(["evaluate", "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir),
                     "--output_dir", str(tmp_path), "--name", "CLIP", "--few_shot", "1", "--max_text_length", "24",
                     "--temporal_cut", "0.75", "--graph_pool", "all", "--image_pipeline", "tensor"])
    assert code == 0
    protocol = json.loads((tmp_path / "test_results.json").read_text())["CLIP"][0]["graph_protocol"]
    split = load_copurchase_graph(graph_dataset_dir, "electronics", temporal_cut=0.75)
    assert protocol["positives"].startswith("future") and protocol["pool_size"] == split.num_nodes
    assert protocol["positives_count"] == split.future_graph().num_edges


def test_trainer_refuses_weighted_positives_without_edge_weights(graph_dataset_dir, clip_config, tmp_path):
    from slip_hf import SlipConfig
    from slip_hf.data.hub import load_copurchase_graph
    from slip_hf.trainer import SlipTrainer, SlipTrainingArguments

    graph = load_copurchase_graph(graph_dataset_dir, "electronics")
    model = SlipModel(SlipConfig(clip_config=clip_config.to_dict(), graph_hidden_size=32, positive_count_weighting="log"))
    args = SlipTrainingArguments(output_dir=str(tmp_path / "unused"), report_to="none")
    with pytest.raises(ValueError, match="graph has no weights"):
        SlipTrainer(model=model, args=args, graph=graph.node_graph())
    trainer = SlipTrainer(model=model, args=args, graph=graph.node_graph(model.config))
    assert trainer.graph.weight is not None and (trainer.graph.weight > 0).all()


def test_demo_end_to_end_at_toy_size(tmp_path, capsys):
    from slip_hf.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=str(tmp_path), seeds=[0], num_bundles=10, image_size=16, hidden_size=32, num_layers=1,
                        epochs=1, batch_size=32)
    result = run_demo(config)
    assert set(result["runs"]) == {"CLIP (fine-tuned)", "SLIP (graph + aux)"}
    assert all(0 < mrr < 1 for mrr in result["mean_mrr"].values())
    printed = capsys.readouterr().out
    assert "| CLIP (fine-tuned) (1 run) |" in printed and "| SLIP (graph + aux) (1 run) |" in printed
    for name in ("demo_results.json", "demo_results.md", "similarity_by_hop.png", "retrieval_grid.png", "demo_config.json"):
        assert (tmp_path / name).is_file(), name
    with Image.open(tmp_path / "similarity_by_hop.png") as figure:
        assert figure.size[0] > 800  # two panels side by side
    # the Trainer's log lines went to each run's file, not between the demo's own lines
    captured = printed + capsys.readouterr().err
    assert "{'loss'" not in captured and "{'eval_loss'" not in captured
    logged = [json.loads(line) for line in (tmp_path / "runs" / "slip-seed0" / "trainer_log.jsonl").read_text().splitlines()]
    assert any("loss_graph" in entry for entry in logged) and any("eval_mrr" in entry for entry in logged)


def test_demo_on_a_siglip_backbone_at_toy_size(tmp_path, capsys):
    from slip_hf.demo import DemoConfig, run_demo

    config = DemoConfig(out_dir=str(tmp_path), seeds=[0], num_bundles=10, image_size=16, hidden_size=32, num_layers=1,
                        epochs=1, batch_size=32, backbone="siglip")
    result = run_demo(config)
    assert set(result["runs"]) == {"SigLIP (fine-tuned)", "SLIP on SigLIP (graph + aux)"}
    assert json.loads((tmp_path / "siglip-init" / "config.json").read_text())["model_type"] == "siglip"
    assert "| SLIP on SigLIP (graph + aux) (1 run) |" in capsys.readouterr().out
    assert (tmp_path / "demo-siglip_results.md").is_file()


def test_ablation_tables_have_the_papers_rows(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.ablation import AblationArguments, run_ablation

    ablation, model_args, data_args, training_args = parse_arguments(
        ["--table", "both", "--seeds", "0", "--batch_sizes", "8", "16", *_flags(graph_dataset_dir, tiny_clip_checkpoint, tmp_path,
         "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "False", "--few_shot", "1")],
        extra=(AblationArguments,),
    )
    result = run_ablation(ablation, model_args, data_args, training_args)
    lines = result["markdown"].split("## Leaderboard")[0].splitlines()  # the tables; each leaderboard follows them
    assert [line.split(" | ")[0:2] for line in lines if line.startswith("| 8 ") or line.startswith("| 16 ")] == [
        ["| 8", "w/o G"], ["| 8", "w/ G"], ["| 16", "w/o G"], ["| 16", "w/ G"]]
    components = [line for line in lines if line.startswith("| CLIP fine-tune") or line.startswith("| +")]
    assert [line.split(" | ")[:4] for line in components] == [
        ["| CLIP fine-tune (baseline)", "-", "-", "✓"], ["| + Graph only", "✓", "-", "✓"],
        ["| + Graph + Aux", "✓", "✓", "✓"], ["| + Graph + Aux, no DLR", "✓", "✓", "-"]]
    graph_only = SlipModel.from_pretrained(tmp_path / "graph" / "seed0")
    assert graph_only.config.use_graph and graph_only.classifier is None
    no_dlr = json.loads((tmp_path / "graph_aux_no_dlr" / "seed0" / "run_config.json").read_text())
    assert no_dlr["training"]["layer_lr_decay"] == 1.0
    assert (tmp_path / "ablation_results.md").read_text() == result["markdown"]


def test_ablation_objectives_table_has_one_row_per_objective_set(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.ablation import AblationArguments, run_ablation
    from slip_hf.data.structure_benchmark import write_product_structure_benchmark

    write_product_structure_benchmark(graph_dataset_dir, tmp_path / "aro", num_cases=8, image_size=16)
    ablation, model_args, data_args, training_args = parse_arguments(
        ["--table", "objectives", "--seeds", "0", "--aro_dir", str(tmp_path / "aro"),
         *_flags(graph_dataset_dir, tiny_clip_checkpoint, tmp_path,
         "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "False", "--few_shot", "1")],
        extra=(AblationArguments,),
    )
    result = run_ablation(ablation, model_args, data_args, training_args)
    table, board = result["markdown"].split("## Leaderboard")
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert "| VG-Attribution macro | VG-Relation macro |" in board.splitlines()[2]  # the leaderboard has ARO columns
    assert lines[0].endswith("| VG-Attribution all | VG-Attribution macro | VG-Relation all | VG-Relation macro |")
    rows = [line.split(" | ")[:2] for line in lines[1:]]
    assert all(0 <= float(line.split(" | ")[-1].rstrip(" |")) <= 1 for line in lines[1:])  # relation macro: one group
    assert rows == [
        ["| CLIP", "clip"], ["| SLIP", "clip, graph, aux"],
        ["| StructXLIP", "clip, structxlip_global, structxlip_local, structxlip_consistency"],
        ["| SLIP + StructXLIP", "clip, graph, aux, structxlip_global, structxlip_local, structxlip_consistency"],
        ["| SLIP + Structure-CLIP", "clip, graph, aux, structure_clip_margin, structure_clip_hinge"],
        ["| SLIP + StructXLIP + Structure-CLIP", "clip, graph, aux, structxlip_global, structxlip_local, "
         "structxlip_consistency, structure_clip_margin, structure_clip_hinge"],
    ]
    assert SlipModel.from_pretrained(tmp_path / "objectives_all" / "seed0").knowledge_encoder is not None
    structxlip = SlipModel.from_pretrained(tmp_path / "objectives_structxlip" / "seed0")
    assert structxlip.config.lambda_structxlip_global == 0.5 and not structxlip.config.use_graph
    both = json.loads((tmp_path / "objectives_slip_structxlip" / "seed0" / "run_config.json").read_text())
    assert both["training"]["lambda_structxlip_local"] == 0.1 and both["model"]["baseline"] == "slip"


def test_ablation_temporal_table_trains_before_the_cut_and_scores_the_new_relations(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.ablation import TEMPORAL_VARIANTS, AblationArguments, run_ablation
    from slip_hf.data.hub import load_copurchase_graph

    ablation, model_args, data_args, training_args = parse_arguments(
        ["--table", "temporal", "--seeds", "0", "--temporal_cut", "0.7", "--graph_pool", "all",
         *_flags(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, "--max_steps", "2", "--eval_strategy", "no",
                 "--save_strategy", "no", "--load_best_model_at_end", "False", "--few_shot", "1")],
        extra=(AblationArguments,),
    )
    result = run_ablation(ablation, model_args, data_args, training_args)
    table = result["markdown"].split("## Leaderboard")[0]
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == [f"| {name}" for name in TEMPORAL_VARIANTS]
    assert "| Link Z MRR |" in result["markdown"] and "| Link probe H@50 |" in result["markdown"]
    split = load_copurchase_graph(graph_dataset_dir, "electronics", temporal_cut=0.7)
    for results in result["results"]["temporal"].values():
        protocol = results[0]["graph_protocol"]
        # every item is in the pool: the positives are all the new relations, the observed graph all the old ones
        assert protocol["pool_size"] == split.num_nodes and protocol["temporal_cut_time"] == split.cut_time
        assert protocol["positives_count"] == split.future_graph().num_edges
        assert protocol["observed_edges"] == split.node_graph().num_edges
    decay = SlipModel.from_pretrained(tmp_path / "temporal_slip_decay" / "seed0")
    assert decay.config.positive_recency == "decay" and decay.config.use_graph
    card = (tmp_path / "temporal_slip_decay" / "seed0" / "README.md").read_text()
    assert "| `temporal_cut` | 0.7 |" in card and "| `positive_recency` | decay |" in card
