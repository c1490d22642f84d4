"""Remote code: a saved SLIP model carries the code that defines it, so that

    AutoModel.from_pretrained(path_or_repo, trust_remote_code=True)

works in a Python where `slip_hf` is not installed (transformers' custom-code mechanism: `auto_map` in
`config.json` names the classes, and the `.py` files beside it define them).

The files are generated at save time from the modules that define the model, never kept by hand: starting at
the modules of `SlipConfig` and `SlipModel`, every module they import relatively (and so on) is copied, with
the package's folders flattened into file names (`objectives/base.py` -> `objectives_base.py`, a package's
`__init__.py` -> its name) and each relative import rewritten to the flat name. transformers' loader only
follows flat relative imports (`from .x import y`) of files beside `config.json`.

Third-party imports stay as they are; transformers checks that each is installed (torch, transformers,
torch_geometric, numpy) before it runs the code. Optional ones (kornia, spaCy) are imported inside `try` blocks
in the package, which transformers' check skips.
"""

import ast
import importlib
import os
import sys
from pathlib import Path

AUTO_MAP = {"AutoConfig": "configuration_slip.SlipConfig", "AutoModel": "modeling_slip.SlipModel"}
"""`config.json`'s `auto_map`: the Auto class -> `<file>.<class>` of the remote code."""


def _root_package(module_name: str) -> str:
    return module_name.rsplit(".", 1)[0]


def _is_package(module_name: str) -> bool:
    return hasattr(sys.modules[module_name], "__path__")


def flat_name(module_name: str, root: str) -> str:
    """The file name (without `.py`) of a module of `root` in the flat layout: `root.objectives.base` ->
    `objectives_base`, the package `root.objectives` -> `objectives`."""
    return module_name.removeprefix(root + ".").replace(".", "_")


def _relative_imports(module_name: str) -> list[tuple[ast.ImportFrom, str]]:
    """Each relative `from ... import` statement of a module with the absolute name of the module it imports
    from (`from . import x` resolves to the submodule `x` when there is one)."""
    source = Path(sys.modules[module_name].__file__).read_text()
    package = module_name if _is_package(module_name) else _root_package(module_name)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            target = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            if node.module is None:  # `from . import name`: the submodule `name`
                raise ValueError(f"{module_name}: `from . import ...` is not supported in remote code; import from the module.")
            found.append((node, target))
    return found


def module_closure(module_names: list[str]) -> list[str]:
    """The modules `module_names` need through relative imports, themselves included, in a stable order."""
    seen: list[str] = []
    pending = list(module_names)
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        importlib.import_module(name)
        seen.append(name)
        pending += [target for _, target in _relative_imports(name)]
    return seen


def flat_source(module_name: str, root: str) -> str:
    """A module's source with every relative import rewritten to the flat layout (`from ..losses import x` ->
    `from .losses import x`), the rest of each line kept as it was."""
    source = Path(sys.modules[module_name].__file__).read_text()
    lines = source.splitlines(keepends=True)
    for node, target in sorted(_relative_imports(module_name), key=lambda item: -item[0].lineno):
        names = ", ".join(alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names)
        first, last = node.lineno - 1, node.end_lineno - 1
        indent = lines[first][: node.col_offset]
        tail = lines[last][node.end_col_offset:]
        lines[first : last + 1] = [f"{indent}from .{flat_name(target, root)} import {names}{tail}"]
    return "".join(lines)


def write_remote_code(save_directory: str | os.PathLike, config_class: type, model_class: type) -> list[str]:
    """Write the flat copies of every module the two classes need into `save_directory`; returns the file
    names. Works from the installed package and from a remote-code copy alike (where the layout is flat
    already)."""
    root = _root_package(config_class.__module__)
    if _root_package(model_class.__module__) != root:
        raise ValueError("the config and the model classes must live in one package to be saved as remote code.")
    written = []
    for name in module_closure([config_class.__module__, model_class.__module__]):
        file_name = f"{flat_name(name, root)}.py"
        (Path(save_directory) / file_name).write_text(flat_source(name, root))
        written.append(file_name)
    return written


def package_version() -> str | None:
    """The installed slip_hf's version, or `None` (remote code runs without slip_hf installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slip_hf")
    except PackageNotFoundError:
        return None


def add_remote_code(model_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[str]:
    """Give a SLIP checkpoint saved without remote code (slip_hf < 0.2.0 wrote no `auto_map`) its code files and
    `auto_map`: in place, or in a copy at `out_dir` (tokenizer, image processor, card and results copied too,
    training checkpoints not). Returns the code files written."""
    import shutil

    from transformers import AutoConfig

    from .modeling_slip import SlipModel

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model {model_dir}: no config.json (not a saved model folder).")
    model_type = AutoConfig.from_pretrained(model_dir).model_type
    if model_type != "slip":
        raise ValueError(f"{model_dir} holds a `{model_type}` model: only SLIP checkpoints get slip_hf's remote code.")
    target = Path(out_dir) if out_dir is not None else model_dir
    if target.resolve() != model_dir.resolve():
        shutil.copytree(model_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", "runs"))
    SlipModel.from_pretrained(model_dir).save_pretrained(target)
    return sorted(p.name for p in target.glob("*.py"))


__all__ = ["AUTO_MAP", "add_remote_code", "flat_name", "flat_source", "module_closure", "package_version", "write_remote_code"]
