"""Paths: telling a local folder from a Hugging Face Hub repo id, so that a mistyped path gets "no such folder"
instead of the Hub client's complaint about repo-id characters; and writing a file whole."""

import glob
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
    reader finds the old file or the new one, never half of one. A write that fails removes its temporary; one
    that a killed process left (its process is gone) is removed when `path` is written again."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not _writer_alive(stale):
            stale.unlink(missing_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _writer_alive(temporary: Path) -> bool:
    """Whether the process that named `temporary` (`.<name>.<pid>.tmp`) still runs."""
    pid = temporary.name.rsplit(".", 2)[-2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


__all__ = ["looks_local", "require_folder", "write_whole"]
