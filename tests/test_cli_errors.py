"""Every `slip-hf` command turns what a user gets wrong into one line on stderr and exit status 2, like
argparse; `--debug` (or SLIP_HF_DEBUG=1) shows the traceback instead."""

import pytest
from cli_parsers import parser_of

from slip_hf.cli import COMMANDS, main

MISSING = "/nonexistent/slip_hf-test"


@pytest.mark.parametrize("command, arguments, message", [
    ("build-dataset", ["--raw-dir", MISSING, "--out", "{tmp}/out"], f"--raw-dir {MISSING}: no such folder"),
    ("evaluate", ["--model_name_or_path", MISSING, "--dataset_name", "{dataset}"], f"model {MISSING}: no such folder"),
    ("evaluate", ["--model_name_or_path", "{model}", "--dataset_name", MISSING], f"dataset {MISSING}: no such folder"),
    ("train", ["--model_name_or_path", "{model}", "--dataset_name", MISSING, "--output_dir", "{tmp}/run"], f"dataset {MISSING}: no such folder"),
    ("train", ["--model_name_or_path", MISSING, "--dataset_name", "{dataset}", "--output_dir", "{tmp}/run"], f"model {MISSING}: no such folder"),
    ("ablate", ["--table", "everything", "--model_name_or_path", "{model}", "--dataset_name", "{dataset}", "--output_dir", "{tmp}/a"], "table must be"),
    ("evaluate-aro", ["--aro_dir", MISSING, "--model_name_or_path", "{model}"], MISSING),
    ("make-structure-benchmark", ["--dataset_dir", MISSING, "--out_dir", "{tmp}/aro"], f"dataset {MISSING}: no such folder"),
    ("generate-raw", ["--raw-dir", "{tmp}/raw", "--num-bundles", "0"], "must be >= 1"),
    ("push-dataset", ["--dataset-dir", MISSING, "--repo-id", "me/data"], MISSING),
    ("import-graph", ["--nodes", f"{MISSING}/items.csv", "--edges", f"{MISSING}/edges.csv", "--out_dir", "{tmp}/g"],
     f"items file {MISSING}/items.csv: no such file"),
    ("serve", ["--model", MISSING, "--dataset", "{dataset}"], f"model {MISSING}: no such folder"),
    ("serve", ["--model", "{model}", "{model}", "{model}", "--dataset", "{dataset}"], "one or two checkpoints"),
    ("embed", ["--model_name_or_path", MISSING, "--dataset_name", "{dataset}", "--output_dir", "{tmp}/e"], f"model {MISSING}: no such folder"),
    ("search", ["--index", MISSING, "usb-c charger"], "this is not a folder written by slip-hf embed"),
    ("publish", ["--model_dir", MISSING, "--dataset_dir", "{dataset}", "--model_repo", "a/b", "--dataset_repo", "a/c",
                 "--space_repo", "a/d", "--dry_run", "True"], f"model folder {MISSING}: no such folder"),
    ("demo", ["--out_dir", "{tmp}/demo", "--seeds", "0", "--num_bundles", "0"], "must be >= 1"),
])
def test_user_errors_are_one_line_with_status_2(command, arguments, message, graph_dataset_dir, tiny_clip_checkpoint, tmp_path, capsys):
    argv = [command, *(a.format(tmp=tmp_path, dataset=graph_dataset_dir, model=tiny_clip_checkpoint) for a in arguments)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"slip-hf {command}: error: ") and "Traceback" not in err, err
    assert message in err, err


def test_bad_flag_values_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate-raw", "--raw-dir", "x", "--num-bundles", "many"])
    assert exit_info.value.code == 2 and "slip-hf generate-raw: error: argument --num-bundles" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2


def test_debug_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the default output folder is relative
    with pytest.raises(FileNotFoundError, match="no such folder"):
        main(["build-dataset", "--raw-dir", MISSING, "--debug"])
    monkeypatch.setenv("SLIP_HF_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["build-dataset", "--raw-dir", MISSING])
    assert list(tmp_path.iterdir()) == []  # a build that cannot start leaves nothing behind


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_long_flag_of_every_command_takes_both_spellings(command, monkeypatch):
    """`--raw-dir` and `--raw_dir` alike, in every subcommand: the parser each command builds is caught at its
    first parse, and each of its long flags must also answer to the other spelling, as the same option."""
    options = parser_of(command, monkeypatch)._option_string_actions
    long_flags = [flag for flag in options if flag.startswith("--") and flag != "--help"]
    assert long_flags, command
    for flag in long_flags:
        for other in ("--" + flag[2:].replace("-", "_"), "--" + flag[2:].replace("_", "-")):
            assert options.get(other) is options[flag], f"slip-hf {command}: {flag} has no {other}"
