"""Every recipe in training/recipes/ runs as written: through run_slip.py's own parser, with its data workers,
gradient checkpointing, sampler, evaluation and saving. Only what cannot exist here is overridden: the model
(a tiny local CLIP), the dataset (a small built one), the length of the run, the CPU for bf16, and the output
folder. A new recipe file is covered without editing this test.

Also: `slip-hf ablate --table batch_size` and `accelerate launch` with two processes on the paper recipe, both
with workers > 0, and the one-line errors of recipes and data workers."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from slip_hf.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "training" / "recipes").glob("*.yaml"))
PAPER_RECIPE = ROOT / "training" / "recipes" / "slip_electronics_vitb16.yaml"
SIGLIP_RECIPE = ROOT / "training" / "recipes" / "slip_electronics_siglip2_b16.yaml"
OVERRIDDEN = {"model_name_or_path", "dataset_name", "output_dir", "max_steps", "use_cpu"}


def _run_slip_main():
    spec = importlib.util.spec_from_file_location("run_slip", ROOT / "training" / "run_slip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def overrides(recipe: Path, model: str, dataset: Path, output_dir: Path, max_steps: int = 2) -> list[str]:
    """What cannot exist here: the model, the dataset, a long run, a GPU for bf16, the output folder."""
    values = yaml.safe_load(recipe.read_text())
    flags = ["--model_name_or_path", model, "--dataset_name", str(dataset), "--output_dir", str(output_dir),
             "--max_steps", str(max_steps)]
    return flags + (["--use_cpu", "True"] if values.get("bf16") else [])


def _same(used, value) -> bool:
    """A parsed or recorded argument against the recipe's value (enums by value, `report_to: none` as [])."""
    used = getattr(used, "value", used)
    if value == "none" and used in ([], ["none"], "none"):
        return True
    if isinstance(value, dict):  # e.g. accelerator_config: the recipe's keys, as the run used them
        used = used if isinstance(used, dict) else vars(used)
        return all(_same(used.get(key), item) for key, item in value.items())
    return used == value or str(used) == str(value)


def test_there_are_recipes_and_each_parses_with_the_values_it_states():
    from slip_hf.ablation import AblationArguments
    from slip_hf.experiment import parse_arguments

    assert PAPER_RECIPE in RECIPES and len(RECIPES) >= 3
    for recipe in RECIPES:
        values = yaml.safe_load(recipe.read_text())
        parsed = parse_arguments([str(recipe), "--use_cpu", "True"], recipe_section=(AblationArguments,))
        fields = {name: value for args in parsed for name, value in vars(args).items()}
        for key, value in values.items():
            if key != "ablation":
                assert _same(fields[key], value), (recipe.name, key)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_trains_evaluates_and_writes_its_outputs_as_written(recipe, request, graph_dataset_dir, tmp_path):
    from conftest import stand_in_for

    out = tmp_path / "run"
    model = stand_in_for(yaml.safe_load(recipe.read_text())["model_name_or_path"], request)
    assert _run_slip_main()([str(recipe), *overrides(recipe, model, graph_dataset_dir, out)]) == 0
    values = yaml.safe_load(recipe.read_text())
    used = json.loads((out / "run_config.json").read_text())
    settings = {**used["model"], **used["data"], **used["training"]}
    for key, value in values.items():  # the run used every setting of the file that was not overridden
        if key not in OVERRIDDEN | {"ablation"}:
            assert _same(settings[key], value), key
    assert used["world_size"] == 1
    for name in ("model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json", "README.md",
                 "test_results.json", "test_results.md"):
        assert (out / name).is_file(), name
    results = json.loads((out / "test_results.json").read_text())
    run = next(iter(results.values()))[0]
    assert 0 < run["retrieval"]["mrr"] <= 1 and "link_prediction" in run
    if values.get("save_strategy", "steps") != "no":
        assert sorted(out.glob("checkpoint-*"))
    if values.get("eval_strategy", "no") != "no":
        state = json.loads((sorted(out.glob("checkpoint-*"))[-1] / "trainer_state.json").read_text())
        assert any("eval_mrr" in entry for entry in state["log_history"])


def test_ablate_batch_size_table_runs_the_paper_recipe_with_its_workers(recipe_clip, graph_dataset_dir, tmp_path, capsys):
    out = tmp_path / "ablation"
    code = cli_main(["ablate", str(PAPER_RECIPE), *overrides(PAPER_RECIPE, recipe_clip, graph_dataset_dir, out),
                     "--table", "batch_size", "--batch_sizes", "16", "32", "--seeds", "0"])
    assert code == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 16 ", "| 32 "))]
    assert [line.split(" | ")[:2] for line in table] == [["| 16", "w/o G"], ["| 16", "w/ G"], ["| 32", "w/o G"], ["| 32", "w/ G"]]
    used = json.loads((out / "batch32-graph" / "seed0" / "run_config.json").read_text())["training"]
    assert used["dataloader_num_workers"] == 8 and used["per_device_train_batch_size"] == 32


