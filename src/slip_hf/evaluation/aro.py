"""ARO (Yuksekgonul et al., 2023): does a model prefer the true caption of an image over the same words in a
structure-breaking order? VG-Relation swaps subject and object ("the horse is eating the grass" vs "the grass
is eating the horse"); VG-Attribution swaps two attributes ("the red shirt and the blue sky" vs "the blue
shirt and the red sky").

The harness reads the public JSON files from a local folder, as `mertyg/vision-language-models-are-bows`
writes them:

    <aro_dir>/visual_genome_relation.json      [{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
                                                 "relation_name", "true_caption", "false_caption"}, ...]
    <aro_dir>/visual_genome_attribution.json   [{..., "attributes": [a, b], "true_caption", "false_caption"}, ...]
    <aro_dir>/images/<image_path>

crops each image to its box (as the reference does), and counts a case as correct when cos(image, true) >
cos(image, false). It reports the accuracy over all cases and the macro accuracy over relations (VG-Relation)
or attribute pairs (VG-Attribution, pairs with >= 25 cases, the reference's rule), as the ARO paper does.
`slip_hf.data.structure_benchmark` writes a product-domain benchmark in the same format.
"""

import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..embedding import encode_images, encode_texts, load_dual_encoder
from ..viewed_image import viewed_rgb

TASKS = {
    "VG-Relation": ("visual_genome_relation.json", "relation_name", 0),
    "VG-Attribution": ("visual_genome_attribution.json", "attributes", 25),
}
"""Task name -> (annotation file, grouping field, minimum cases of a group in the macro average)."""
_REQUIRED = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption")


@dataclass
class AroResult:
    """One task's outcome: accuracy over cases, macro accuracy over groups, and each group's accuracy and size."""

    task: str
    accuracy: float
    macro_accuracy: float
    num_cases: int
    groups: dict[str, tuple[float, int]]


def load_aro_cases(aro_dir: str | os.PathLike, task: str) -> list[dict]:
    """The cases of one task, with absolute image paths.

    Raises:
        FileNotFoundError: the annotation file or an image is missing (the message names it).
        ValueError: a case lacks a field (the message gives its index and the field).
    """
    if task not in TASKS:
        raise ValueError(f"unknown ARO task {task!r}; choose from {sorted(TASKS)}.")
    file_name, group_field, _ = TASKS[task]
    path = Path(aro_dir) / file_name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {task} annotation file (expected the ARO release's {file_name}).")
    cases = json.loads(path.read_text())
    for index, case in enumerate(cases):
        missing = [key for key in (*_REQUIRED, group_field) if key not in case]
        if missing:
            raise ValueError(f"{path}: case {index} lacks {missing}.")
        case["image_path"] = str(Path(aro_dir) / "images" / case["image_path"])
        if not os.path.isfile(case["image_path"]):
            raise FileNotFoundError(f"{path}: case {index}: no image {case['image_path']}.")
    return cases


def _group(case: dict, group_field: str) -> str:
    value = case[group_field]
    return "_".join(value) if isinstance(value, list) else str(value)


def _cropped(case: dict) -> Image.Image:
    """A case's image cut to its box, as the reference does."""
    x, y, w, h = (case[k] for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    return viewed_rgb(case["image_path"]).crop((x, y, x + w, y + h))


def score_cases(model, image_processor, tokenizer, cases: Sequence[dict], batch_size: int = 64, max_length: int = 77) -> np.ndarray:
    """`correct[i]`: cos(image, true caption) > cos(image, false caption) for case i (boxes cropped).

    `model` is a [`SlipModel`] or a `CLIPModel` (anything with `get_image_features` / `get_text_features`);
    captions are cut to `max_length` tokens, or to the text tower's positions if it has fewer."""
    if not cases:
        return np.zeros(0, dtype=bool)
    model.eval()
    max_length = min(max_length, model.config.get_text_config().max_position_embeddings)
    images = encode_images(model, image_processor, cases, batch_size, load_image=_cropped, desc="ARO images")
    true = encode_texts(model, tokenizer, [c["true_caption"] for c in cases], batch_size, max_length, desc="ARO true captions")
    false = encode_texts(model, tokenizer, [c["false_caption"] for c in cases], batch_size, max_length, desc="ARO false captions")
    return ((images * true).sum(-1) > (images * false).sum(-1)).numpy()


def aro_accuracy(task: str, correct: np.ndarray, cases: Sequence[dict], min_count: int | None = None) -> AroResult:
    """Accuracy over all cases and the macro accuracy over the task's groups with >= `min_count` cases
    (default: the task's rule in [`TASKS`])."""
    _, group_field, default_min = TASKS[task]
    min_count = default_min if min_count is None else min_count
    by_group: dict[str, list[bool]] = defaultdict(list)
    for case, ok in zip(cases, correct):
        by_group[_group(case, group_field)].append(bool(ok))
    groups = {name: (float(np.mean(values)), len(values)) for name, values in sorted(by_group.items())}
    kept = [accuracy for accuracy, count in groups.values() if count >= min_count]
    return AroResult(task, float(np.mean(correct)) if len(correct) else float("nan"),
                     float(np.mean(kept)) if kept else float("nan"), len(cases), groups)


def evaluate_aro(
    model_name_or_path: str, aro_dir: str | os.PathLike, tasks: Sequence[str] = tuple(TASKS), batch_size: int = 64,
    max_length: int = 77,
) -> dict[str, AroResult]:
    """Score a checkpoint on the ARO tasks present in `aro_dir` (a missing task's file is an error)."""
    model, image_processor, tokenizer = load_dual_encoder(model_name_or_path)
    results = {}
    for task in tasks:
        cases = load_aro_cases(aro_dir, task)
        correct = score_cases(model, image_processor, tokenizer, cases, batch_size, max_length)
        results[task] = aro_accuracy(task, correct, cases)
    return results


def aro_columns(model_name_or_path: str, aro_dir: str | os.PathLike, max_length: int = 77) -> dict[str, float]:
    """A checkpoint's ARO scores as report columns: `{"<task> macro": ..., "<task> all": ...}` for every task."""
    scores = evaluate_aro(model_name_or_path, aro_dir, max_length=max_length)
    return {f"{task} {kind}": value for task, r in scores.items() for kind, value in (("macro", r.macro_accuracy), ("all", r.accuracy))}


_GROUP_NOUN = {"VG-Relation": "relation", "VG-Attribution": "pair"}


def macro_unavailable(task: str) -> str:
    """What a report prints for a task's macro accuracy when no group has the task's minimum of cases."""
    return f"n/a (no {_GROUP_NOUN.get(task, 'group')} with ≥ {TASKS[task][2]} cases)"


def aro_table(results: dict[str, dict[str, AroResult]]) -> str:
    """`results[model][task]` as markdown: macro and overall accuracy per task (a macro average over no group is
    "n/a", never `nan`; the overall accuracy is still given)."""
    tasks = sorted({task for by_task in results.values() for task in by_task})
    header = "| Model | " + " | ".join(f"{t} macro | {t} all" for t in tasks) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(tasks)]

    def macro(result: AroResult) -> str:
        return macro_unavailable(result.task) if math.isnan(result.macro_accuracy) else f"{result.macro_accuracy:.3f}"

    for name, by_task in results.items():
        cells = [f"{macro(by_task[t])} | {by_task[t].accuracy:.3f}" if t in by_task else "- | -" for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["TASKS", "AroResult", "aro_accuracy", "aro_columns", "aro_table", "evaluate_aro", "load_aro_cases", "macro_unavailable", "score_cases"]
