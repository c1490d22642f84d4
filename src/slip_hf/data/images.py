"""Step 6 of the graph build: download, verify and resize one image per node.

[`ImageDownloader`] fetches URLs in parallel threads (`requests`, one session per thread), retries transient
failures with exponential backoff, enforces timeouts and a redirect limit, decodes the bytes into the image a
person sees (`slip_hf.viewed_image`: EXIF orientation, transparency on a background, 16-bit scaled, an
animation's first frame), resizes it and stores it as JPEG. Each stored image records which of those fixes it
took (`fixes`). Every URL ends with exactly one recorded status:

| status | meaning | retried on a re-run |
|---|---|---|
| `ok` | decoded, resized, saved | no (kept) |
| `http_error` | final HTTP status >= 400 (`http_status` says which) | 5xx, 408 and 429: yes; other 4xx: no |
| `timeout` | connect or read timeout on every attempt | yes |
| `connection_error` | refused, reset, DNS failure on every attempt | yes |
| `truncated` | the body ended before its `Content-Length` | yes |
| `too_many_redirects` | more than `max_redirects` redirects | no |
| `too_large` | more than `max_bytes` bytes | no |
| `not_image` | the bytes are not an image format Pillow knows | no |
| `corrupt_image` | a known format that fails to decode (e.g. a cut-off JPEG) | no |
| `decompression_bomb` | more pixels than `PIL.Image.MAX_IMAGE_PIXELS` (refused before decoding) | no |
| `unsupported_image` | a 32-bit image with no one 8-bit reading (see `slip_hf.viewed_image`) | no |
| `invalid_url` | not an http(s):// URL (nor an allowed file:// URL), or a missing local file | no |

Statuses are appended to `<out_dir>/download_status.jsonl` as they happen, so an interrupted run loses
nothing: a new run reads the log, keeps what is final and retries only what is not (`retry_failed=True`
retries every failure). A stored image is kept only for the same URL, the same `image_size` and background,
and the same `VIEW_VERSION` of the decoding: images stored before slip_hf 0.3.0 (`convert("RGB")`, which
kept the colour under transparent pixels and ignored the orientation) are decoded again by a rebuild.

Local files are untrusted input's favourite trick: a crafted metadata line with `file:///home/you/...` would
copy a private image into a dataset that is then pushed to the Hub. So `file://` URLs are refused
(`invalid_url`) unless `local_roots` names the folders they may come from (the embedded synthetic data, a
local image mirror, `import-graph`'s image folder); a path that resolves outside them, symlinks included, is
refused too. Allowed local files go through the same checks; their size and modification time are recorded
(`source`), so a changed local file is read again. Every download has a total `deadline`: a server that
trickles a byte every few seconds (each read within `timeout`) cannot hold a worker for minutes.
"""

import io
import json
import os
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
import urllib3
from PIL import Image
from tqdm.auto import tqdm

from ..viewed_image import FIXES, VIEW_VERSION, WHITE, ImageRefused, viewed_image

STATUS_LOG = "download_status.jsonl"
FINAL_FAILURES = frozenset({"too_many_redirects", "too_large", "not_image", "corrupt_image", "decompression_bomb",
                            "unsupported_image", "invalid_url"})
_RETRYABLE_HTTP = frozenset({408, 429})


@dataclass
class DownloadResult:
    """The outcome of one URL."""

    key: str
    url: str
    status: str
    http_status: int | None = None
    attempts: int = 0
    num_bytes: int = 0
    error: str = ""
    path: str | None = None
    elapsed_s: float = 0.0
    image_size: int | None = None
    source: str = ""
    center_crop: bool = False
    fixes: list[str] | None = None
    view_version: int = 0
    background: list[int] | None = None

    @property
    def is_final(self) -> bool:
        """Whether a re-run should keep this result rather than try again."""
        if self.status == "ok" or self.status in FINAL_FAILURES:
            return True
        if self.status == "http_error":
            return self.http_status is not None and self.http_status < 500 and self.http_status not in _RETRYABLE_HTTP
        return False


def _local_path(url: str) -> Path:
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


def _local_source(url: str) -> str:
    """`"<size>:<mtime_ns>"` of a `file://` URL's file ("" for other URLs or a missing file)."""
    if urllib.parse.urlsplit(url).scheme.lower() != "file":
        return ""
    try:
        stat = _local_path(url).stat()
    except OSError:
        return ""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class _Failure(Exception):
    def __init__(self, status: str, error: str, http_status: int | None = None, retryable: bool = False):
        super().__init__(error)
        self.status, self.error, self.http_status, self.retryable = status, error, http_status, retryable


