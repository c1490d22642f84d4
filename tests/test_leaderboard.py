"""The evidence table: the leaderboard from run folders, Table 3 at equal steps with learning-rate scaling, and
reports that never print a misleading number (a collapsed link probe, ARO's macro over no large group)."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from slip_hf.cli import main as cli_main


def _results(mrr: float, r1: float, probe: float | None, z: float | None = None, aro: float | None = None) -> dict:
    link = {"mean": {"mrr": mrr / 2}, "probe": {"mrr": probe} if probe is not None else {"collapsed": True}}
    if z is not None:
        link["Z"] = {"mrr": z}
    results = {"retrieval": {"mrr": mrr, "recall_at_1": r1}, "related_items": {"mean": {"mrr": mrr / 3}},
               "link_prediction": link, "zero_shot": {"accuracy": 0.2}, "few_shot": {"5shot_accuracy": 0.3}}
    if aro is not None:
        results["aro"] = {"VG-Attribution macro": aro, "VG-Attribution all": 0.55}
    return results


ENVIRONMENT = {"versions": {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0"},
               "hardware": {"processor": "AMD EPYC", "gpu": "none", "world_size": 1}}


def _run_folder(root, name: str, label: str, seed: int, results: dict, environment=ENVIRONMENT, **settings) -> str:
    folder = root / f"{label}-seed{seed}"
    folder.mkdir()
    (folder / "test_results.json").write_text(json.dumps({name: [results]}))
    config = {"model": {"baseline": settings.get("baseline", "slip")},
              "data": {"dataset_name": "data/"},
              "training": {"seed": seed, "output_dir": str(folder), "logging_dir": str(folder / "runs"),
                           "per_device_train_batch_size": settings.get("batch", 128), "learning_rate": 0.001},
              "environment": environment}
    (folder / "run_config.json").write_text(json.dumps(config))
    return str(folder)


def test_leaderboard_from_run_folders_groups_seeds_and_marks_the_best(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    folders = [
        _run_folder(runs, "CLIP (fine-tuned)", "clip", 0, _results(0.30, 0.10, 0.20), baseline="clip"),
        _run_folder(runs, "CLIP (fine-tuned)", "clip", 1, _results(0.32, 0.12, 0.22), baseline="clip"),
        _run_folder(runs, "SLIP", "slip", 0, _results(0.36, 0.14, 0.25, z=0.40)),
        _run_folder(runs, "SLIP", "slip", 1, _results(0.34, 0.16, None, z=0.42)),  # its probe collapsed
        _run_folder(runs, "SLIP", "slip512", 0, _results(0.20, 0.05, 0.10, z=0.30), batch=512),
    ]
    out = tmp_path / "board"
    assert cli_main(["leaderboard", *folders[:2], str(runs), "--output_dir", str(out)]) == 0  # a parent folder is searched
    table = (out / "leaderboard.md").read_text()
    lines = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    header = lines.pop("Method")
    assert header.split(" | ")[1:4] == ["Seeds", "Same-item MRR", "Same-item R@1"]
    assert set(lines) == {"CLIP (fine-tuned)", "SLIP (per_device_train_batch_size=128)", "SLIP (per_device_train_batch_size=512)"}
    slip = lines["SLIP (per_device_train_batch_size=128)"].split(" | ")
    assert slip[1] == "2" and slip[2] == "**0.350 ± 0.010**" and slip[3] == "**0.150 ± 0.010**"
    assert lines["CLIP (fine-tuned)"].split(" | ")[2] == "0.310 ± 0.010" and lines["CLIP (fine-tuned)"].split(" | ")[1] == "2"
    assert slip[7] == "**0.250** (1 of 2 collapsed)"  # the collapsed seed is left out, and the cell says so
    assert lines["CLIP (fine-tuned)"].split(" | ")[6] == "-"  # CLIP has no Z
    summary = json.loads((out / "leaderboard.json").read_text())
    assert summary["methods"]["SLIP (per_device_train_batch_size=128)"]["Link MRR (probe)"]["n"] == 1
    assert summary["environments"]["CLIP (fine-tuned)"] == [ENVIRONMENT]  # two seeds, one environment
    assert table.rstrip().endswith("All runs: Python 3.11.7, torch 2.13.0, transformers 5.24.0; AMD EPYC, no GPU, 1 process.")
    with Image.open(out / "leaderboard.png") as figure:
        assert figure.size[0] > 800 and len(set(figure.convert("L").getdata())) > 20
    assert cli_main(["leaderboard", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_runs_from_other_versions_or_hardware_get_a_footnote_naming_what_differs(tmp_path):
    newer = {"versions": {**ENVIRONMENT["versions"], "transformers": "5.25.0"},
             "hardware": {**ENVIRONMENT["hardware"], "processor": "Intel Xeon"}}
    folders = [_run_folder(tmp_path, "SLIP", "slip", 0, _results(0.3, 0.1, 0.2)),
               _run_folder(tmp_path, "SLIP", "slip", 1, _results(0.3, 0.1, 0.2), environment=newer),
               _run_folder(tmp_path, "CLIP (fine-tuned)", "clip", 0, _results(0.3, 0.1, 0.2), environment={}, baseline="clip")]
    assert cli_main(["leaderboard", *folders[:2], "--output_dir", str(tmp_path / "two")]) == 0
    table = (tmp_path / "two" / "leaderboard.md").read_text()
    assert "different environments (differing: transformers, processor)" in table
    assert json.loads((tmp_path / "two" / "leaderboard.json").read_text())["environments"]["SLIP"] == [ENVIRONMENT, newer]
    assert cli_main(["leaderboard", folders[0], folders[2], "--output_dir", str(tmp_path / "old")]) == 0  # a 0.2 run
    assert "differing: unrecorded" in (tmp_path / "old" / "leaderboard.md").read_text()


def test_every_seed_with_a_collapsed_probe_or_no_aro_group_says_so(tmp_path):
    from slip_hf.evaluation.leaderboard import leaderboard_table

    rows = {"SLIP": [_results(0.3, 0.1, None, aro=float("nan")), _results(0.3, 0.1, None, aro=float("nan"))]}
    table = leaderboard_table(rows)
    assert "probe collapsed (constant scores)" in table
    assert "n/a (no pair with ≥ 25 cases; overall 0.550)" in table and "nan" not in table


def test_a_collapsed_link_probe_is_reported_not_scored(node_graph, caplog, monkeypatch):
    from slip_hf.evaluation.graph_metrics import graph_metrics, scores_are_constant
    from slip_hf.evaluation.runner import graph_metric_table

    nodes = np.arange(node_graph.num_nodes)
    embeddings = torch.nn.functional.normalize(torch.randn(node_graph.num_nodes, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    # a probe that collapsed: every node gets the same representation (dead ReLUs after a short training)
    monkeypatch.setattr("slip_hf.evaluation.graph_metrics.train_link_probe", lambda features, *a, **k: torch.ones(features.size(0), 4))
    with caplog.at_level(logging.WARNING, logger="slip_hf.evaluation.graph_metrics"):
        metrics = graph_metrics(embeddings, embeddings, nodes, node_graph, probe_epochs=5, link_negatives=20)
    assert metrics["link_prediction"]["probe"] == {"collapsed": True, "num_positives": metrics["graph_protocol"]["positives_count"],
                                                   "num_negatives": 20}
    assert "probe collapsed" in caplog.text and "MRR 1/21 by construction" in caplog.text
    table = graph_metric_table({"CLIP": [metrics]}, "link_prediction")
    assert "| CLIP | probe | probe collapsed (constant scores) |" in table
    assert 0 < metrics["link_prediction"]["mean"]["mrr"] < 1  # the other scorers are reported as usual
    assert scores_are_constant(torch.full((3,), 0.5), torch.full((3, 4), 0.5 + 1e-9))
    assert not scores_are_constant(torch.tensor([0.5, 0.6]), torch.full((2, 4), 0.5))


def test_aro_macro_over_no_large_group_is_na_with_the_overall_accuracy():
    from slip_hf.evaluation.aro import aro_accuracy, aro_table

    cases = [{"attributes": ["red", "blue"]}] * 10 + [{"attributes": ["green", "black"]}] * 6
    result = aro_accuracy("VG-Attribution", np.array([True] * 12 + [False] * 4), cases)
    assert np.isnan(result.macro_accuracy) and result.accuracy == 0.75
    table = aro_table({"model": {"VG-Attribution": result}})
    assert "| model | n/a (no pair with ≥ 25 cases) | 0.750 |" in table and "nan" not in table


def test_table3_at_equal_steps_scales_the_learning_rate_with_the_batch(graph_dataset_dir, tiny_clip_checkpoint, tmp_path):
    from slip_hf.ablation import AblationArguments, run_ablation, scaled_learning_rate
    from slip_hf.experiment import parse_arguments

    ablation, model_args, data_args, training_args = parse_arguments([
        "--table", "batch_size", "--batch_sizes", "8", "32", "--seeds", "0", "--equal_steps", "3", "--lr_scaling", "linear",
        "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir), "--output_dir", str(tmp_path),
        "--per_device_train_batch_size", "16", "--learning_rate", "1e-3", "--graph_learning_rate", "4e-3",
        "--num_train_epochs", "50", "--graph_hidden_size", "32", "--max_text_length", "24", "--few_shot", "1",
        "--report_to", "none", "--disable_tqdm", "True", "--save_strategy", "no",
    ], extra=(AblationArguments,))
    result = run_ablation(ablation, model_args, data_args, training_args)
    table = result["markdown"]
    assert "every row trains 3 optimizer steps (equal steps; epochs differ); learning rates scaled linearly with the batch: lr(b) = lr x b / 16." in table
    rows = [line.split(" | ") for line in table.split("## Leaderboard")[0].splitlines() if line.startswith(("| 8 ", "| 32 "))]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("| 8", "w/o G", "3", "0.0005"), ("| 8", "w/ G", "3", "0.0005"),
                                                        ("| 32", "w/o G", "3", "0.002"), ("| 32", "w/ G", "3", "0.002")]
    assert float(rows[0][3]) < float(rows[2][3])  # the same steps are more epochs at the larger batch
    used = json.loads((tmp_path / "batch32-graph" / "seed0" / "run_config.json").read_text())["training"]
    assert used["max_steps"] == 3 and used["learning_rate"] == pytest.approx(2e-3) and used["graph_learning_rate"] == pytest.approx(8e-3)
    assert (tmp_path / "leaderboard.png").is_file() and "| batch 32, w/ G | 1 |" in table
    assert "All runs: Python " in table and "slip_hf " in (tmp_path / "leaderboard.md").read_text()  # what they ran on
    assert scaled_learning_rate(1e-3, 64, 16, "sqrt") == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_learning_rate(1e-3, 64, 16, "cubic")


def test_leaderboard_scores_aro_once_per_run_and_reuses_it(graph_dataset_dir, tiny_clip_checkpoint, tmp_path, monkeypatch):
    from slip_hf.data.structure_benchmark import write_product_structure_benchmark
    from slip_hf.experiment import parse_arguments, run_experiment

    write_product_structure_benchmark(graph_dataset_dir, tmp_path / "aro", num_cases=8, image_size=16)
    run = tmp_path / "run"
    run_experiment(*parse_arguments([
        "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir), "--output_dir", str(run),
        "--max_steps", "1", "--per_device_train_batch_size", "32", "--graph_hidden_size", "32", "--max_text_length", "24",
        "--few_shot", "1", "--report_to", "none", "--disable_tqdm", "True", "--plots", "False", "--save_strategy", "no",
    ]))
    arguments = ["leaderboard", str(run), "--aro_dir", str(tmp_path / "aro"), "--output_dir", str(tmp_path / "board")]
    assert cli_main(arguments) == 0
    cached = json.loads((run / "aro_results.json").read_text())
    assert set(cached["scores"]) == {"VG-Attribution macro", "VG-Attribution all", "VG-Relation macro", "VG-Relation all"}
    assert "VG-Relation macro" in (tmp_path / "board" / "leaderboard.md").read_text()
    calls = []
    monkeypatch.setattr("slip_hf.evaluation.aro.evaluate_aro", lambda *a, **k: calls.append(a) or {})
    assert cli_main(arguments) == 0 and calls == []  # the second run reads the cache
    (run / "model.safetensors").touch()  # new weights: scored again
    assert cli_main(arguments) == 0 and len(calls) == 1
