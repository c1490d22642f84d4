"""The dataset card of an embeddings folder: what the vectors are, what they were computed from (with both
fingerprints), how to load them and how to search them; rewritten when an index is added."""

from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

from ..data.card import _size_category
from ..paths import write_whole
from .fingerprints import short
from .record import DATA, EmbeddingsRecord

_MEANING = {
    "image_embedding": "the image tower's embedding of the item's image (l2-normalised)",
    "text_embedding": "the text tower's embedding of the item's {text} (l2-normalised)",
    "node_embedding": "SLIP's node embedding Z: both embeddings through the graph attention layers over the "
                      "dataset's co-purchase graph, fused (l2-normalised)",
}


def _index_lines(record: EmbeddingsRecord) -> str:
    if not record.indexes:
        return "No index is saved yet: `slip-hf index --index <this folder>` builds one per vector column."
    rows = ["| column | FAISS index | exact | search parameters | recall@10 (measured) | size |", "|---|---|---|---|---:|---:|"]
    for column, entry in sorted(record.indexes.items()):
        recall = "1 (exact)" if entry["exact"] else f"{entry['recall_at_10']:.3f} on {entry['recall_queries']:,} queries"
        rows.append(f"| `{column}` | `{entry['factory']}` | {'yes' if entry['exact'] else 'no'} | `{entry['search_parameters'] or '-'}` "
                    f"| {recall} | {entry['bytes'] / 2**20:,.1f} MiB |")
    return "\n".join(rows)


def write_card(folder: Path, record: EmbeddingsRecord) -> Path:
    """(Re)write `<folder>/README.md` from the record."""
    data = DatasetCardData(
        pretty_name=f"Embeddings of {Path(record.dataset).name} by {Path(record.model).name}",
        task_categories=["feature-extraction", "text-to-image", "image-to-text"],
        tags=["embeddings", "faiss", "slip", "clip", "multimodal", "retrieval"],
        size_categories=_size_category(record.rows),
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": f"{DATA}/train-*.parquet"}]}],
    )
    columns = "\n".join(f"* `{column}` ({size} × {record.dtype}): {_MEANING[column].format(text=record.text_column)}"
                        for column, size in record.dims.items())
    body = f"""
# Embeddings of a catalogue

{record.rows:,} items of `{record.dataset}` (config `{record.dataset_config}`, split `{record.split}`), embedded
by `{record.model}` with [slip_hf](https://github.com/slip-hf/slip_hf) {record.slip_hf_version} (`slip-hf embed`).
One row per item, in the catalogue's order:

* `node_id`, `{record.text_column}`: the item
{columns}

| what it was computed from | fingerprint |
|---|---|
| model `{record.model}` | `{short(record.model_fingerprint)}` (SHA-256 of its config and weights) |
| dataset `{record.dataset}` | `{short(record.dataset_fingerprint)}` (its node and edge files) |

An index or a query is only valid with the same model: slip_hf compares both fingerprints before it answers and
refuses in one line when either differs.

## Use

```python
from datasets import load_dataset

embeddings = load_dataset("<this repo or folder>", split="train").with_format("numpy")
```

```bash
slip-hf search --index <this folder> "usb-c charger"            # the top 10, with titles
slip-hf serve --index <this folder>                             # the Space on this index, no embedding at start
```

## Indexes

{_index_lines(record)}
"""
    path = folder / "README.md"
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")
    write_whole(path, lambda temporary: card.save(temporary))  # rewritten when an index is added: never half a card
    return path


__all__ = ["write_card"]
