"""The image downloader against a loopback HTTP server that misbehaves in every way the module lists."""

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from slip_hf.data.images import ImageDownloader


def _jpeg(size=(40, 30), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


GOOD = _jpeg((400, 300))


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: bytes = b"", content_type="image/jpeg", length: int | None = None, headers=()):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server API)
        path = self.path
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        if path == "/ok.jpg":
            self._send(200, GOOD)
        elif path == "/missing.jpg":
            self._send(404, b"not found", "text/plain")
        elif path == "/error.jpg":
            self._send(500, b"boom", "text/plain")
        elif path == "/flaky.jpg":  # fails once, then works: a retry must recover it
            if _Handler.hits[path] == 1:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, GOOD)
        elif path == "/slow.jpg":
            time.sleep(1.5)
            self._send(200, GOOD)
        elif path == "/redirect.jpg":
            self._send(302, headers=[("Location", "/ok.jpg")])
        elif path == "/loop.jpg":
            self._send(302, headers=[("Location", "/loop.jpg")])
        elif path == "/truncated.jpg":  # promises more bytes than it sends, then closes
            self._send(200, GOOD[:100], length=len(GOOD))
            self.close_connection = True
        elif path == "/cut.jpg":  # a well-formed response carrying half a JPEG
            self._send(200, GOOD[: len(GOOD) // 2])
        elif path == "/page.html":
            self._send(200, b"<html>not an image</html>", "text/html")
        elif path == "/trickle.jpg":  # one byte every 0.3 s: every read is within the timeout, the whole is not
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            try:
                for byte in GOOD[:40]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.3)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: as it should
                pass
        else:
            self._send(404)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


EXPECTED = {
    "ok": ("/ok.jpg", "ok", 200),
    "missing": ("/missing.jpg", "http_error", 404),
    "error": ("/error.jpg", "http_error", 500),
    "flaky": ("/flaky.jpg", "ok", 200),
    "slow": ("/slow.jpg", "timeout", None),
    "redirect": ("/redirect.jpg", "ok", 200),
    "loop": ("/loop.jpg", "too_many_redirects", None),
    "truncated": ("/truncated.jpg", "truncated", None),
    "cut": ("/cut.jpg", "corrupt_image", None),
    "page": ("/page.html", "not_image", None),
}


def _downloader(tmp_path, **kwargs):
    settings = {"image_size": 64, "num_workers": 4, "timeout": 0.5, "retries": 1, "backoff": 0.01, "local_roots": [tmp_path]}
    return ImageDownloader(tmp_path, **{**settings, **kwargs})


def test_every_url_ends_with_its_status(tmp_path, server):
    _Handler.hits.clear()
    items = [(key, server + path) for key, (path, _, _) in EXPECTED.items()]
    items.append(("bad_scheme", "ftp://example.com/x.jpg"))
    results = _downloader(tmp_path).download(items)
    assert set(results) == set(EXPECTED) | {"bad_scheme"}
    for key, (_, status, http_status) in EXPECTED.items():
        assert results[key].status == status, (key, results[key])
        assert results[key].http_status == http_status, key
    assert results["bad_scheme"].status == "invalid_url"
    assert results["flaky"].attempts == 2 and results["error"].attempts == 2 and results["missing"].attempts == 1
    stored = Image.open(results["ok"].path)
    assert stored.format == "JPEG" and min(stored.size) == 64 and stored.size == (85, 64)  # 400x300 -> 85x64
    log_lines = (tmp_path / "download_status.jsonl").read_text().splitlines()
    assert len(log_lines) == len(items)


def test_rerun_resumes_and_retries_only_transient_failures(tmp_path, server):
    items = [(key, server + path) for key, (path, _, _) in EXPECTED.items()]
    downloader = _downloader(tmp_path)
    downloader.download(items)
    _Handler.hits.clear()
    results = downloader.download(items)
    # ok and final failures are not fetched again; 5xx, timeouts and truncated bodies are.
    fetched = {path for path in _Handler.hits}
    assert fetched == {"/error.jpg", "/slow.jpg", "/truncated.jpg"}
    assert results["ok"].status == "ok" and results["missing"].status == "http_error"
    _Handler.hits.clear()
    downloader.download(items, retry_failed=True)
    assert "/missing.jpg" in _Handler.hits and "/ok.jpg" not in _Handler.hits


def test_interrupted_run_keeps_finished_images(tmp_path, server):
    downloader = _downloader(tmp_path)
    downloader.download([("ok", server + "/ok.jpg")])
    _Handler.hits.clear()
    results = downloader.download([("ok", server + "/ok.jpg"), ("redirect", server + "/redirect.jpg")])
    assert "/ok.jpg" in _Handler.hits and _Handler.hits.get("/ok.jpg") == 1  # only via the redirect
    assert results["ok"].status == results["redirect"].status == "ok"


def test_deleted_image_is_downloaded_again(tmp_path, server):
    downloader = _downloader(tmp_path)
    first = downloader.download([("ok", server + "/ok.jpg")])["ok"]
    Path(first.path).unlink()
    assert downloader.download([("ok", server + "/ok.jpg")])["ok"].status == "ok"


def test_local_files_go_through_the_same_checks(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(GOOD)
    bad.write_bytes(b"GIF89a but broken")
    results = _downloader(tmp_path / "out", local_roots=[tmp_path]).download(
        [("good", good.as_uri()), ("bad", bad.as_uri()), ("gone", (tmp_path / "gone.jpg").as_uri())]
    )
    assert results["good"].status == "ok"
    assert results["bad"].status in ("not_image", "corrupt_image")
    assert results["gone"].status == "invalid_url"


def test_duplicate_keys_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="distinct"):
        _downloader(tmp_path).download([("a", "file:///x"), ("a", "file:///y")])


def test_a_trickling_server_hits_the_total_deadline(server, tmp_path):
    start = time.perf_counter()
    result = _downloader(tmp_path, deadline=1.0, retries=0).download([("slow", f"{server}/trickle.jpg")])["slow"]
    assert result.status == "timeout" and "deadline" in result.error
    assert time.perf_counter() - start < 5  # 40 bytes at 0.3 s each would take 12 s


def test_local_files_only_from_the_allowed_folders(tmp_path):
    allowed, private = tmp_path / "mirror", tmp_path / "private"
    allowed.mkdir()
    private.mkdir()
    (allowed / "item.jpg").write_bytes(GOOD)
    (private / "secret.jpg").write_bytes(GOOD)
    (allowed / "link.jpg").symlink_to(private / "secret.jpg")  # a symlink out of the folder is refused too
    items = [("mine", (allowed / "item.jpg").as_uri()), ("secret", (private / "secret.jpg").as_uri()),
             ("link", (allowed / "link.jpg").as_uri()), ("dotdot", f"file://{allowed}/../private/secret.jpg")]
    refused = _downloader(tmp_path / "none", local_roots=None).download(items)
    assert {key: r.status for key, r in refused.items()} == dict.fromkeys(["mine", "secret", "link", "dotdot"], "invalid_url")
    assert "--allow_local_files" in refused["mine"].error
    results = _downloader(tmp_path / "some", local_roots=[allowed]).download(items)
    assert {key: r.status for key, r in results.items()} == {"mine": "ok", "secret": "invalid_url", "link": "invalid_url",
                                                            "dotdot": "invalid_url"}
    assert "outside the allowed folders" in results["secret"].error


def test_the_builder_refuses_local_image_urls_unless_allowed(tmp_path):
    from slip_hf.data import BuildConfig, build_dataset, generate_synthetic_raw

    generate_synthetic_raw(tmp_path / "raw", num_bundles=6, shoppers_per_bundle=150, image_size=16, seed=4)
    settings = {"raw_dir": str(tmp_path / "raw"), "image_size": 16, "min_class_size": 3, "download_workers": 2, "on_bad_lines": "skip"}
    with pytest.raises(ValueError):  # every image refused: nothing left to build
        build_dataset(BuildConfig(out_dir=str(tmp_path / "refused"), **settings))
    statuses = [line for line in (tmp_path / "refused" / ".work").rglob("download_status.jsonl")][0].read_text()
    assert '"invalid_url"' in statuses and '"ok"' not in statuses
    assert build_dataset(BuildConfig(out_dir=str(tmp_path / "allowed"), allow_local_files=True, **settings)).num_nodes > 0
