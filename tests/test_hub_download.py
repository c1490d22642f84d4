"""The Hub download path of the builder (`--raw-dir` unset): `hf_hub_download` of the raw files against a
loopback stand-in for the Hub endpoint (HF_ENDPOINT=http://127.0.0.1:PORT), which serves just what the client
asks for, end to end through `slip-hf build-dataset`, and again from the client's cache."""

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slip_hf.data import generate_synthetic_raw
from slip_hf.data.amazon_raw import HUB_REPO_ID

PREFIX = f"/datasets/{HUB_REPO_ID}/resolve/main/"


@pytest.fixture
def hub(tmp_path):
    """A stand-in Hub serving the generated raw files under the release's paths; records every request."""
    generate_synthetic_raw(tmp_path / "raw", num_bundles=8, shoppers_per_bundle=200, image_size=16, seed=5)
    files = {f"raw/{path.parent.name}/{path.name}": path.read_bytes() for path in (tmp_path / "raw").glob("*_categories/*.jsonl")}
    requests: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, with_body: bool):
            requests.append((self.command, self.path))
            name = self.path.split("?")[0][len(PREFIX):] if self.path.startswith(PREFIX) else None
            body = files.get(name)
            if body is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
            self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802 (http.server API)
            self._answer(False)

        def do_GET(self):  # noqa: N802
            self._answer(True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests, files
    server.shutdown()
    server.server_close()


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
