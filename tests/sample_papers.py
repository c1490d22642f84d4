"""A small non-Amazon graph as a user's own files: papers with figures (`papers.csv`, `figures/`) and citation
edges (`citations.jsonl`), with every kind of bad row at a known count (`slip-hf import-graph`'s tests and the
own-graph guide's commands)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from slip_hf.data.synthetic import BACKGROUNDS, COLORS, SHAPES, render_product_image

FIELDS = ("graph learning", "vision", "language")


def write_papers(root: Path) -> Path:
    """36 papers in 3 fields (figures drawn per field), citations mostly within a field, and planted bad rows."""
    (root / "figures").mkdir(parents=True)
    rng = np.random.default_rng(0)
    colors = list(COLORS.values())
    rows = []
    for i in range(36):
        field = i % 3
        render_product_image(SHAPES[field], colors[field], BACKGROUNDS[field], 24, rng).save(root / "figures" / f"p{i}.png")
        rows.append({"paper": f"P{i}", "title": f"a study of {FIELDS[field]} number {i}", "figure": f"figures/p{i}.png",
                     "field": FIELDS[field], "abstract": f"We study {FIELDS[field]}."})
    (root.parent / "secret.png").write_bytes((root / "figures" / "p0.png").read_bytes())
    rows += [
        {"paper": "P1", "title": "a repeated id", "figure": "figures/p1.png", "field": "vision", "abstract": ""},  # repeated
        {"paper": "P90", "title": "  ", "figure": "figures/p2.png", "field": "vision", "abstract": ""},  # no text
        {"paper": None, "title": "an item without an id", "figure": "figures/p2.png", "field": "vision", "abstract": ""},
        {"paper": "P91", "title": "no figure", "figure": None, "field": "vision", "abstract": ""},  # no image
        {"paper": "P92", "title": "a missing figure", "figure": "figures/gone.png", "field": "vision", "abstract": ""},
        {"paper": "P93", "title": "a figure outside the folder", "figure": "../secret.png", "field": "vision", "abstract": ""},
    ]
    pd.DataFrame(rows).to_csv(root / "papers.csv", index=False)
    citations = [(f"P{i}", f"P{(i + 3 * k) % 36}", 2020 + k) for i in range(36) for k in (1, 2)]  # within a field
    citations += [("P0", "P404", 2021), ("P5", "P5", 2021), ("P4", "P1", 2023), ("P1", "P4", 2024), ("P3", "P92", 2022)]
    with open(root / "citations.jsonl", "w") as handle:
        handle.writelines(json.dumps({"citing": src, "cited": dst, "date": f"{year}-06-01"}) + "\n" for src, dst, year in citations)
    return root
