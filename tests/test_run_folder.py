"""Run folders reused by `slip-hf ablate`: a table killed in the middle of a run resumes it from its newest
checkpoint and reads back the runs that had finished, to the same table as an uninterrupted run; a second run
of a finished table trains nothing; a folder holding a run with other settings is an error that loses nothing."""

import json
import os
import subprocess
import sys

import pytest

_KILLABLE_ABLATION = """
import os, signal, sys
from slip_hf.checkpoints import AtomicCheckpoints as Trainer  # the whole save, rename included
save = Trainer._save_checkpoint
def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if self.state.global_step == 2 and self.args.output_dir.endswith(os.environ["KILL_RUN"]):
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no flush: as a pre-empted job dies
Trainer._save_checkpoint = save_then_die
from slip_hf.cli import main
sys.exit(main(["ablate", *sys.argv[1:]]))
"""


@pytest.fixture
def ablation_flags(graph_dataset_dir, tiny_clip_checkpoint):
    def flags(output_dir, *extra: str) -> list[str]:
        return [
            "--table", "batch_size", "--batch_sizes", "16", "--seeds", "0", "--equal_steps", "4",
            "--model_name_or_path", tiny_clip_checkpoint, "--dataset_name", str(graph_dataset_dir), "--output_dir",
            str(output_dir), "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
            "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no", "--learning_rate", "1e-3",
            "--graph_hidden_size", "32", "--max_text_length", "24", "--few_shot", "1", "--report_to", "none",
            "--disable_tqdm", "True", "--image_pipeline", "tensor", "--seed", "3", *extra,
        ]
    return flags


def _ablate(argv: list[str]) -> dict:
    from slip_hf.ablation import AblationArguments, run_ablation
    from slip_hf.experiment import parse_arguments

    return run_ablation(*parse_arguments(argv, extra=(AblationArguments,)))


def _tables(markdown: str) -> str:
    return markdown.rsplit("\n\n", 2)[0]  # everything but the line that counts trained and reused runs


