"""A small, fully offline image-text graph and tiny dual encoders (CLIP, SigLIP), for tests, the demo and benchmarks.

Nothing here is downloaded: product images are rendered with PIL, the tokenizer is trained on the titles with
the family's conventions, and the dual encoder is built from a config with random weights.

Generative model of the toy graph (after §5 of the SLIP paper): every node is an item of a *product line*
(a latent shape + colour family inside a category). Each line has a *complement* line (a phone and its
case); co-purchase edges connect items of complementary lines, so 1-hop neighbours are complements and
2-hop neighbours are mostly items of the same line (similar items). A small share of edges is noise.
"""

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, Value
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from tokenizers import decoders as tokenizer_decoders
from transformers import CLIPConfig, PreTrainedConfig, PreTrainedTokenizerFast, SiglipConfig

from .data.synthetic import BRANDS, COLORS, SHAPES, render_product_image

CATEGORIES = ("audio", "camera", "computer", "phone", "television", "gaming", "storage", "network")
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
SIGLIP_EOS_TOKEN, SIGLIP_UNK_TOKEN = "</s>", "<unk>"
FAMILIES = ("clip", "siglip")


def power_law_edges(num_nodes: int, num_edges: int, exponent: float = 2.5, seed: int = 0) -> np.ndarray:
    """Edges of a Chung-Lu random graph whose expected degrees follow a power law P(k) ~ k^-exponent.

    Returns:
        `np.ndarray` of shape `(2, num_edges)` (may hold duplicates and self loops, like raw data does).
    """
    rng = np.random.default_rng(seed)
    weights = np.arange(1, num_nodes + 1, dtype=np.float64) ** (-1.0 / (exponent - 1.0))
    weights /= weights.sum()
    permutation = rng.permutation(num_nodes)  # hubs at random ids
    return permutation[rng.choice(num_nodes, size=(2, num_edges), p=weights)]


def make_toy_graph(
    num_nodes: int = 600,
    num_categories: int = 4,
    items_per_line: int = 10,
    edges_per_node: float = 3.0,
    noise_edge_fraction: float = 0.1,
    image_size: int = 32,
    seed: int = 0,
) -> tuple[Dataset, Dataset]:
    """A product co-purchase graph with rendered images and titles.

    Returns:
        (nodes, edges): `nodes` has `node_id` (0..num_nodes-1), `title`, `image` (`datasets.Image`), `label`
        (`ClassLabel` of the category) and `product_line`; `edges` has `src`, `dst` (undirected, each once).
    """
    if not 1 <= num_categories <= len(CATEGORIES):
        raise ValueError(f"num_categories must be in 1..{len(CATEGORIES)}.")
    rng = np.random.default_rng(seed)
    num_lines = max(2, num_nodes // items_per_line)
    line_of_node = np.arange(num_nodes) % num_lines
    rng.shuffle(line_of_node)
    line_category = rng.integers(0, num_categories, size=num_lines)
    line_shape = rng.integers(0, len(SHAPES), size=num_lines)
    line_brand = rng.integers(0, len(BRANDS), size=num_lines)
    complement = np.roll(rng.permutation(num_lines), 1)  # each line's complementary line
    color_names = list(COLORS)
    backgrounds = [tuple(int(v) for v in rng.integers(90, 200, size=3)) for _ in range(num_categories)]

    titles, images = [], []
    for node in range(num_nodes):
        line = line_of_node[node]
        color = color_names[rng.integers(0, len(color_names))]
        category = CATEGORIES[line_category[line]]
        titles.append(f"{BRANDS[line_brand[line]]} {color} {SHAPES[line_shape[line]]} {category} model {line:03d}")
        images.append(
            render_product_image(SHAPES[line_shape[line]], COLORS[color], backgrounds[line_category[line]], image_size, rng)
        )

    members = [np.flatnonzero(line_of_node == line) for line in range(num_lines)]
    num_edges = int(edges_per_node * num_nodes)
    src = rng.integers(0, num_nodes, size=num_edges)
    dst = np.array([rng.choice(members[complement[line_of_node[s]]]) for s in src])
    noise = rng.random(num_edges) < noise_edge_fraction
    dst[noise] = rng.integers(0, num_nodes, size=int(noise.sum()))
    keep = src != dst
    pairs = np.unique(np.sort(np.stack([src[keep], dst[keep]]), axis=0), axis=1)

    node_features = Features(
        {
            "node_id": Value("int64"),
            "title": Value("string"),
            "image": Image(),
            "label": ClassLabel(names=list(CATEGORIES[:num_categories])),
            "product_line": Value("int64"),
        }
    )
    nodes = Dataset.from_dict(
        {
            "node_id": list(range(num_nodes)),
            "title": titles,
            "image": images,
            "label": line_category[line_of_node].tolist(),
            "product_line": line_of_node.tolist(),
        },
        features=node_features,
    )
    edges = Dataset.from_dict(
        {"src": pairs[0].tolist(), "dst": pairs[1].tolist()},
        features=Features({"src": Value("int64"), "dst": Value("int64")}),
    )
    return nodes, edges


def train_toy_tokenizer(
    texts: list[str], vocab_size: int = 512, max_length: int = 16, family: str = "clip"
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with the family's special tokens: for `"clip"`, start and end
    tokens around every text and the end token doubling as padding (as OpenAI's CLIP tokenizer does); for
    `"siglip"`, an end token `</s>` after every text that doubles as padding, and no start token (as SigLIP's)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizer_decoders.ByteLevel()
    special = [BOS_TOKEN, EOS_TOKEN] if family == "clip" else [SIGLIP_EOS_TOKEN, SIGLIP_UNK_TOKEN]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if family == "siglip":
        eos_id = tokenizer.token_to_id(SIGLIP_EOS_TOKEN)
        tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {SIGLIP_EOS_TOKEN}",
                                                                 special_tokens=[(SIGLIP_EOS_TOKEN, eos_id)])
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=SIGLIP_EOS_TOKEN, pad_token=SIGLIP_EOS_TOKEN,
                                       unk_token=SIGLIP_UNK_TOKEN, model_max_length=max_length)
    bos_id, eos_id = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}", special_tokens=[(BOS_TOKEN, bos_id), (EOS_TOKEN, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=max_length,
    )


