"""The Hub download path of the builder (`--raw-dir` unset): `hf_hub_download` of the raw files against a
loopback stand-in for the Hub endpoint (HF_ENDPOINT=http://127.0.0.1:PORT), which serves just what the client
asks for, end to end through `slip-hf build-dataset`, and again from the client's cache."""

import json
import os
import subprocess
import sys

import pytest
from loopback_hub import PREFIX, SMALL_RAW, serve_raw_files

from slip_hf.data import generate_synthetic_raw


@pytest.fixture
def hub(tmp_path):
    """A stand-in Hub serving the generated raw files under the release's paths; records every request."""
    generate_synthetic_raw(tmp_path / "raw", **SMALL_RAW)
    with serve_raw_files(tmp_path / "raw") as served:
        yield served


def test_build_dataset_downloads_the_raw_files_from_the_hub_then_reuses_them(hub, tmp_path):
    endpoint, requests, files = hub
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf-home")}
    command = [sys.executable, "-m", "slip_hf.cli", "build-dataset", "--category", "Electronics", "--out", str(tmp_path / "data"),
               "--image_size", "16", "--min_class_size", "3", "--allow_local_files", "--on_bad_lines", "skip"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    downloads = [path for method, path in requests if method == "GET" and path.startswith(PREFIX)]
    assert sorted(downloads) == sorted(PREFIX + name for name in files)  # each raw file fetched once
    stats = json.loads((tmp_path / "data" / "stats" / "electronics.json").read_text())
    assert stats["nodes"] > 50
    requests.clear()
    again = subprocess.run([*command[:7], str(tmp_path / "again"), *command[8:]], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not [path for method, path in requests if method == "GET" and path.startswith(PREFIX)]  # from the cache
    assert json.loads((tmp_path / "again" / "stats" / "electronics.json").read_text())["nodes"] == stats["nodes"]
