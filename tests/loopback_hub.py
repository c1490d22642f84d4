"""A loopback stand-in for the Hub (HF_ENDPOINT=http://127.0.0.1:PORT) that serves generated Amazon Reviews 2023
raw files under the release's paths, as `hf_hub_download` asks for them, and records every request."""

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from slip_hf.data.amazon_raw import HUB_REPO_ID

PREFIX = f"/datasets/{HUB_REPO_ID}/resolve/main/"
SMALL_RAW = {"num_bundles": 8, "shoppers_per_bundle": 200, "image_size": 16, "seed": 5}
"""`generate_synthetic_raw` settings of a small release: the raw files the stand-in serves, or a reader's local ones."""


@contextlib.contextmanager
def serve_raw_files(raw_dir: Path) -> Iterator[tuple[str, list, dict]]:
    """`(endpoint, requests, files)` while the server runs: `requests` gets `(method, path)` per request, `files`
    maps each served name (`raw/<folder>/<file>.jsonl`) to its bytes."""
    files = {f"raw/{path.parent.name}/{path.name}": path.read_bytes() for path in raw_dir.glob("*_categories/*.jsonl")}
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

        def do_HEAD(self):
            self._answer(False)

        def do_GET(self):
            self._answer(True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests, files
    finally:
        server.shutdown()
        server.server_close()
