"""Every code block of README.md and docs/ is a test, and the site builds strictly.

* A ```python block runs as its own test (id: file and line), in one namespace per file, after the blocks above
  it, as a reader runs them top to bottom. Hub ids and run folders are replaced by local stand-ins: the tiny
  CLIP (`openai/clip-vit-base-patch16`), a small built dataset (`you/amazon-copurchase-mm`), a SLIP model trained
  for two steps by run_slip.py (`runs/slip-electronics`, `you/slip-electronics`) and its CLIP export
  (`slip-electronics-clip`).
* A ```bash block's slip_hf commands (`slip-hf ...`, `training/run_slip.py`, `training/ablate.py`, through
  `accelerate launch` or not) are parsed by the command's own parser: a flag that does not exist fails.
* A block may be marked `<!-- doc-test: skip (reason) -->` on the line before it, when it needs a GPU or
  hours; at most one block in five.
* `mkdocs build --strict` builds the site: no broken link, no missing reference, the CLI reference generated.
"""

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_parsers import parser_of

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
def stand_ins(graph_dataset_dir, recipe_clip, tmp_path_factory) -> dict[str, str]:
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
    return {  # longest first: one name can hold another
        "slip-electronics-clip": str(clip), "runs/slip-electronics": str(slip), "you/slip-electronics": str(slip),
        "you/amazon-copurchase-mm": str(graph_dataset_dir), "openai/clip-vit-base-patch16": clip77,
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
def _commands(code: str) -> list[list[str]]:
    """The slip_hf command lines of a shell block, as argv after the program."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split(" # ")[0].strip()
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:2] == ["accelerate", "launch"]:
                words = words[next(i for i, w in enumerate(words) if w.endswith(".py")):]
                words = ["python", *words]
            if words[:1] == ["slip-hf"] and len(words) > 1 and not words[1].startswith("-"):
                found.append(words[1:])
            elif words[:2] in (["python", "training/run_slip.py"], ["python", "training/ablate.py"]):
                found.append(["train" if words[1].endswith("run_slip.py") else "ablate", *words[2:]])
    return found


@pytest.mark.parametrize("block", [b for b in blocks("bash") if _commands(b.code)], ids=lambda b: b.id)
def test_shell_block_commands_parse(block, monkeypatch):
    from slip_hf.recipe import Recipe, is_recipe

    if block.skip:
        pytest.skip(block.skip)
    for argv in _commands(block.code):
        command, flags = argv[0], argv[1:]
        if flags and is_recipe(flags[0]):  # a recipe file gives defaults, as run_slip.py reads it
            assert (ROOT / flags[0]).is_file(), f"{block.id}: no recipe {flags[0]}"
            flags = flags[1:]
            assert Recipe.load(ROOT / argv[1]) is not None
        if flags in (["--help"], []):
            continue
        parser = parser_of(command, monkeypatch)
        _, unknown = parser.parse_known_args(flags)
        assert not unknown, f"{block.id}: slip-hf {command} has no {unknown}"


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