@pytest.mark.parametrize("recipe", [PAPER_RECIPE, SIGLIP_RECIPE], ids=["clip", "siglip2"])
def test_accelerate_launch_runs_the_paper_recipe_on_two_processes(recipe, request, graph_dataset_dir, tmp_path):
    from conftest import stand_in_for

    out = tmp_path / "launched"
    model = stand_in_for(yaml.safe_load(recipe.read_text())["model_name_or_path"], request)
    # accelerate's --cpu flag runs one process; --multi_gpu starts the processes with torch.distributed (gloo on a CPU)
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", str(ROOT / "training" / "run_slip.py"), str(recipe),
               *overrides(recipe, model, graph_dataset_dir, out), "--per_device_train_batch_size", "32"]
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run([str(accelerate), *command[1:]], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    used = json.loads((out / "run_config.json").read_text())
    assert used["world_size"] == 2 and used["training"]["dataloader_num_workers"] == 8
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["epoch"] == 1.0  # 102 training nodes in global batches of 2 x 32: two steps make one epoch
    assert (out / "test_results.json").is_file() and (out / "model.safetensors").is_file()
    # each process wrote its RNG state into the staging folder before the main process renamed it into place
    files = json.loads((out / "checkpoint-2" / "slip_checkpoint.json").read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "model.safetensors"} <= set(files)
    assert not list(out.glob(".partial-*"))
    # both processes resume from the checkpoint the main process chose
    saved = (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns
    command[command.index("--max_steps") + 1] = "3"
    done = subprocess.run([str(accelerate), *command[1:], "--resume_from_checkpoint", "True"], capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == saved  # not retrained


def test_unknown_recipe_key_is_one_line_naming_the_key_and_the_file(tmp_path, capsys):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(PAPER_RECIPE.read_text() + "learning_rte: 1.0e-4\n")
    assert _run_slip_main()([str(recipe)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("run_slip.py: error: ")
    assert f"recipe {recipe}: unknown key 'learning_rte' (did you mean 'learning_rate'?)" in error
    recipe.write_text(PAPER_RECIPE.read_text() + "seeds: [0, 1]\n")  # an ablation setting at the top level
    assert _run_slip_main()([str(recipe)]) == 2
    assert "unknown key 'seeds' (an argument of `slip-hf ablate`: put it under 'ablation:')" in capsys.readouterr().err
    recipe.write_text(PAPER_RECIPE.read_text() + "ablation:\n  tabel: batch_size\n")
    assert cli_main(["ablate", str(recipe)]) == 2
    assert "unknown key 'ablation.tabel' (did you mean 'table'?)" in capsys.readouterr().err


def test_bf16_without_a_gpu_is_one_line(capsys):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: bf16 runs")
    assert _run_slip_main()([str(PAPER_RECIPE)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "run_slip.py: error: bf16 needs a GPU or a CPU with bf16 support; pass --bf16 False or --use_cpu "
        "(--debug shows the traceback)"]


def test_more_workers_than_cores_is_a_warning_that_names_the_count(tmp_path, caplog):
    from slip_hf.trainer import SlipTrainingArguments, usable_cpu_count

    cores = usable_cpu_count()
    with caplog.at_level("WARNING", logger="slip_hf.trainer"):
        SlipTrainingArguments(output_dir=str(tmp_path), dataloader_num_workers=cores + 6, report_to="none")
    assert f"dataloader_num_workers={cores + 6} is more than the {cores} CPU core(s)" in caplog.text


def _with_corrupt_image(dataset: Path, target: Path, row: int) -> int:
    """A copy of a built dataset whose train row `row` holds bytes that are no image; returns that node's id."""
    shutil.copytree(dataset, target, ignore=shutil.ignore_patterns(".work"))
    path = next((target / "electronics").glob("train-*.parquet"))
    table = pq.read_table(path)
    images = table.column("image").to_pylist()
    images[row] = {"bytes": b"not an image at all", "path": None}
    index = table.schema.get_field_index("image")
    pq.write_table(table.set_column(index, table.schema.field("image"), pa.array(images, type=table.schema.field("image").type)), path)
    return int(table.column("node_id")[row].as_py())


def test_corrupt_image_in_a_data_worker_is_one_line_naming_the_worker_and_the_node(recipe_clip, graph_dataset_dir, tmp_path, capsys):
    node = _with_corrupt_image(graph_dataset_dir, tmp_path / "corrupt", row=5)
    code = _run_slip_main()([str(PAPER_RECIPE), *overrides(PAPER_RECIPE, recipe_clip, tmp_path / "corrupt", tmp_path / "out"),
                             "--dataloader_num_workers", "2"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the training progress bar, on its line
    error = error[error.index("run_slip.py: error: "):]
    assert error.startswith("run_slip.py: error: data worker ") and f": node {node}: image cannot be decoded" in error


def test_a_data_worker_that_dies_is_one_line(slip_config, processed_nodes, node_graph, tmp_path):
    import signal

    from slip_hf import SlipModel
    from slip_hf.cli import user_error_line
    from slip_hf.trainer import SlipTrainer, SlipTrainingArguments

    def die(batch):  # as the kernel's out-of-memory killer ends a worker
        os.kill(os.getpid(), signal.SIGKILL)

    data = processed_nodes.with_transform(die)
    args = SlipTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=1, report_to="none",
                                 dataloader_num_workers=1, save_strategy="no", disable_tqdm=True)
    trainer = SlipTrainer(model=SlipModel(slip_config), args=args, graph=node_graph, train_dataset=data)
    with pytest.raises(RuntimeError) as raised:
        trainer.train()
    line = user_error_line(raised.value)
    assert line.startswith("a data worker died (DataLoader worker (pid") and "\n" not in line and "out of memory" in line
