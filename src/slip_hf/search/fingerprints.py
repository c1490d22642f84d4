"""What identifies the two inputs of a catalogue's embeddings: the model's weights and the dataset's build.

An index answers queries with the vectors of one model over one build of a dataset; a query encoded by another
model, or rows read from another build, would give neighbours that look right and are not. So
`slip-hf embed` records both fingerprints, every saved index repeats them, and every reader compares them
([`require_same`]) before it answers.

* A model's fingerprint is the SHA-256 of its `config.json` and weight files (content, not names or times: a
  copied or re-downloaded folder keeps it, a retrained one in the same folder does not). A Hub id is resolved to
  its local snapshot first (the files `from_pretrained` reads).
* A dataset's fingerprint is the SHA-256 of the parquet files of its node config and edge config, as the
  folder's card declares them (`slip_hf.data.load_config`); a Hub id is resolved to its local snapshot of those
  files, so a folder and its upload (`push-dataset`, `publish`) have the same fingerprint.
"""

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from ..paths import looks_local

WEIGHT_PATTERNS = ("config.json", "*.safetensors", "*.bin")
"""The files of a model folder whose content its fingerprint covers."""

READ_BYTES = 8 << 20

SHORT = 12
"""Hex digits of a fingerprint shown in messages."""


def _digest(files: Iterable[Path], root: Path) -> str:
    """SHA-256 over each file's path relative to `root` and its content, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        content = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(READ_BYTES):
                content.update(block)
        digest.update(content.digest())
    return digest.hexdigest()


def model_fingerprint(model_name_or_path: str | os.PathLike) -> str:
    """The SHA-256 of a model's `config.json` and weight files (see the module docstring).

    Raises:
        FileNotFoundError: if the folder has no weight file.
    """
    folder = Path(model_name_or_path).expanduser()
    if not looks_local(model_name_or_path):
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(model_name_or_path), allow_patterns=list(WEIGHT_PATTERNS)))
    files = [path for pattern in WEIGHT_PATTERNS for path in folder.glob(pattern) if path.is_file()]
    if not any(path.name != "config.json" for path in files):
        raise FileNotFoundError(f"model {model_name_or_path}: no weight file (*.safetensors, *.bin) to fingerprint.")
    return _digest(files, folder)


def dataset_fingerprint(path_or_repo: str | os.PathLike, config: str) -> str:
    """The SHA-256 of the node and edge files of `config` in a dataset folder or Hub dataset repo."""
    from ..data.loading import local_data_files
    from ..data.writing import edges_config_name

    names = (config, edges_config_name(config))
    folder = Path(path_or_repo).expanduser()
    if not looks_local(path_or_repo):  # the repo's files, as uploaded from the folder: the same fingerprint
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(path_or_repo), repo_type="dataset", allow_patterns=["README.md", *(f"{n}/*" for n in names)]))
    folder = folder.resolve()
    files = {Path(match) for name in names for patterns in local_data_files(folder, name).values()
             for pattern in patterns for match in folder.glob(os.path.relpath(pattern, folder))}
    return _digest(files, folder)


def short(fingerprint: str) -> str:
    """A fingerprint as messages show it."""
    return fingerprint.rsplit("@", 1)[-1][:SHORT]


def require_same(what: str, recorded: str, recorded_source: str, current: str, current_source: str, remedy: str) -> None:
    """Raise `ValueError` in one line naming both sides when two fingerprints of `what` ("model", "dataset")
    differ."""
    if recorded != current:
        raise ValueError(
            f"{what} mismatch: the index was built from {recorded_source} ({what} fingerprint {short(recorded)}) but "
            f"{current_source} has fingerprint {short(current)}; {remedy}"
        )


__all__ = ["dataset_fingerprint", "model_fingerprint", "require_same", "short"]
