"""Every code block of README.md and docs/ is a test, and the site builds strictly.

* A ```python block runs as its own test (id: file and line), in one namespace per file, after the blocks above
  it, as a reader runs them top to bottom. Hub ids and run folders are replaced by local stand-ins: the tiny
  CLIP (`openai/clip-vit-base-patch16`), a small built dataset (`you/amazon-copurchase-mm`), a SLIP model trained
  for two steps by run_slip.py (`runs/slip-electronics`, `you/slip-electronics`), its CLIP export
  (`slip-electronics-clip`) and its embeddings with their index (`slip-embeddings`).
* A ```bash block's slip_hf commands (`slip-hf ...`, `training/run_slip.py`, `training/ablate.py`, through
  `accelerate launch` or not) run in order, in one folder that holds the clone's `training/` and `hub/`, with small
  arguments (`SMALL`: two steps, one seed, a tiny model; `accelerate launch` on 2 processes) and the same stand-ins;
  the files a reader brings (raw files, papers, an ARO folder) are generated, the Hub's raw files come from a
  loopback stand-in, `slip-hf serve` runs until it answers, uploads go to a stand-in `HfApi`. Installs and
  `python -m pytest` are CI's own steps.
* A block may be marked `<!-- doc-test: skip (reason) -->` on the line before it, when it needs a GPU or
  hours; at most one block in five.
* `mkdocs build --strict` builds the site: no broken link, no missing reference, the CLI reference generated.
"""

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SKIP = re.compile(r"<!-- doc-test: skip \((.+)\) -->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(language: str | None = None) -> list[Block]:
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
            line = text[: match.start()].count("\n") + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            skip = SKIP.match(before)
            found.append(Block(path, line, match.group(1), match.group(2), skip.group(1) if skip else None))
    return [b for b in found if language is None or b.language == language]


def test_at_most_one_block_in_five_is_not_run_and_each_says_why():
    runnable = [b for b in blocks() if b.language in ("python", "bash")]
    skipped = [b for b in runnable if b.skip]
    assert len(runnable) >= 15 and 5 * len(skipped) <= len(runnable)
    assert all(len(b.skip) > 10 for b in skipped)


# -- python blocks ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stand_ins(graph_dataset_dir, recipe_clip, recipe_siglip, tmp_path_factory) -> dict[str, str]:
    """What each Hub id or run folder named in the docs is replaced with."""
    from slip_hf.experiment import parse_arguments, run_experiment
    from slip_hf.interop import export_clip

    clip77 = recipe_clip  # CLIP's 77 text positions, as the docs' pipelines and prompts need
    slip = tmp_path_factory.mktemp("docs") / "slip-electronics"
    args = parse_arguments(["--model_name_or_path", clip77, "--dataset_name", str(graph_dataset_dir),
                            "--output_dir", str(slip), "--max_steps", "2", "--per_device_train_batch_size", "32",
                            "--graph_hidden_size", "32", "--few_shot", "1", "--report_to", "none",
                            "--disable_tqdm", "True", "--plots", "False", "--eval_strategy", "no", "--save_strategy", "no"])
    run_experiment(*args)
    clip = export_clip(str(slip), str(slip.parent / "slip-electronics-clip")).out_dir
    from slip_hf.search import EmbedArguments, embed_catalogue, index_folder

    embeddings = embed_catalogue(EmbedArguments(str(slip), str(graph_dataset_dir), str(slip.parent / "slip-embeddings"),
                                                shard_rows=64, num_workers=0))
    index_folder(embeddings, log=lambda line: None)
    return {  # longest first: one name can hold another
        "slip-electronics-clip": str(clip), "slip-embeddings": str(embeddings), "runs/slip-electronics": str(slip), "you/slip-electronics": str(slip),
        "you/amazon-copurchase-mm": str(graph_dataset_dir), "openai/clip-vit-base-patch16": clip77,
        "google/siglip2-base-patch16-224": recipe_siglip,
    }


_namespaces: dict[Path, tuple[dict, int]] = {}


@pytest.mark.parametrize("block", blocks("python"), ids=lambda b: b.id)
def test_python_block_runs(block, stand_ins, tmp_path, monkeypatch):
    if block.skip:
        pytest.skip(block.skip)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    namespace, done = _namespaces.get(block.path, ({"__name__": "__doc__"}, 0))
    earlier = [b for b in blocks("python") if b.path == block.path and b.line < block.line and not b.skip]
    for code in [b.code for b in earlier[done:]] + [block.code]:
        for name, local in stand_ins.items():
            code = code.replace(f'"{name}"', repr(local))
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            exec(compile(code, block.id, "exec"), namespace)  # noqa: S102 - the documentation's own code
    _namespaces[block.path] = (namespace, len(earlier) + 1)
    expected = [line.removeprefix("# ") for line in block.code.rstrip().splitlines()[-1:] if line.startswith("# (")]
    if expected:  # a block that shows its output in a last comment line prints exactly that
        assert printed.getvalue().strip() == expected[0]


# -- shell blocks ----------------------------------------------------------------------------------------------
SMALL = {  # what each documented command gets so that it takes seconds here; a flag it names already is replaced
    "demo": {"--seeds": ["0"], "--epochs": ["1"], "--num_bundles": ["6"], "--image_size": ["16"], "--hidden_size": ["32"],
             "--num_layers": ["1"]},
    "train": {"--max_steps": ["2"], "--per_device_train_batch_size": ["16"], "--per_device_eval_batch_size": ["64"],
              "--graph_hidden_size": ["32"], "--graph_num_heads": ["2"], "--few_shot": ["1"], "--use_cpu": ["True"],
              # data workers and plots as the recipes have them: test_recipes.py and test_checkpoints.py
              "--dataloader_num_workers": ["0"], "--plots": ["False"]},
    "embed": {"--shard_rows": ["64"], "--batch_size": ["32"]},
    "build-dataset": {"--image_size": ["16"], "--min_class_size": ["3"], "--allow_local_files": [], "--on_bad_lines": ["skip"]},
}
SMALL["ablate"] = {**SMALL["train"], "--max_steps": ["1"], "--seeds": ["0"], "--batch_sizes": ["16", "32"]}
MODEL_AND_DATA = {"--model_name_or_path": "openai/clip-vit-base-patch16", "--dataset_name": "you/amazon-copurchase-mm"}
"""What a recipe names (the Hub's model and dataset) and the command line does not: given, then replaced by stand-ins
(the recipe's own model where it has a stand-in: SigLIP 2 for the SigLIP recipe)."""
READS = {"--model_name_or_path", "--dataset_name", "--model", "--dataset", "--model_dir", "--dataset_dir", "--clip_t_model"}
"""Flags whose values are read: a Hub id or a folder the reader would have, when the block has not made it here."""


@dataclass(frozen=True)
class Command:
    launcher: str  # "slip-hf" (slip-hf, python training/*.py) or "accelerate" (accelerate launch ... training/*.py)
    argv: list[str]  # [command, *flags]
    processes: int = 1


def _commands(code: str) -> list[Command]:
    """The slip_hf command lines of a shell block, in order (installs and `python -m pytest` are CI's own steps)."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" # ")[0].strip()
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            launcher, processes = "slip-hf", 1
            if words[:2] == ["accelerate", "launch"]:  # a training script, or `-m slip_hf.cli <command>`
                flags = words[2:next(i for i, w in enumerate(words) if w.endswith(".py") or w == "-m")]
                processes = int(flags[flags.index("--num_processes") + 1]) if "--num_processes" in flags else 1
                rest = words[len(flags) + 2:]
                words = ["slip-hf", *rest[2:]] if rest[:2] == ["-m", "slip_hf.cli"] else ["python", *rest]
                launcher = "accelerate"
            if words[:1] == ["slip-hf"] and len(words) > 1 and not words[1].startswith("-"):
                found.append(Command(launcher, words[1:], processes))
            elif words[:2] in (["python", "training/run_slip.py"], ["python", "training/ablate.py"]):
                found.append(Command(launcher, ["train" if words[1].endswith("run_slip.py") else "ablate", *words[2:]], processes))
    return found


def _with(argv: list[str], flags: dict[str, list[str]]) -> list[str]:
    """`argv` with each of `flags` set to its values: replaced where `argv` names the flag, else appended."""
    argv = list(argv)
    for flag, values in flags.items():
        if flag in argv:
            start = argv.index(flag) + 1
            stop = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
            argv[start:stop] = values
        else:
            argv += [flag, *values]
    return argv


def _stand_ins_for_reads(argv: list[str], stand_ins: dict[str, str], work: Path) -> list[str]:
    """Each value of a flag in `READS` that is a stand-in's name, and not a folder the block made, replaced."""
    argv, flag = list(argv), None
    for i, word in enumerate(argv):
        if word.startswith("--"):
            flag = word
        elif flag in READS and word.rstrip("/") in stand_ins and not (work / word).exists():
            argv[i] = stand_ins[word.rstrip("/")]
    return argv


def _prepare_inputs(argv: list[str], work: Path, dataset: str) -> None:
    """Make the files a command names that a reader brings (their raw files, their papers, an ARO folder)."""
    from loopback_hub import SMALL_RAW
    from sample_papers import write_papers

    from slip_hf.data import generate_synthetic_raw
    from slip_hf.data.structure_benchmark import write_product_structure_benchmark

    if {"--raw-dir", "--raw_dir"} & set(argv) and not (work / "raw").exists():
        generate_synthetic_raw(work / "raw", **SMALL_RAW)
    if "papers.csv" in argv and not (work / "papers.csv").exists():
        write_papers(work)
    if "--aro_dir" in argv and not (work / argv[argv.index("--aro_dir") + 1]).exists():
        write_product_structure_benchmark(dataset, work / argv[argv.index("--aro_dir") + 1], num_cases=8, image_size=16)


def _run(command: Command, work: Path, tmp_path: Path) -> None:
    """Run one command in `work`: in this process, or as the reader would where it must be its own process (a
    server, `accelerate launch`, a download from the (loopback) Hub, whose address is read at import)."""
    from slip_hf.cli import run_command

    name, argv = command.argv[0], command.argv[1:]
    script = ROOT / "training" / ("run_slip.py" if name == "train" else "ablate.py")
    if command.launcher == "accelerate":  # 2 processes here; torch.distributed on a CPU needs --multi_gpu (gloo)
        accelerate = Path(sys.executable).with_name("accelerate")
        program = [str(script)] if name in ("train", "ablate") else ["-m", "slip_hf.cli", name]
        done = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", str(min(command.processes, 2)),
                               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *program, *argv],
                              cwd=work, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    elif name == "serve":
        _serve_until_it_answers(argv, work, tmp_path)
    elif name == "build-dataset" and not {"--raw-dir", "--raw_dir"} & set(argv):  # the raw files come from the Hub
        from loopback_hub import SMALL_RAW, serve_raw_files

        from slip_hf.data import generate_synthetic_raw

        generate_synthetic_raw(tmp_path / "hub-raw", **SMALL_RAW)
        with serve_raw_files(tmp_path / "hub-raw") as (endpoint, _, _):
            env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}
            done = subprocess.run([sys.executable, "-m", "slip_hf.cli", name, *argv], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    else:
        try:
            code = run_command(name, argv, prog=script.name if name in ("train", "ablate") else None)
        except SystemExit as exit_:  # --help
            code = exit_.code
        assert code in (0, None)


def _serve_until_it_answers(argv: list[str], work: Path, tmp_path: Path) -> None:
    import socket
    import time

    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "-m", "slip_hf.cli", "serve", *argv, "--port", str(port)], cwd=work,
                                  stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        pytest.fail(f"slip-hf serve did not answer: {log.read_text()[-3000:]}")
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.parametrize("block", [b for b in blocks("bash") if _commands(b.code)], ids=lambda b: b.id)
def test_shell_block_runs(block, stand_ins, fake_hub, tmp_path, monkeypatch):
    """Each slip_hf command of the block, in order, in one folder, with small arguments (`SMALL`) and the Python
    blocks' stand-ins for what the reader has (a Hub id, a run folder); the files a reader brings are made first."""
    if block.skip:
        pytest.skip(block.skip)
    work = tmp_path / "work"  # as a clone to the commands: its recipes and Space folder, the rest what they write
    work.mkdir()
    for folder in ("training", "hub"):
        (work / folder).symlink_to(ROOT / folder)
    monkeypatch.chdir(work)
    monkeypatch.setenv("SLIP_HF_DEBUG", "1")  # a failing command shows its traceback
    names = {**stand_ins, "runs/slip": stand_ins["runs/slip-electronics"], "amazon-copurchase-mm": stand_ins["you/amazon-copurchase-mm"]}
    for command in _commands(block.code):
        argv = command.argv
        if argv[0] in ("train", "ablate"):
            given = dict(MODEL_AND_DATA)
            recipe = next((ROOT / word for word in argv[1:] if word.endswith(".yaml") and (ROOT / word).is_file()), None)
            if recipe is not None and yaml.safe_load(recipe.read_text()).get("model_name_or_path") in names:
                given["--model_name_or_path"] = yaml.safe_load(recipe.read_text())["model_name_or_path"]
            argv = argv + [word for flag, value in given.items() if flag not in argv for word in (flag, value)]
        if argv[1:] != ["--help"]:
            argv = _with(argv, SMALL.get(argv[0], {}))
        argv = _stand_ins_for_reads(argv, names, work)
        _prepare_inputs(argv, work, names["you/amazon-copurchase-mm"])
        _run(Command(command.launcher, argv, command.processes), work, tmp_path)


