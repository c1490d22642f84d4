"""Loading one config of a dataset so that a local folder always gives the rows that are on disk now.

`datasets.load_dataset(folder, config)` (datasets 3.x-5.2) caches a local folder under
`<folder name>/<config>/0.0.0/<hash>`, and that hash is computed from the card's YAML, not from the files: two
folders with the same name, or one folder rebuilt in place, load whichever build was cached first. The packaged
parquet builder with explicit `data_files` keys its cache on every file's path and modification time instead,
so [`load_config`] resolves the folder's card (`configs:` in `README.md`) to its files and loads those.
Hub repo ids keep the normal `load_dataset` path: a new revision is a new commit hash there.
"""

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset
from huggingface_hub import DatasetCard

from ..paths import require_folder

README = "README.md"


def local_data_files(folder: str | os.PathLike, config_name: str) -> dict[str, list[str]]:
    """`{split: [absolute file pattern, ...]}` of `config_name`, as the folder's card `configs:` declares it.

    Raises:
        FileNotFoundError: if the folder has no card, or a split's pattern matches no file.
        ValueError: if the card does not declare `config_name` (the message lists the configs it has).
    """
    folder = Path(folder).resolve()
    card_path = folder / README
    if not card_path.is_file():
        raise FileNotFoundError(f"{folder}: no {README} with a `configs:` section; is this a dataset folder?")
    configs = DatasetCard.load(card_path).data.to_dict().get("configs") or []
    entry = next((c for c in configs if c.get("config_name") == config_name), None)
    if entry is None:
        names = ", ".join(c.get("config_name", "?") for c in configs) or "none"
        raise ValueError(f"{folder}: no config {config_name!r} in {README} (configs: {names}).")
    declared = entry["data_files"]
    if isinstance(declared, str):
        declared = [{"split": "train", "path": declared}]
    files: dict[str, list[str]] = {}
    for item in declared:
        patterns = [item["path"]] if isinstance(item["path"], str) else list(item["path"])
        if not any(any(folder.glob(pattern)) for pattern in patterns):
            raise FileNotFoundError(f"{folder}: config {config_name!r} split {item['split']!r}: no file matches {patterns}.")
        files[item["split"]] = [str(folder / pattern) for pattern in patterns]
    return files


def load_config(
    path_or_repo: str | os.PathLike, config_name: str, split: str | None = None, **load_kwargs
) -> Dataset | DatasetDict:
    """`load_dataset(path_or_repo, config_name, split=split)`, except that a local folder is read through its
    files, so the result is always what the folder holds now (see the module docstring).

    Args:
        path_or_repo: a dataset folder with a card (as `slip-hf build-dataset` writes) or a Hub repo id.
        config_name: the config to load, e.g. `"electronics"` or `"electronics_edges"`.
        split: one split, or `None` for a `DatasetDict` of all of them.
        load_kwargs: passed on to `datasets.load_dataset` (`cache_dir`, `revision`, ...).
    """
    if os.path.isdir(path_or_repo):
        data_files = local_data_files(path_or_repo, config_name)
        return load_dataset("parquet", data_files=data_files, split=split, **load_kwargs)
    require_folder(path_or_repo, "dataset")  # a mistyped folder: "no such folder", not a Hub lookup
    return load_dataset(str(path_or_repo), config_name, split=split, **load_kwargs)


__all__ = ["load_config", "local_data_files"]
