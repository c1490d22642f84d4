"""How fast can the CPU feed a GPU? The input pipeline per stage, old path against the tensor path.

The data: `--num-images` rendered product photos stored as 256 px JPEGs (quality 90, as the builder stores
them) in a `datasets` Dataset with an `Image` feature, and titles of ~14 words tokenised to 77 tokens, for
224 px CLIP inputs (`openai/clip-vit-base-patch16`'s processor settings).

* old path (`--image_pipeline processor`): `NodeTransform` with `CLIPImageProcessor` (PIL backend; the
  torchvision backend is not installed with slip_hf) in the data workers: decode, resize, crop, normalise;
* tensor path (`--image_pipeline tensor`): the workers only decode to uint8 and tokenise (`decode_only`); the
  `PixelPipeline` resizes, crops, augments and normalises whole batches in torch on the training device.

Per stage, one core (`torch.set_num_threads(1)`): decode; old `CLIPImageProcessor`; PIL -> uint8 tensor;
tokeniser; `NodeTransform` per sample on both paths (with and without augmentation); the device-side
`PixelPipeline` on the CPU (and on the GPU when there is one). Then a `DataLoader` with 2 workers end to end
(collated batches of 256, the tensor path's device step included, on the CPU). Ratios against the old path.

    python benchmarks/input_pipeline.py            # ~2 min on 2 cores
"""

import argparse
import io
import time

import numpy as np
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage
from transformers import CLIPImageProcessorPil

from slip_hf.data.synthetic import BACKGROUNDS, COLORS, SHAPES, render_product_image
from slip_hf.graph_batching import SlipDataCollator
from slip_hf.pixels import PixelPipeline, decode_image
from slip_hf.processing import NodeTransform, RandomResizedCropFlip
from slip_hf.toy import train_toy_tokenizer

WORDS = ("acme", "orbit", "wireless", "noise", "cancelling", "headphones", "black", "usb-c", "charger", "fast",
         "65w", "laptop", "sleeve", "15", "inch", "water", "resistant", "model", "series", "pro", "max", "mini")


def make_dataset(num: int, size: int = 256, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images, titles = [], []
    colors = list(COLORS.values())
    for index in range(num):
        image = render_product_image(SHAPES[index % len(SHAPES)], colors[index % len(colors)], BACKGROUNDS[index % 6], size, rng)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append({"bytes": buffer.getvalue(), "path": None})
        titles.append(" ".join(rng.choice(WORDS, size=14)))
    features = Features({"node_id": Value("int64"), "image": Image(), "title": Value("string")})
    return Dataset.from_dict({"node_id": list(range(num)), "image": images, "title": titles}, features=features)


def rate(function, items: int, repeat: int = 3) -> float:
    """Items per second, best of `repeat` after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = make_dataset(args.num_images)
    raw = [row["image"] for row in dataset.select_columns(["image"])]  # decoded once for the per-stage timings
    encoded = [io.BytesIO(item["bytes"]) for item in dataset.with_format("arrow")["image"].to_pylist()]
    processor = CLIPImageProcessorPil()  # openai/clip-vit-base-patch16's settings: 224 shortest edge, 224 crop
    tokenizer = train_toy_tokenizer(list(dataset["title"]), vocab_size=2000, max_length=77)
    titles = list(dataset["title"])
    n = len(raw)

    def decode():
        for item in encoded:
            item.seek(0)
            PILImage.open(item).convert("RGB")

    stages = {
        "JPEG decode (PIL)": rate(decode, n),
        "CLIPImageProcessor (old path)": rate(lambda: processor(images=raw, return_tensors="np"), n),
        "PIL -> uint8 tensor": rate(lambda: [decode_image(image) for image in raw], n),
        "tokenizer (77 tokens)": rate(lambda: tokenizer(titles, padding="max_length", truncation=True, max_length=77), n),
    }
    batch = {"node_id": list(dataset["node_id"]), "title": titles}
    old = NodeTransform(processor, tokenizer, max_length=77, label_column=None)
    old_augmented = NodeTransform(processor, tokenizer, max_length=77, label_column=None, image_augmentation=RandomResizedCropFlip())
    new = NodeTransform(processor, tokenizer, max_length=77, label_column=None, decode_only=True)

    def transform(node_transform):
        def run():
            for item in encoded:
                item.seek(0)
            node_transform({**batch, "image": encoded})
        return run

    per_sample = {
        "old: NodeTransform (decode + processor + tokens)": rate(transform(old), n),
        "old: NodeTransform, augmented": rate(transform(old_augmented), n),
        "tensor path: NodeTransform(decode_only) (decode + tokens)": rate(transform(new), n),
    }
    # the batch as the collator hands it over (a channels-last uint8 stack)
    collated = SlipDataCollator(None)([{"node_id": i, "images": decode_image(image), "input_ids": [0]} for i, image in enumerate(raw)])
    uint8 = collated["images"]
    keys = list(range(n))
    plain, augmented = PixelPipeline.from_image_processor(processor), PixelPipeline.from_image_processor(processor, augment=True)
    device_side = {
        "PixelPipeline on the CPU": rate(lambda: plain(uint8), n),
        "PixelPipeline on the CPU, augmented": rate(lambda: augmented(uint8, keys=keys), n),
    }
    if torch.cuda.is_available():
        on_gpu = uint8.cuda()
        for name, pipeline, pipeline_keys in (("", plain, None), (", augmented", augmented, keys)):
            def gpu_run(pipeline=pipeline, pipeline_keys=pipeline_keys):
                pipeline(on_gpu, keys=pipeline_keys)
                torch.cuda.synchronize()
            device_side[f"PixelPipeline on the GPU{name}"] = rate(gpu_run, n)

    print(f"{n} JPEG product photos of 256 px -> 224 px CLIP inputs, 77-token titles; one core (samples/s)\n")
    print("| Stage | samples/s per core |\n|---|---:|")
    for name, value in {**stages, **per_sample, **device_side}.items():
        print(f"| {name} | {value:,.0f} |")
    old_rate = per_sample["old: NodeTransform (decode + processor + tokens)"]
    new_rate = per_sample["tensor path: NodeTransform(decode_only) (decode + tokens)"]
    print(f"\nCPU-side work per core: tensor path {new_rate:,.0f} samples/s vs old {old_rate:,.0f}: {new_rate / old_rate:.1f}x "
          f"(augmented old path: {per_sample['old: NodeTransform, augmented']:,.0f}); target 1,500.")

    torch.set_num_threads(2)
    print(f"\nDataLoader, {args.workers} workers, batches of {args.batch_size}, end to end on the CPU (samples/s):\n")
    print("| Path | samples/s |\n|---|---:|")
    results = {}
    for name, node_transform, pipeline in (("old (processor in the workers)", old, None),
                                           ("tensor path (decode in the workers, PixelPipeline in the main process)", new, plain)):
        loader = torch.utils.data.DataLoader(
            dataset.with_transform(node_transform), batch_size=args.batch_size, num_workers=args.workers,
            collate_fn=SlipDataCollator(None, tokenizer=tokenizer), persistent_workers=True,
        )

        def epoch(loader=loader, pipeline=pipeline):
            for collated in loader:
                if pipeline is not None:
                    pipeline(collated["images"])

        results[name] = rate(epoch, n, repeat=2)  # the warm-up epoch starts the workers
        print(f"| {name} | {results[name]:,.0f} |", flush=True)
    old_loader, new_loader = results.values()
    print(f"\nEnd to end: {new_loader / old_loader:.1f}x the old path.")


if __name__ == "__main__":
    main()