def test_a_killed_ablation_resumes_to_the_uninterrupted_table_and_a_rerun_trains_nothing(ablation_flags, tmp_path, monkeypatch):
    straight = _ablate(ablation_flags(tmp_path / "straight"))
    assert straight["markdown"].endswith("2 runs: 2 trained, 0 resumed from their newest checkpoint, 0 read back "
                                         f"(finished earlier in {tmp_path / 'straight'}).\n")

    interrupted = tmp_path / "interrupted"
    env = {**os.environ, "KILL_RUN": os.path.join("batch16-graph", "seed0")}  # the table's second run
    killed = subprocess.run([sys.executable, "-c", _KILLABLE_ABLATION, *ablation_flags(interrupted)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (interrupted / "batch16-nograph" / "seed0" / "test_results.json").is_file()
    run = interrupted / "batch16-graph" / "seed0"
    assert (run / "checkpoint-2").is_dir() and (run / "run_config.json").is_file() and not (run / "test_results.json").exists()

    before_kill = (run / "checkpoint-1" / "model.safetensors").stat().st_mtime_ns
    resumed = _ablate(ablation_flags(interrupted))
    assert (run / "checkpoint-1" / "model.safetensors").stat().st_mtime_ns == before_kill  # resumed, not retrained
    assert resumed["markdown"].endswith("2 runs: 0 trained, 1 resumed from their newest checkpoint, 1 read back "
                                        f"(finished earlier in {interrupted}).\n")
    assert _tables(resumed["markdown"]) == _tables(straight["markdown"])  # every digit of Table 3 and the leaderboard
    for row, results in straight["results"]["batch_size"].items():
        again = resumed["results"]["batch_size"][row]
        assert [r["retrieval"] for r in again] == [r["retrieval"] for r in results]
        assert [r["schedule"] for r in again] == [r["schedule"] for r in results]
        assert [r["objectives"] for r in again] == [r["objectives"] for r in results]

    import slip_hf.ablation

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(slip_hf.ablation, "run_experiment", no_training)
    rerun = _ablate(ablation_flags(interrupted))
    assert _tables(rerun["markdown"]) == _tables(straight["markdown"]) and "0 trained, 0 resumed" in rerun["markdown"]


def test_a_folder_holding_a_run_with_other_settings_is_an_error_that_loses_nothing(ablation_flags, tmp_path, capsys):
    from slip_hf.cli import main

    _ablate(ablation_flags(tmp_path))
    results = tmp_path / "batch16-nograph" / "seed0" / "test_results.json"
    before = results.read_bytes()
    capsys.readouterr()
    assert main(["ablate", *ablation_flags(tmp_path, "--learning_rate", "2e-3")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert (f"{tmp_path / 'batch16-nograph' / 'seed0'} holds a run with other settings (learning_rate: 0.001 → 0.002); "
            "pass another --output_dir, or --reuse_runs False to train it again.") in error
    assert results.read_bytes() == before
    # --reuse_runs False trains it again, with the new settings recorded
    _ablate(ablation_flags(tmp_path, "--learning_rate", "2e-3", "--reuse_runs", "False"))
    used = json.loads((tmp_path / "batch16-nograph" / "seed0" / "run_config.json").read_text())["training"]
    assert used["learning_rate"] == pytest.approx(2e-3) and results.read_bytes() != before


def test_run_status_of_folders(tmp_path):
    from slip_hf.checkpoints import write_manifest
    from slip_hf.run_folder import changed_settings, run_status

    settings = {"model": {"baseline": "slip"}, "data": {"test_split": "test"},
                "training": {"learning_rate": 1e-3, "output_dir": str(tmp_path), "report_to": ["none"]}, "world_size": 1}
    assert run_status(tmp_path / "absent", settings) == "new" and run_status(tmp_path, settings) == "new"
    (tmp_path / "checkpoint-3").mkdir()
    assert run_status(tmp_path, settings) == "new"  # an incomplete checkpoint (a kill mid-save) is nothing to resume
    (tmp_path / "checkpoint-3" / "model.safetensors").write_bytes(b"weights")
    write_manifest(tmp_path / "checkpoint-3")  # now whole, as slip_hf renames it into place
    with pytest.raises(ValueError, match="holds a run without run_config.json"):
        run_status(tmp_path, settings)
    (tmp_path / "run_config.json").write_text(json.dumps({**settings, "training": {**settings["training"], "output_dir": "/elsewhere"}}))
    assert run_status(tmp_path, settings) == "interrupted"  # where a run was written does not change what it computes
    (tmp_path / "test_results.json").write_text("{}")
    with pytest.raises(ValueError, match=r"finished run without trainer_state.json \(written by slip_hf < 0.2.1\)"):
        run_status(tmp_path, settings)
    (tmp_path / "trainer_state.json").write_text("{}")
    assert run_status(tmp_path, settings) == "finished"
    assert changed_settings(settings, {**settings, "world_size": 2, "model": {}}) == ["baseline: 'slip' → 'unset'", "world_size: 1 → 2"]


def test_a_run_folder_of_0_3_is_the_same_run_as_one_with_the_settings_added_since():
    from slip_hf.run_folder import changed_settings

    recorded = {"model": {"graph_loss_on": "z"}, "data": {}, "training": {"seed": 0}, "world_size": 1}
    current = {"model": {"graph_loss_on": "z", "graph_loss_form": "auto"}, "data": {},
               "training": {"seed": 0, "logs_to": "file", "save_on_signal": "SIGUSR1"}, "world_size": 1}
    assert changed_settings(recorded, current) == []
    current["model"]["graph_loss_form"] = "sigmoid"
    assert changed_settings(recorded, current) == ["graph_loss_form: 'auto' → 'sigmoid'"]