# -- the site --------------------------------------------------------------------------------------------------
def test_the_site_builds_strictly_with_the_cli_reference(tmp_path):
    if shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists():
        pytest.fail("mkdocs is not installed: pip install -e '.[docs]' (the test extra includes it)")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    assert "slip-hf import-graph --help" in cli and "--image_background" in cli
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "SlipModel" in api and "viewed_image" in api and "last_complete_checkpoint" in api
    assert (site / "index.html").is_file() and (site / "results" / "index.html").is_file()


def test_every_public_name_documents_each_argument_and_what_it_returns():
    """The API reference's objects (docs/reference/api.md), as mkdocstrings reads them (with docs/hooks/field_help.py):
    every parameter of a function or class is in its `Args:` (or `Attributes:`) section, and a function that returns
    something says what, in a `Returns:` section or its summary ("The ...", "...; returns ...")."""
    griffe = pytest.importorskip("griffe")

    names = re.findall(r"^::: (\S+)", (ROOT / "docs" / "reference" / "api.md").read_text(), re.MULTILINE)
    extensions = griffe.load_extensions(f"{ROOT / 'docs' / 'hooks' / 'field_help.py'}:FieldHelp")
    loader = griffe.GriffeLoader(search_paths=[str(ROOT / "src")], extensions=extensions, docstring_parser=griffe.Parser.google)
    package = loader.load("slip_hf")
    loader.resolve_aliases(implicit=True, external=False)
    gaps = []
    for name in names:
        obj = package[name.removeprefix("slip_hf.")]
        obj = obj.final_target if obj.is_alias else obj
        function = obj.members.get("__init__") if obj.is_class else obj
        sections = obj.docstring.parse(griffe.Parser.google) if obj.docstring else []
        documented = {p.name.lstrip("*") for s in sections if s.kind.value in ("parameters", "attributes", "other parameters") for p in s.value}
        parameters = [p.name for p in function.parameters if p.name not in ("self", "cls", "args", "kwargs")] if function else []
        gaps += [f"{name}: argument {p!r} is not documented" for p in parameters if p not in documented]
        if obj.is_function and str(obj.returns) not in ("None", "") and obj.returns is not None:
            summary = obj.docstring.value.split("\n\n")[0]
            says = (any(s.kind.value in ("returns", "yields") for s in sections) or "returns" in summary.lower()
                    or summary.split()[0] in ("The", "A", "An", "Each", "Whether"))
            if not says:
                gaps.append(f"{name}: does not say what it returns")
    assert not gaps, "\n".join(gaps)


@pytest.mark.parametrize("module", ["slip_hf.losses", "slip_hf.viewed_image", "slip_hf.pixels"])
def test_docstring_examples_that_need_no_hub_run(module):
    """The `>>>` examples of the API pages that need neither a Hub checkpoint nor a user's files print what they
    show (doctest); the others name a Hub model or a run folder, as the guides' blocks do, which run above."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), report=True)
    assert result.attempted > 0 and result.failed == 0
