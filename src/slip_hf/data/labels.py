"""Step 5 of the graph build: a category label per node from its category path.

The paper labels each subset at one hierarchy level chosen per category (§5). The label of a node is the
entry of its `categories` path at `depth` (0 is the first entry of the path, for most items the department itself, e.g. `Electronics`). Two explicit
rules handle what does not fit:

* a path shorter than `depth + 1` has no entry there: the node goes to the `other_name` class;
* a class with fewer than `min_class_size` nodes is merged into `other_name` (so every class can be learnt
  and evaluated; set `min_class_size=1` to keep all).

Class names are sorted by decreasing size (ties by name), with `other_name` last, so label 0 is the largest
class and the names are stable across rebuilds of the same data.
"""

from collections import Counter
from collections.abc import Sequence

import numpy as np


def assign_labels(
    category_paths: Sequence[Sequence[str]], depth: int = 1, min_class_size: int = 20, other_name: str = "Other"
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Labels at one level of the category paths.

    Args:
        category_paths: one path per node, e.g. `["Electronics", "Headphones", "Earbuds"]`.
        depth: which path entry is the label.
        min_class_size: smaller classes are merged into `other_name`.
        other_name: the catch-all class.

    Returns:
        (labels, names, stats): int64 labels of shape `(N,)` indexing `names`; `stats` counts
        `short_paths` (no entry at `depth`), `rare_classes_merged`, `nodes_in_rare_classes` and `classes`.
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}.")
    raw = [path[depth] if len(path) > depth and path[depth] else None for path in category_paths]
    counts = Counter(name for name in raw if name is not None)
    kept = {name for name, count in counts.items() if count >= min_class_size and name != other_name}
    names = sorted(kept, key=lambda name: (-counts[name], name))
    final = [name if name in kept else other_name for name in raw]
    if other_name in final:
        names.append(other_name)
    index = {name: position for position, name in enumerate(names)}
    labels = np.array([index[name] for name in final], dtype=np.int64)
    rare = {name for name in counts if name not in kept}
    stats = {
        "short_paths": sum(name is None for name in raw),
        "rare_classes_merged": len(rare),
        "nodes_in_rare_classes": sum(counts[name] for name in rare),
        "classes": len(names),
    }
    return labels, names, stats


__all__ = ["assign_labels"]
