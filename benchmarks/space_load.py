"""The Space under visitors: a real `slip-hf serve` process, and 1, 4 and 16 concurrent visitors
(`gradio_client`, over loopback), each sending `--searches` different searches, text and image (transparent
PNG cut-outs). A search's latency is its API call (the answer holds the result images' URLs); then the visitor
fetches the result images it has not seen yet, as a browser does with its cache, and the "page" latency adds
that. Prints searches/s and the p50/p95 latencies per level, counts failed searches, failed image fetches and
answers that are not the visitor's own (each answer is compared with the one the same query got alone, before
the load), and reads the server's log for tracebacks.

    slip-hf demo                                                    # writes slip_demo/ (runs and dataset)
    python benchmarks/space_load.py --model slip_demo/runs/slip-seed0 slip_demo/runs/clip-seed0 --dataset slip_demo/dataset
"""

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["charger", "case", "earbuds", "sleeve", "cable", "stand", "mouse", "keyboard", "lamp", "speaker", "red", "black",
         "blue", "white", "usb-c", "wireless", "laptop", "phone", "travel", "fast"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(models: list[str], dataset: str, split: str, cache_dir: str, log_path: Path, concurrency: int) -> tuple:
    """`slip-hf serve` in its own process, its output in `log_path`; returns `(process, url)` once it answers."""
    import requests

    port = free_port()
    command = [sys.executable, "-m", "slip_hf.cli", "serve", "--model", *models, "--dataset", dataset, "--split", split,
               "--cache_dir", cache_dir, "--port", str(port), "--concurrency", str(concurrency)]
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slip-hf serve exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError("slip-hf serve did not answer within 600 s")


def cut_outs(folder: Path, count: int) -> list[str]:
    """Transparent PNGs (a coloured block on alpha 0, another colour hidden under it), as visitors upload them."""
    rng = np.random.default_rng(0)
    paths = []
    for number in range(count):
        image = Image.new("RGBA", (96, 80), (*rng.integers(0, 255, 3).tolist(), 0))
        image.paste((*rng.integers(0, 255, 3).tolist(), 255), (20, 15, 76, 65))
        path = folder / f"upload-{number}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def queries(count: int, visitor: int) -> list[str]:
    rng = np.random.default_rng(1000 + visitor)
    return [" ".join(rng.choice(WORDS, size=3, replace=False)) for _ in range(count)]


def captions(result) -> list:
    """The titles of each model's result gallery in a search's answer (status, gallery, gallery, ...)."""
    return [[item.get("caption") for item in gallery] for gallery in result[1:] if isinstance(gallery, list)]


def image_urls(result) -> list[str]:
    return [item["image"]["url"] for gallery in result[1:] if isinstance(gallery, list) for item in gallery]


def search(client, kind: str, value: str):
    from gradio_client import handle_file

    if kind == "text":
        return client.predict(value, api_name="/search_text")
    return client.predict(handle_file(value), api_name="/search_image")


def visit(url: str, number: int, searches: int, uploads: list[str], reference: dict, ready, results) -> None:
    """One visitor, in its own process (as visitors are separate browsers): `searches` searches, every other one
    by image, each followed by fetching the result images this visitor has not seen yet."""
    import requests
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    browser, seen = requests.Session(), set()
    texts = queries(searches, number)
    row = {"latencies": [], "pages": [], "failures": [], "fetch_failures": [], "wrong": []}
    ready.wait()  # every visitor starts at once
    for step in range(searches):
        kind, value = ("image", uploads[(number + step) % len(uploads)]) if step % 2 else ("text", texts[step])
        start = time.perf_counter()
        try:
            result = search(client, kind, value)
        except Exception as error:  # noqa: BLE001 - every failure is counted and reported
            row["failures"].append(f"{kind} {value!r}: {type(error).__name__}: {error}")
            continue
        row["latencies"].append(time.perf_counter() - start)
        for image_url in image_urls(result):
            if image_url in seen:
                continue
            try:
                response = browser.get(image_url, timeout=60)
                response.raise_for_status()
                Image.open(io.BytesIO(response.content)).verify()  # the whole file arrived
                seen.add(image_url)
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                row["fetch_failures"].append(f"{image_url}: {type(error).__name__}: {error}")
        row["pages"].append(time.perf_counter() - start)
        if (kind, value) in reference and captions(result) != reference[(kind, value)]:
            row["wrong"].append(f"{kind} {value!r}: {result[0]!r}, {captions(result)} against {reference[(kind, value)]}")
    results.put(row)


def run_level(url: str, visitors: int, searches: int, uploads: list[str], reference: dict) -> dict:
    """`visitors` visitor processes at once; their searches/s and latencies."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(visitors + 1), context.Queue()
    processes = [context.Process(target=visit, args=(url, number, searches, uploads, reference, ready, results))
                 for number in range(visitors)]
    for process in processes:
        process.start()
    ready.wait()
    start = time.perf_counter()
    rows = [results.get(timeout=600) for _ in processes]
    seconds = time.perf_counter() - start
    for process in processes:
        process.join()
    merged = {key: [item for row in rows for item in row[key]] for key in rows[0]}

    def percentile(values: list[float], share: float) -> float | None:
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else None

    return {
        "visitors": visitors, "searches": visitors * searches, "failed": len(merged["failures"]), "wrong": len(merged["wrong"]),
        "failed_image_fetches": len(merged["fetch_failures"]), "searches_per_s": len(merged["latencies"]) / seconds,
        "p50_ms": percentile(merged["latencies"], 0.5), "p95_ms": percentile(merged["latencies"], 0.95),
        "page_p50_ms": percentile(merged["pages"], 0.5), "page_p95_ms": percentile(merged["pages"], 0.95),
        "errors": merged["failures"][:5] + merged["wrong"][:5] + merged["fetch_failures"][:5],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", required=True, help="one or two checkpoints, as slip-hf serve takes them")
    parser.add_argument("--dataset", required=True, help="the dataset folder")
    parser.add_argument("--split", default="test", help="catalogue split (default: test)")
    parser.add_argument("--visitors", type=int, nargs="+", default=[1, 4, 16], help="concurrent visitors per level")
    parser.add_argument("--searches", type=int, default=10, help="searches per visitor (default: 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="slip-hf serve --concurrency (default: 8)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slip-space-load-") as scratch:
        scratch = Path(scratch)
        log_path = scratch / "server.log"
        started = time.perf_counter()
        process, url = start_server(args.model, args.dataset, args.split, str(scratch / "cache"), log_path, args.concurrency)
        startup = time.perf_counter() - started
        try:
            from gradio_client import Client

            uploads = cut_outs(scratch, 4)
            alone = Client(url, verbose=False, download_files=False)
            reference = {}
            for number in range(max(args.visitors)):  # each query's answer when it is the only one
                for text in queries(args.searches, number):
                    reference[("text", text)] = captions(search(alone, "text", text))
            for upload in uploads:
                reference[("image", upload)] = captions(search(alone, "image", upload))
            rows = [run_level(url, visitors, args.searches, uploads, reference) for visitors in args.visitors]
        finally:
            process.terminate()
            process.wait(timeout=60)
        log = log_path.read_text()
    tracebacks = log.count("Traceback (most recent call last)")
    print(f"slip-hf serve: {', '.join(args.model)} over {args.dataset} ({args.split}); started and answering in "
          f"{startup:.1f} s; {os.cpu_count()} cores\n")
    print("| visitors | searches | failed | not their own | searches/s | search p50 | p95 | with new images p50 | p95 |"
          "\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['visitors']} | {row['searches']} | {row['failed'] + row['failed_image_fetches']} | {row['wrong']} | "
              f"{row['searches_per_s']:.1f} | {row['p50_ms']:,.0f} ms | {row['p95_ms']:,.0f} ms | {row['page_p50_ms']:,.0f} ms | "
              f"{row['page_p95_ms']:,.0f} ms |")
    print(f"\ntracebacks in the server's log: {tracebacks}")
    for row in rows:
        for error in row["errors"]:
            print(f"  {row['visitors']} visitors: {error}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "tracebacks": tracebacks, "startup_s": startup}, indent=1))
    return 0 if tracebacks == 0 and all(row["failed"] == row["wrong"] == row["failed_image_fetches"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
