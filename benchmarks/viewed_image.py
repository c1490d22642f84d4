"""What decoding an image as a person sees it costs: `slip_hf.viewed_image.viewed_rgb` against Pillow's plain
`open + convert("RGB")`, per 256 px JPEG (the builder's stored images), and per transparent PNG, best of 3 rounds.

    python benchmarks/viewed_image.py          # ~10 s on 2 cores
"""

import argparse
import io
import time

import numpy as np
from PIL import Image

from slip_hf.viewed_image import viewed_rgb


def encoded(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    if kind == "png":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray((rng.random((256, 256)) > 0.5).astype(np.uint8) * 255))
        image.save(buffer, "PNG")
    else:
        image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def best_microseconds(function, data: bytes, repeats: int) -> float:
    function(data)
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            function(data)
        rounds.append((time.perf_counter() - start) / repeats * 1e6)
    return min(rounds)


def plain(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def viewed(data: bytes) -> np.ndarray:
    return np.asarray(viewed_rgb(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=500)
    args = parser.parse_args()
    print("| image | convert(\"RGB\") | viewed_rgb | ratio |\n|---|---:|---:|---:|")
    for kind, label in (("jpeg", "256 px RGB JPEG"), ("png", "256 px RGBA PNG, half transparent")):
        data = encoded(kind)
        baseline, ours = best_microseconds(plain, data, args.repeats), best_microseconds(viewed, data, args.repeats)
        print(f"| {label} | {baseline:,.0f} µs | {ours:,.0f} µs | {ours / baseline:.2f}× |")


if __name__ == "__main__":
    main()
