"""A product-domain structure benchmark in ARO's format, made from a built dataset of the embedded generator.

Two kinds of case, both from pairs of items of one split whose titles name a colour and a product type
("lumen glide-000 purple controllers, model 1"):

* attribute binding (`visual_genome_attribution.json`): the two items side by side (on a square canvas, which
  CLIP's centre crop keeps whole); true caption "purple
  controllers and green consoles", false "green controllers and purple consoles", the same words with the
  colours bound to the other product;
* direction of "for" (`visual_genome_relation.json`, relation "for"): a co-purchase pair (the generator's
  1-hop neighbours are complements), the main item large with the accessory inset in its lower right corner;
  true "consoles for controllers" read as "the inset one for the large one", false the reverse.

`slip-hf evaluate-aro --aro_dir <out_dir>` scores a model on it like on ARO. The macro average over attribute
pairs counts pairs with >= 25 cases (ARO's rule): with the generator's 8 colours (56 ordered pairs) that takes
about 1,500 attribute cases, the default.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ..viewed_image import viewed_rgb
from .hub import load_copurchase_graph
from .synthetic import COLORS

_TITLE = re.compile(r"\b(?P<colour>" + "|".join(COLORS) + r")\s+(?P<product>[a-z ]+?)(?:,|$)")


def _colour_and_product(title: str) -> tuple[str, str] | None:
    match = _TITLE.search(title.lower())
    return (match.group("colour"), match.group("product").strip()) if match else None


def write_product_structure_benchmark(
    dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, config_name: str = "electronics", split: str = "test",
    num_cases: int = 1500, image_size: int = 64, seed: int = 0,
) -> dict[str, int]:
    """Write `images/`, `visual_genome_attribution.json` and `visual_genome_relation.json` under `out_dir`.

    Returns:
        The number of cases of each file.

    Raises:
        ValueError: if the split has no two items with parseable titles of different colours and products.
    """
    graph = load_copurchase_graph(dataset_dir, config_name)
    nodes = graph.nodes[split]
    parsed = {int(i): _colour_and_product(t) for i, t in zip(nodes["node_id"], nodes["title"])}
    parsed = {i: p for i, p in parsed.items() if p}
    row_of = {int(i): r for r, i in enumerate(nodes["node_id"])}
    ids = np.array(sorted(parsed))
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    def image(node_id: int, size: int) -> Image.Image:
        return viewed_rgb(nodes[row_of[node_id]]["image"]).resize((size, size), Image.BICUBIC)

    attribution = []
    for _ in range(num_cases * 20):
        if len(attribution) >= num_cases or ids.size < 2:
            break
        a, b = (int(x) for x in rng.choice(ids, 2, replace=False))
        (colour_a, product_a), (colour_b, product_b) = parsed[a], parsed[b]
        if colour_a == colour_b or product_a == product_b:
            continue
        # side by side on a square grey canvas, so that CLIP's centre crop keeps both items whole
        canvas = Image.new("RGB", (2 * image_size, 2 * image_size), (128, 128, 128))
        canvas.paste(image(a, image_size), (0, image_size // 2))
        canvas.paste(image(b, image_size), (image_size, image_size // 2))
        name = f"attribution_{len(attribution):05d}.png"
        canvas.save(out / "images" / name)
        attribution.append({
            "image_path": name, "bbox_x": 0, "bbox_y": 0, "bbox_w": 2 * image_size, "bbox_h": 2 * image_size,
            "attributes": [colour_a, colour_b],
            "true_caption": f"{colour_a} {product_a} and {colour_b} {product_b}",
            "false_caption": f"{colour_b} {product_a} and {colour_a} {product_b}",
        })

    in_split = np.zeros(graph.num_nodes, dtype=bool)
    in_split[ids] = True
    src, dst = np.asarray(graph.edges["src"]), np.asarray(graph.edges["dst"])
    pairs = [(int(s), int(d)) for s, d in zip(src, dst) if in_split[s] and in_split[d] and parsed[int(s)][1] != parsed[int(d)][1]]
    relation = []
    for index in rng.permutation(len(pairs))[:num_cases]:
        main, accessory = pairs[index] if rng.random() < 0.5 else pairs[index][::-1]
        canvas = image(main, image_size)
        inset = image_size * 9 // 20
        canvas.paste(image(accessory, inset), (image_size - inset, image_size - inset))
        name = f"relation_{len(relation):05d}.png"
        canvas.save(out / "images" / name)
        relation.append({
            "image_path": name, "bbox_x": 0, "bbox_y": 0, "bbox_w": image_size, "bbox_h": image_size,
            "relation_name": "for",
            "true_caption": f"{parsed[accessory][1]} for {parsed[main][1]}",
            "false_caption": f"{parsed[main][1]} for {parsed[accessory][1]}",
        })
    if not attribution:
        raise ValueError(f"{dataset_dir}/{config_name} [{split}]: no two items with colour + product titles to pair.")
    (out / "visual_genome_attribution.json").write_text(json.dumps(attribution, indent=1))
    (out / "visual_genome_relation.json").write_text(json.dumps(relation, indent=1))
    return {"attribution": len(attribution), "relation": len(relation)}


__all__ = ["write_product_structure_benchmark"]
