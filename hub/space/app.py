"""The slip_hf Space: search products by text or image with a trained SLIP model, see what is bought with
each hit, and compare with a second model.

Which model(s) and dataset: the `models:` and `datasets:` of this folder's README.md front matter (`slip-hf
publish` writes them), or the environment variables SLIP_MODELS (one or two, space-separated) and
SLIP_DATASET; SLIP_CONFIG and SLIP_SPLIT pick the dataset config and split ("all" for every split), and
SLIP_CACHE_DIR where the embeddings are cached (default: .slip_space_cache next to this file). With a saved index
(`slip_index:` in the front matter, or SLIP_INDEX: the dataset repo or folder of `slip-hf embed`, which `slip-hf
publish --index_repo` uploads), the page searches it and embeds nothing at start; the model and dataset must be the
ones it was built from (their fingerprints are compared). The page shows how
to load the first model in code, with its plain-CLIP export (`slip_clip_export:` in the front matter, or
SLIP_CLIP_EXPORT) in transformers' pipeline and sentence-transformers.
Locally: `python app.py`, or `slip-hf serve --model ... --dataset ...`.
"""

import os
from pathlib import Path

from huggingface_hub import metadata_load

from slip_hf.space import build_space, load_space

HERE = Path(__file__).resolve().parent


def main() -> None:
    card = metadata_load(HERE / "README.md") or {}
    clip_export = os.environ.get("SLIP_CLIP_EXPORT") or card.get("slip_clip_export")
    # the card links the plain-CLIP export too; it has the SLIP model's embeddings, so it is not a second model
    models = [m for m in os.environ.get("SLIP_MODELS", " ".join(card.get("models", []))).split() if m != clip_export]
    dataset = os.environ.get("SLIP_DATASET") or next(iter(card.get("datasets", [])), None)
    if not models or not dataset:
        raise SystemExit("app.py: set the Space's models and dataset (README.md front matter, or SLIP_MODELS and SLIP_DATASET).")
    index = os.environ.get("SLIP_INDEX") or card.get("slip_index")
    if index and not os.path.isdir(index):
        from huggingface_hub import snapshot_download

        index = snapshot_download(index, repo_type="dataset")
    page = load_space(
        models[:1] if index else models[:2], dataset, config=os.environ.get("SLIP_CONFIG", "electronics"),
        split=os.environ.get("SLIP_SPLIT", "test"), cache_dir=os.environ.get("SLIP_CACHE_DIR", HERE / ".slip_space_cache"),
        clip_export=clip_export, embeddings=[index] if index else (),
    )
    build_space(page, threads_per_search=1).launch()


if __name__ == "__main__":
    main()
