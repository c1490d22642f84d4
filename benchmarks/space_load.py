"""The Space under visitors: a real `slip-hf serve` process, and 1, 4 and 16 concurrent visitors
(`gradio_client`, over loopback), each sending `--searches` different searches, text and image (transparent
PNG cut-outs). A search's latency is its API call (the answer holds the result images' URLs). Two kinds of
visitors: "page" visitors then fetch the result images they have not seen yet, as a browser does with its
cache (the "with new images" latency adds that); "api" visitors, programs calling the Space's API, take the
answer only. Prints searches/s and the p50/p95 latencies per level, counts failed searches, failed image fetches and
answers that are not the visitor's own (each answer is compared with the one the same query got alone, before
the load), and reads the server's log for tracebacks.

    slip-hf demo                                                    # writes slip_demo/ (runs and dataset)
    python benchmarks/space_load.py --model slip_demo/runs/slip-seed0 slip_demo/runs/clip-seed0 --dataset slip_demo/dataset
    python benchmarks/space_load.py --model ... --dataset slip_demo/dataset --items 300000   # a catalogue of Electronics'
                          # size: the first start (the index build), the cached start, and searches over it (~25 min)
    python benchmarks/space_load.py --model ... --dataset slip_demo/dataset --items 300000 --index   # slip-hf embed
                          # first (timed), then two starts on the saved index, and searches over it
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


def start_server(models: list[str], dataset: str, split: str, cache_dir: str, log_path: Path, concurrency: int,
                 threads_per_search: int = 1, wait_s: float = 600, indexes: list[str] | None = None) -> tuple:
    """`slip-hf serve` in its own process (on saved `indexes`, when given), its output in `log_path`; returns
    `(process, url)` once it answers."""
    import requests

    port = free_port()
    source = ["--index", *indexes] if indexes else ["--model", *models, "--dataset", dataset, "--split", split]
    command = [sys.executable, "-m", "slip_hf.cli", "serve", *source,
               "--cache_dir", cache_dir, "--port", str(port), "--concurrency", str(concurrency),
               "--threads_per_search", str(threads_per_search)]
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"slip-hf serve exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError(f"slip-hf serve did not answer within {wait_s:.0f} s")


def scaled_catalogue(dataset: str, split: str, items: int, out: Path) -> Path:
    """A dataset folder whose `test` split holds `items` items: the split's items repeated, each copy new nodes
    (node ids shifted, " #k" after the title; the same image bytes), with each copy's edges, as a catalogue of
    a real category's size."""
    from datasets import Image as ImageFeature
    from datasets import concatenate_datasets, disable_progress_bars

    from slip_hf.data import load_config

    disable_progress_bars()

    nodes = load_config(dataset, "electronics", split=split).cast_column("image", ImageFeature(decode=False))
    edges = load_config(dataset, "electronics_edges", split="train")
    size, copies = len(nodes), -(-items // len(nodes))
    row_of = {node: row for row, node in enumerate(nodes["node_id"])}  # node ids become 0..items-1, copy by copy
    inside = edges.filter(lambda batch: [s in row_of and d in row_of for s, d in zip(batch["src"], batch["dst"])], batched=True)

    def renamed(copy: int):
        def rename(batch, indices):
            return {"node_id": [copy * size + row for row in indices],
                    "title": [f"{title} #{copy}" if copy else title for title in batch["title"]]}
        return rename

    def moved(copy: int):
        def move(batch):
            return {end: [copy * size + row_of[node] for node in batch[end]] for end in ("src", "dst")}
        return move

    scaled = concatenate_datasets([nodes.map(renamed(copy), batched=True, with_indices=True) for copy in range(copies)]).select(range(items))
    scaled_edges = concatenate_datasets([inside.map(moved(copy), batched=True) for copy in range(copies)])
    scaled_edges = scaled_edges.filter(lambda batch: [max(s, d) < items for s, d in zip(batch["src"], batch["dst"])], batched=True)
    (out / "electronics").mkdir(parents=True)
    (out / "electronics_edges").mkdir()
    scaled.to_parquet(str(out / "electronics" / "test-00000-of-00001.parquet"))
    scaled_edges.to_parquet(str(out / "electronics_edges" / "train-00000-of-00001.parquet"))
    (out / "README.md").write_text("---\nconfigs:\n- config_name: electronics\n  data_files:\n  - split: test\n"
                                   "    path: electronics/test-*.parquet\n- config_name: electronics_edges\n  data_files:\n"
                                   "  - split: train\n    path: electronics_edges/*.parquet\n---\n")
    return out


def peak_memory_gb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in GB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def cache_files(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.is_dir() else set()


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


def visit(url: str, number: int, searches: int, uploads: list[str], reference: dict, fetch_images: bool, ready, results) -> None:
    """One visitor, in its own process (as visitors are separate browsers): `searches` searches, every other one
    by image; a page visitor (`fetch_images`) then fetches the result images it has not seen yet, as a browser
    does with its cache; an API visitor (a program using `gradio_client`) takes the answer and goes on."""
    import requests
    from gradio_client import Client

    # ssl_verify=False: this is http:// on loopback (no TLS); gradio_client opens a new httpx client per call, which
    # otherwise loads the CA bundle every time (about 47 ms of the visitor's CPU per search, on the server's cores)
    client = Client(url, verbose=False, download_files=False, ssl_verify=False)
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
        for image_url in image_urls(result) if fetch_images else []:
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


def run_level(url: str, visitors: int, searches: int, uploads: list[str], reference: dict, kind: str) -> dict:
    """`visitors` visitor processes of a `kind` ("page" or "api") at once; their searches/s and latencies."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(visitors + 1), context.Queue()
    processes = [context.Process(target=visit, args=(url, number, searches, uploads, reference, kind == "page", ready, results))
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
        "kind": kind, "visitors": visitors, "searches": visitors * searches, "failed": len(merged["failures"]), "wrong": len(merged["wrong"]),
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
    parser.add_argument("--kinds", nargs="+", choices=["page", "api"], default=["page", "api"],
                        help="page: visitors in a browser, who fetch the result images they have not seen; api: programs "
                             "calling the API, who take the answer only (default: both)")
    parser.add_argument("--concurrency", type=int, default=8, help="slip-hf serve --concurrency (default: 8)")
    parser.add_argument("--items", type=int, default=None,
                        help="repeat the split's items into a catalogue of this many (e.g. 300000, Electronics' size), and "
                             "time the index build (first start) and the cached start")
    parser.add_argument("--index", action="store_true",
                        help="embed the catalogue first (slip-hf embed, timed) and serve its saved index (--index)")
    parser.add_argument("--threads_per_search", type=int, default=1, help="slip-hf serve --threads_per_search (default: 1)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slip-space-load-") as scratch:
        scratch = Path(scratch)
        log_path = scratch / "server.log"
        dataset, split, starts = args.dataset, args.split, []
        if args.items:
            started = time.perf_counter()
            dataset, split = str(scaled_catalogue(args.dataset, args.split, args.items, scratch / "catalogue")), "test"
            print(f"catalogue of {args.items:,} items written in {time.perf_counter() - started:.0f} s", flush=True)
        indexes = []
        for number, model in enumerate(args.model if args.index else []):
            started, out = time.perf_counter(), scratch / f"embeddings-{number}"
            subprocess.run([sys.executable, "-m", "slip_hf.cli", "embed", "--model_name_or_path", model, "--dataset_name",
                            dataset, "--split", split, "--output_dir", str(out)], check=True, stdout=subprocess.DEVNULL)
            print(f"slip-hf embed {model}: {time.perf_counter() - started:.0f} s", flush=True)
            indexes.append(str(out))
        process = None
        for _ in range(2 if args.items else 1):  # with --items: the first start builds the index, the second reads it
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
            cached, started = cache_files(scratch / "cache"), time.perf_counter()
            process, url = start_server(args.model, dataset, split, str(scratch / "cache"), log_path, args.concurrency,
                                        args.threads_per_search, wait_s=7200 if args.items else 600, indexes=indexes)
            starts.append({"seconds": time.perf_counter() - started, "peak_memory_gb": peak_memory_gb(process.pid),
                           "new_cache_files": len(cache_files(scratch / "cache") - cached)})
        try:
            from gradio_client import Client

            uploads = cut_outs(scratch, 4)
            alone = Client(url, verbose=False, download_files=False, ssl_verify=False)
            reference = {}
            for number in range(max(args.visitors)):  # each query's answer when it is the only one
                for text in queries(args.searches, number):
                    reference[("text", text)] = captions(search(alone, "text", text))
            for upload in uploads:
                reference[("image", upload)] = captions(search(alone, "image", upload))
            rows = [run_level(url, visitors, args.searches, uploads, reference, kind) for kind in args.kinds for visitors in args.visitors]
        finally:
            process.terminate()
            process.wait(timeout=60)
        log = log_path.read_text()
    tracebacks = log.count("Traceback (most recent call last)")
    print(f"slip-hf serve: {', '.join(args.model)} over {dataset} ({split}); {os.cpu_count()} cores")
    for number, start in enumerate(starts):
        what = "second start" if number else ("first start (writing the image files)" if args.index else
                                              "start (embedding the catalogue unless cached)")
        print(f"{what}: answering in {start['seconds']:.1f} s, peak memory {start['peak_memory_gb']:.2f} GB, "
              f"{start['new_cache_files']:,} files written to the cache")
    print()
    print("| visitors | kind | searches | failed | not their own | searches/s | search p50 | p95 | with new images p50 | p95 |"
          "\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        page = f"{row['page_p50_ms']:,.0f} ms | {row['page_p95_ms']:,.0f} ms" if row["kind"] == "page" else "– | –"
        print(f"| {row['visitors']} | {row['kind']} | {row['searches']} | {row['failed'] + row['failed_image_fetches']} | "
              f"{row['wrong']} | {row['searches_per_s']:.1f} | {row['p50_ms']:,.0f} ms | {row['p95_ms']:,.0f} ms | {page} |")
    print(f"\ntracebacks in the server's log: {tracebacks}")
    for row in rows:
        for error in row["errors"]:
            print(f"  {row['visitors']} {row['kind']} visitors: {error}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "tracebacks": tracebacks, "starts": starts}, indent=1))
    return 0 if tracebacks == 0 and all(row["failed"] == row["wrong"] == row["failed_image_fetches"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
