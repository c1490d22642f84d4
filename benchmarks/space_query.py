"""How fast does the Space answer? One query over a 30k-item index on 2 CPU cores: encoding the query (the
text tower of a ViT-B/16-sized CLIP with random weights, and the demo's tiny one) plus the top-k search over
the cached embeddings (`ModelIndex.search`), median of `--queries` queries after a warm-up. Also the rank of
the true item (`rank_of`), which the comparison view computes per model.

    python benchmarks/space_query.py          # ~1 min on 2 cores
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from slip_hf.space.index import ModelIndex
from slip_hf.toy import train_toy_tokenizer

TITLES = [f"orbit nova-{i:03d} {color} {kind}, model {i % 6 + 1}" for i, (color, kind) in enumerate(
    [(c, k) for c in ("red", "black", "white", "blue") for k in ("usb-c charger", "phone case", "wireless earbuds", "laptop sleeve")] * 4)]


def median_ms(function, repeats: int) -> float:
    for _ in range(5):  # warm-up: the first calls allocate and pick kernels
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    tokenizer = train_toy_tokenizer(TITLES, vocab_size=400, max_length=77)
    sizes = {
        "ViT-B/16 text tower (12 x 512, projection 512)": CLIPConfig(
            text_config={"vocab_size": tokenizer.vocab_size + 8, "max_position_embeddings": 77}, projection_dim=512),
        "demo's tiny CLIP (2 x 128)": CLIPConfig(
            text_config={"vocab_size": tokenizer.vocab_size + 8, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "max_position_embeddings": 77},
            vision_config={"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 2,
                           "image_size": 32, "patch_size": 8}, projection_dim=128),
    }
    print(f"torch threads: {torch.get_num_threads()}; {args.items:,} items; median of {args.queries} queries (ms)\n")
    print("| Model | encode query | search (top 12) | rank of the true item | total |\n|---|---:|---:|---:|---:|")
    for name, config in sizes.items():
        torch.manual_seed(0)
        model = CLIPModel(config).eval()
        dim = config.projection_dim
        embeddings = F.normalize(torch.randn(args.items, dim), dim=-1)
        index = ModelIndex(name, model, None, tokenizer, embeddings, embeddings.clone(), 77)
        query = index.encode_text("usb-c charger")
        encode = median_ms(lambda: index.encode_text("usb-c charger for a laptop"), args.queries)
        search = median_ms(lambda: index.search(query, "image", 12), args.queries)
        rank = median_ms(lambda: index.rank_of(query, "image", 123), args.queries)
        print(f"| {name} | {encode:.1f} | {search:.1f} | {rank:.1f} | {encode + search:.1f} |", flush=True)


if __name__ == "__main__":
    main()
