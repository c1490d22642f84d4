"""`slip-hf import-graph` on a small non-Amazon graph: papers with figures and citation edges, with every kind
of bad row at a known count, end to end through `run_slip.py`."""

import json

import numpy as np
import pandas as pd
import pytest
from sample_papers import FIELDS, write_papers

from slip_hf.cli import main as cli_main
from slip_hf.data.hub import load_copurchase_graph


@pytest.fixture(scope="module")
def papers(tmp_path_factory):
    return write_papers(tmp_path_factory.mktemp("papers") / "papers")


def test_import_counts_every_dropped_row_and_writes_the_build_layout(papers, tmp_path):
    out = tmp_path / "papers-mm"
    assert cli_main(["import-graph", "--nodes", str(papers / "papers.csv"), "--edges", str(papers / "citations.jsonl"),
                     "--out_dir", str(out), "--id_column", "paper", "--text_column", "title", "--image_column", "figure",
                     "--label_column", "field", "--description_column", "abstract", "--src_column", "citing",
                     "--dst_column", "cited", "--time_column", "date", "--category", "Papers with figures",
                     "--image_size", "16"]) == 0
    stats = json.loads((out / "stats" / "graph.json").read_text())
    steps = {step["step"]: step for step in stats["steps"]}
    assert steps["1. items"]["dropped"] == {"no id": 1, "repeated id": 1, "no text": 1, "no image": 1}
    assert steps["2. images"]["dropped"] == {"invalid_url": 2}  # the missing file and the one outside the folder
    # P4 -> P1 and P1 -> P4 repeat the within-field citation P1 -> P4: one edge, three citations
    assert steps["3. edges"]["dropped"] == {"dangling (unknown or dropped item)": 2, "self loops": 1, "repeated (merged)": 2}
    assert stats["nodes"] == 36 and stats["edges"] == 72
    graph = load_copurchase_graph(out, "graph")
    ids = np.sort(np.concatenate([np.asarray(split["node_id"]) for split in graph.nodes.values()]))
    assert np.array_equal(ids, np.arange(36)) and graph.nodes["train"].num_rows == round(0.6 * 36)
    assert graph.nodes["train"].features["label"].names == sorted(FIELDS)  # 12 papers each: ties by name
    merged = graph.edges.to_pandas()
    node_of = {p: n for split in graph.nodes.values() for p, n in zip(split["parent_asin"], split["node_id"])}
    pair = merged[(merged.src == min(node_of["P1"], node_of["P4"])) & (merged.dst == max(node_of["P1"], node_of["P4"]))].iloc[0]
    assert pair["count"] == 3 and pd.Timestamp(pair["first_time"], unit="ms").year == 2021 and pd.Timestamp(pair["last_time"], unit="ms").year == 2024
    card = (out / "README.md").read_text()
    assert "# Papers with figures" in card and "rows of `papers.csv`" in card and "Amazon Reviews 2023 (McAuley" not in card


def test_an_imported_graph_trains_through_run_slip(papers, tmp_path):
    import importlib.util
    from pathlib import Path

    from slip_hf.data.import_graph import ImportConfig, import_graph
    from slip_hf.toy import write_tiny_checkpoint

    out = tmp_path / "papers-mm"
    import_graph(ImportConfig(nodes=str(papers / "papers.csv"), edges=str(papers / "citations.jsonl"), out_dir=str(out),
                              id_column="paper", text_column="title", image_column="figure", label_column="field",
                              src_column="citing", dst_column="cited", image_size=16))
    titles = load_copurchase_graph(out, "graph").nodes["train"]["title"]
    clip = write_tiny_checkpoint(str(tmp_path / "clip"), titles, image_size=16, hidden_size=32, num_layers=1,
                                      projection_dim=16, vocab_size=200, max_length=24)
    spec = importlib.util.spec_from_file_location("run_slip", Path(__file__).resolve().parents[1] / "training" / "run_slip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = tmp_path / "run"
    assert module.main(["--model_name_or_path", clip, "--dataset_name", str(out), "--dataset_config", "graph",
                        "--output_dir", str(run), "--per_device_train_batch_size", "8", "--max_steps", "3",
                        "--eval_strategy", "no", "--save_strategy", "no", "--graph_hidden_size", "32",
                        "--max_text_length", "24", "--few_shot", "1", "--report_to", "none", "--plots", "False"]) == 0
    results = json.loads((run / "test_results.json").read_text())["SLIP"][0]
    assert 0 < results["retrieval"]["mrr"] <= 1 and results["num_nodes"] == load_copurchase_graph(out, "graph").nodes["test"].num_rows


def test_bad_columns_and_split_values_are_one_line_errors(papers, tmp_path, capsys):
    base = ["import-graph", "--nodes", str(papers / "papers.csv"), "--edges", str(papers / "citations.jsonl"), "--out_dir", str(tmp_path / "o")]
    assert cli_main([*base, "--id_column", "doi"]) == 2
    assert "no column 'doi'" in capsys.readouterr().err
    assert cli_main([*base, "--id_column", "paper", "--text_column", "title", "--image_column", "figure",
                     "--src_column", "citing", "--dst_column", "cited", "--split_column", "field"]) == 2
    assert "use train, validation, test" in capsys.readouterr().err
