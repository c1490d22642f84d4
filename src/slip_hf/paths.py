"""Telling a local folder from a Hugging Face Hub repo id, so that a mistyped path gets "no such folder"
instead of the Hub client's complaint about repo-id characters."""

import os
from collections.abc import Callable
from pathlib import Path


def looks_local(name: str | os.PathLike) -> bool:
    """Whether `name` is meant as a local path: it exists, is absolute, starts with `.` or `~`, or is not of the
    Hub's `owner/name` (or bare `name`) form."""
    text = str(name)
    if os.path.exists(text) or os.path.isabs(text) or text.startswith((".", "~")) or text.endswith("/") or "\\" in text:
        return True
    return text.count("/") > 1


def require_folder(name: str | os.PathLike, what: str) -> None:
    """Raise `FileNotFoundError` ("<what> <name>: no such folder") when `name` is meant as a local folder and is
    none; Hub ids pass."""
    if looks_local(name) and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"{what} {name}: no such folder (nor a Hub repo id of the form owner/name).")


def write_whole(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Let `write(temporary)` write the file under a temporary name beside `path`, then rename it to `path`: a
    reader finds the old file or the new one, never half of one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


__all__ = ["looks_local", "require_folder", "write_whole"]
