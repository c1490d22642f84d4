"""`slip_hf.paths.write_whole`: a file is replaced whole; what a failed or killed write left is not kept."""

import subprocess
import sys

import pytest

from slip_hf.paths import write_whole


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    write_whole(path, lambda temporary: temporary.write_text("old"))

    def fail(temporary):
        temporary.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_whole(path, fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_killed_writers_temporary_goes_at_the_next_write_and_a_live_ones_stays(tmp_path):
    path = tmp_path / "image_embedding.faiss"
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # its pid now names no process, as a killed writer's
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale, writing = (tmp_path / f".{path.name}.{process.pid}.tmp" for process in (killed, live))
        stale.write_bytes(b"half an index")
        writing.write_bytes(b"another process, still writing")
        (tmp_path / f".other.{killed.pid}.tmp").write_bytes(b"another file's")
        write_whole(path, lambda temporary: temporary.write_bytes(b"index"))
        assert path.read_bytes() == b"index" and not stale.exists() and writing.exists()
        assert (tmp_path / f".other.{killed.pid}.tmp").exists()  # only this path's temporaries are its to remove
    finally:
        live.kill()
        live.wait()