class ImageDownloader:
    """Parallel, resumable image downloads with a per-URL status log.

    Args:
        out_dir: images go to `<out_dir>/images/`, the log to `<out_dir>/download_status.jsonl`.
        image_size: the shorter side of stored images (larger images are downscaled, aspect kept).
        center_crop: also crop stored images to their centred square, so that with `image_size` set to the
            training resolution (224 for ViT-B/16) an image is stored exactly as the model sees it after
            `CLIPImageProcessor`'s resize and centre crop: training decodes fewer pixels and resizes nothing.
        num_workers: parallel downloads.
        timeout: seconds for connecting and for each read.
        deadline: seconds for a whole download (all reads of one attempt).
        local_roots: folders that `file://` URLs may point into; `None`: no local file is read.
        retries: extra attempts after a transient failure.
        backoff: the first retry waits `backoff` seconds, then doubling.
        max_redirects: redirects followed before giving up.
        max_bytes: larger responses are refused.
        jpeg_quality: quality of the stored JPEGs.
        background: `(r, g, b)` under transparent pixels (default white).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        image_size: int = 256,
        center_crop: bool = False,
        num_workers: int = 16,
        timeout: float = 10.0,
        deadline: float = 60.0,
        local_roots: Iterable[str | os.PathLike] | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_redirects: int = 5,
        max_bytes: int = 20 << 20,
        jpeg_quality: int = 90,
        background: tuple[int, int, int] = WHITE,
    ):
        self.out_dir = Path(out_dir)
        self.image_dir = self.out_dir / "images"
        self.log_path = self.out_dir / STATUS_LOG
        self.image_size = image_size
        self.center_crop = center_crop
        self.num_workers = num_workers
        self.timeout = timeout
        self.deadline = deadline
        self.local_roots = None if local_roots is None else [Path(root).resolve() for root in local_roots]
        self.retries = retries
        self.backoff = backoff
        self.max_redirects = max_redirects
        self.max_bytes = max_bytes
        self.jpeg_quality = jpeg_quality
        self.background = [int(c) for c in background]
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"background must be three values in 0..255 (r g b), got {list(background)}.")
        self._local = threading.local()

    # -- public -------------------------------------------------------------------------------------------
    def load_log(self) -> dict[str, DownloadResult]:
        """The latest recorded result of every key (empty without a log)."""
        results: dict[str, DownloadResult] = {}
        if self.log_path.exists():
            with open(self.log_path) as handle:
                for line in handle:
                    line = line.strip()
                    if line:
                        record = DownloadResult(**json.loads(line))
                        results[record.key] = record
        return results

    def download(self, items: Iterable[tuple[str, str]], retry_failed: bool = False) -> dict[str, DownloadResult]:
        """Download `(key, url)` pairs; returns the result of every key, earlier runs' final ones included.

        A key whose last result is final (see the module table) and, for `ok`, whose file still exists, is not
        downloaded again, unless `retry_failed` asks to retry failures too.
        """
        items = list(items)
        if len({key for key, _ in items}) != len(items):
            raise ValueError("download keys must be distinct.")
        self.image_dir.mkdir(parents=True, exist_ok=True)
        previous = self.load_log()
        results: dict[str, DownloadResult] = {}
        pending = []
        for key, url in items:
            done = previous.get(key)
            if done is not None and done.url == url and self._keep(done, retry_failed):
                results[key] = done
            else:
                pending.append((key, url))
        with open(self.log_path, "a") as log, ThreadPoolExecutor(self.num_workers) as pool:
            futures = [pool.submit(self._fetch_one, key, url) for key, url in pending]
            for future in tqdm(as_completed(futures), total=len(futures), desc="images", unit=" img", leave=False):
                result = future.result()
                results[result.key] = result
                log.write(json.dumps(asdict(result)) + "\n")
                log.flush()
        return results

    def image_path(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)
        return self.image_dir / safe[:2] / f"{safe}.jpg"

    # -- one URL ------------------------------------------------------------------------------------------
    def _keep(self, result: DownloadResult, retry_failed: bool) -> bool:
        if result.status == "ok":
            return (
                result.path is not None and Path(result.path).exists() and result.image_size == self.image_size
                and result.center_crop == self.center_crop and result.source == _local_source(result.url)
                and result.view_version == VIEW_VERSION and result.background == self.background
            )
        return result.is_final and not retry_failed

    def _fetch_one(self, key: str, url: str) -> DownloadResult:
        start = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            try:
                source = _local_source(url)
                data = self._read(url)
                path, fixes = self._store(key, data)
                return DownloadResult(
                    key, url, "ok", 200 if url.startswith("http") else None, attempts, len(data), "", str(path),
                    time.perf_counter() - start, self.image_size, source, self.center_crop, sorted(fixes), VIEW_VERSION,
                    self.background,
                )
            except _Failure as failure:
                if not failure.retryable or attempts > self.retries:
                    return DownloadResult(
                        key, url, failure.status, failure.http_status, attempts, 0, failure.error[:500], None,
                        time.perf_counter() - start,
                    )
                time.sleep(self.backoff * 2 ** (attempts - 1))

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.max_redirects = self.max_redirects
            session.headers["User-Agent"] = "slip_hf-image-downloader"
            self._local.session = session
        return session

    def _read(self, url: str) -> bytes:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme == "file":
            path = _local_path(url)
            if self.local_roots is None:
                raise _Failure("invalid_url", "local files are not read (allow them with --allow_local_files)")
            resolved = path.resolve()
            if not any(resolved.is_relative_to(root) for root in self.local_roots):
                raise _Failure("invalid_url", f"{path} is outside the allowed folders")
            if not path.is_file():
                raise _Failure("invalid_url", f"no local file {path}")
            if path.stat().st_size > self.max_bytes:
                raise _Failure("too_large", f"{path.stat().st_size} bytes")
            return path.read_bytes()
        if scheme not in ("http", "https"):
            raise _Failure("invalid_url", f"unsupported URL {url!r}")
        try:
            with self._session().get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code >= 400:
                    retryable = response.status_code >= 500 or response.status_code in _RETRYABLE_HTTP
                    raise _Failure("http_error", f"HTTP {response.status_code}", response.status_code, retryable)
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise _Failure("too_large", f"Content-Length {declared}")
                body = bytearray()
                started = time.monotonic()
                # read1: whatever has arrived (at most one socket read), so the deadline is checked after each
                while chunk := response.raw.read1(1 << 16, decode_content=True):
                    body.extend(chunk)
                    if len(body) > self.max_bytes:
                        raise _Failure("too_large", f"more than {self.max_bytes} bytes")
                    if time.monotonic() - started > self.deadline:
                        raise _Failure("timeout", f"not complete within the {self.deadline:g} s deadline", retryable=True)
                if declared is not None and declared.isdigit() and len(body) < int(declared):
                    raise _Failure("truncated", f"{len(body)} of {declared} bytes", retryable=True)
                return bytes(body)
        except requests.TooManyRedirects as error:
            raise _Failure("too_many_redirects", str(error)) from error
        except (requests.Timeout, urllib3.exceptions.TimeoutError) as error:  # urllib3's: from the raw reads
            raise _Failure("timeout", str(error), retryable=True) from error
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as error:  # a body cut short
            raise _Failure("truncated", str(error), retryable=True) from error
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
            raise _Failure("truncated", str(error), retryable=True) from error
        except requests.ConnectionError as error:
            raise _Failure("connection_error", str(error), retryable=True) from error
        except requests.RequestException as error:
            raise _Failure("invalid_url", str(error)) from error

    def _store(self, key: str, data: bytes) -> tuple[Path, frozenset[str]]:
        try:
            image, fixes = viewed_image(io.BytesIO(data), self.background)
        except ImageRefused as error:
            raise _Failure(error.status, str(error)) from error
        shorter = min(image.size)
        if shorter > self.image_size:
            scale = self.image_size / shorter
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
        if self.center_crop:
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        path = self.image_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        image.save(temporary, format="JPEG", quality=self.jpeg_quality)
        os.replace(temporary, path)  # a crash never leaves a half-written image under the final name
        return path, fixes


def fix_counts(results: Iterable[DownloadResult]) -> dict[str, int]:
    """`{fix: images}` over the stored images of `results`, in `slip_hf.viewed_image.FIXES` order."""
    counts = dict.fromkeys(FIXES, 0)
    for result in results:
        for fix in result.fixes or ():
            counts[fix] += 1
    return {fix.replace("_", " "): count for fix, count in counts.items() if count}


__all__ = ["STATUS_LOG", "DownloadResult", "ImageDownloader", "fix_counts"]