def _tower(hidden_size: int, num_layers: int) -> dict:
    """One tiny tower's shape: `hidden_size` wide, `num_layers` deep, a head per 32 channels."""
    return {"hidden_size": hidden_size, "intermediate_size": 4 * hidden_size, "num_hidden_layers": num_layers,
            "num_attention_heads": max(1, hidden_size // 32)}


def tiny_clip_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 4,
    projection_dim: int = 64,
) -> CLIPConfig:
    """A small CLIP config matching `tokenizer` (vocab, start/end/pad ids) for CPU training from scratch."""
    return CLIPConfig(
        text_config={**_tower(hidden_size, num_layers), "vocab_size": len(tokenizer),
                     "max_position_embeddings": tokenizer.model_max_length, "bos_token_id": tokenizer.bos_token_id,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={**_tower(hidden_size, num_layers), "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )


def tiny_siglip_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 2,
    image_size: int = 32,
    patch_size: int = 4,
) -> SiglipConfig:
    """A small SigLIP config matching `tokenizer` (vocab, end/pad ids, positions = the padded length) for CPU
    training from scratch. SigLIP has no projection: both towers are `hidden_size` wide."""
    return SiglipConfig(
        text_config={**_tower(hidden_size, num_layers), "vocab_size": len(tokenizer),
                     "max_position_embeddings": tokenizer.model_max_length, "bos_token_id": None,
                     "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={**_tower(hidden_size, num_layers), "image_size": image_size, "patch_size": patch_size},
    )


def tiny_dual_encoder_config(
    tokenizer: PreTrainedTokenizerFast, family: str = "clip", hidden_size: int = 64, num_layers: int = 2,
    image_size: int = 32, patch_size: int = 4,
) -> PreTrainedConfig:
    """[`tiny_clip_config`] (projection `hidden_size`) or [`tiny_siglip_config`], by `family`."""
    if family == "siglip":
        return tiny_siglip_config(tokenizer, hidden_size, num_layers, image_size, patch_size)
    return tiny_clip_config(tokenizer, hidden_size, num_layers, image_size, patch_size, hidden_size)


def write_tiny_checkpoint(
    directory: str,
    texts: list[str],
    image_size: int = 32,
    hidden_size: int = 64,
    num_layers: int = 2,
    patch_size: int = 4,
    projection_dim: int = 64,
    vocab_size: int = 1024,
    max_length: int = 32,
    seed: int = 0,
    family: str = "clip",
) -> str:
    """A randomly initialised tiny dual encoder saved like a hub checkpoint: weights, a tokenizer trained on `texts`
    with the family's conventions, and the family's image processor, so `SlipModel.from_dual_encoder(directory)` and
    `AutoTokenizer.from_pretrained(directory)` follow the same path as for `openai/clip-vit-base-patch16` or
    `google/siglip2-base-patch16-224`. A SigLIP starts from the temperature and bias SigLIP is trained from
    (log 10 and -10), as its pretrained checkpoints would have learned something like them. `projection_dim` is
    CLIP's (SigLIP has no projection). Returns `directory`."""
    import math

    import torch
    from transformers import CLIPModel, SiglipModel

    tokenizer = train_toy_tokenizer(texts, vocab_size=vocab_size, max_length=max_length, family=family)
    torch.manual_seed(seed)
    if family == "siglip":
        model = SiglipModel(tiny_siglip_config(tokenizer, hidden_size, num_layers, image_size, patch_size))
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-10.0)
    else:
        model = CLIPModel(tiny_clip_config(tokenizer, hidden_size, num_layers, image_size, patch_size, projection_dim))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    toy_image_processor(image_size, family).save_pretrained(directory)
    return directory


def toy_image_processor(image_size: int = 32, family: str = "clip"):
    """The family's image processor (PIL backend, no torchvision needed) for `image_size` square images: CLIP's
    (resize the shortest edge, centre crop) or SigLIP's (resize to the square, mean and std 0.5)."""
    from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

    if family == "siglip":
        return SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


__all__ = [
    "FAMILIES",
    "make_toy_graph",
    "power_law_edges",
    "tiny_clip_config",
    "tiny_dual_encoder_config",
    "tiny_siglip_config",
    "toy_image_processor",
    "train_toy_tokenizer",
    "write_tiny_checkpoint",
]
