"""Publishing a trained model, its dataset and the Space in one go (`slip-hf publish`), with a dry run that
lists every file and the repo it goes to."""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import metadata_load, metadata_save
from huggingface_hub.utils import filter_repo_objects

from ..hub_upload import upload_folder_to_hub

IGNORED = {
    "model": ["checkpoint-*", "checkpoint-*/**", "runs/**"],
    "dataset": [".work/*", ".work/**"],
    "space": [".slip_space_cache/**", "__pycache__/**", "*.pyc", "flagged/**"],
}
"""What each upload leaves out: training checkpoints, the builder's intermediate files, the Space's local cache."""


@dataclass
class Upload:
    """One folder going to one repo."""

    folder: Path
    repo_id: str
    repo_type: str
    role: str = ""
    """`"model"`, `"dataset"`, `"space"`, `"clip_export"` or `"index"` (default: the repo type)."""

    def __post_init__(self):
        self.role = self.role or self.repo_type

    def files(self) -> list[str]:
        """The folder's files (relative paths) that the upload sends."""
        relative = sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())
        return list(filter_repo_objects(relative, ignore_patterns=IGNORED[self.repo_type]))


def plan_publish(model_dir: str | os.PathLike, dataset_dir: str | os.PathLike, space_dir: str | os.PathLike,
                 model_repo: str, dataset_repo: str, space_repo: str, clip_repo: str | None = None,
                 staging_dir: str | os.PathLike | None = None, index_dir: str | os.PathLike | None = None,
                 index_repo: str | None = None) -> list[Upload]:
    """The uploads (model, dataset, Space, with `clip_repo` the model's plain-CLIP export, written into
    `staging_dir` by `slip_hf.interop.export_clip`, and with `index_repo` the embeddings folder `index_dir` with its
    saved index, `slip-hf embed`), after checking that every folder exists and holds what its repo needs (an
    embeddings folder: finished, with an index, of this model and dataset)."""
    uploads = [Upload(Path(model_dir), model_repo, "model"), Upload(Path(dataset_dir), dataset_repo, "dataset"),
               Upload(Path(space_dir), space_repo, "space")]
    needs = {"model": "config.json", "dataset": "README.md", "space": "app.py"}
    for upload in uploads:
        if not upload.folder.is_dir():
            raise FileNotFoundError(f"{upload.repo_type} folder {upload.folder}: no such folder.")
        if not (upload.folder / needs[upload.repo_type]).is_file():
            raise FileNotFoundError(f"{upload.repo_type} folder {upload.folder} has no {needs[upload.repo_type]}.")
    if (index_dir is None) != (index_repo is None):
        raise ValueError("publishing a saved index needs both its folder (--index_dir) and its repo (--index_repo).")
    if index_dir is not None:
        from ..search.fingerprints import dataset_fingerprint, model_fingerprint, require_same
        from ..search.record import read_record

        record = read_record(index_dir)
        if not record.indexes:
            raise ValueError(f"embeddings {index_dir} have no saved index; build one with slip-hf index --index {index_dir}.")
        require_same("model", record.model_fingerprint, record.model, model_fingerprint(model_dir), f"the model {model_dir}",
                     f"publish the index of {model_dir} (slip-hf embed --model_name_or_path {model_dir}).")
        require_same("dataset", record.dataset_fingerprint, record.dataset,
                     dataset_fingerprint(dataset_dir, record.dataset_config), f"the dataset {dataset_dir}",
                     f"publish the index of {dataset_dir} (slip-hf embed --dataset_name {dataset_dir}).")
        uploads.append(Upload(Path(index_dir), index_repo, "dataset", role="index"))
    if clip_repo:
        from ..interop import export_clip

        if staging_dir is None:
            raise ValueError("publishing the CLIP export needs a staging folder to write it into.")
        export = export_clip(model_dir, Path(staging_dir) / "clip-export", slip_repo=model_repo, dataset_id=dataset_repo)
        uploads.append(Upload(export.out_dir, clip_repo, "model", role="clip_export"))
    return uploads


def publish(uploads: list[Upload], private: bool = False, token: str | None = None) -> list[str]:
    """Upload the model (and its plain-CLIP export, when planned), the dataset (and the saved index, when planned),
    then the Space, whose card is pointed at them (`models:` / `datasets:` / `slip_clip_export:` / `slip_index:`,
    which its app reads). Returns the commit URLs."""
    by_role = {upload.role: upload for upload in uploads}
    model, dataset, space = by_role["model"], by_role["dataset"], by_role["space"]
    export = [by_role["clip_export"]] if "clip_export" in by_role else []
    index = [by_role["index"]] if "index" in by_role else []
    urls = [upload_folder_to_hub(u.folder, u.repo_id, u.repo_type, private=private, token=token, ignore_patterns=IGNORED[u.repo_type])
            for u in (model, *export, dataset, *index)]
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "space"
        shutil.copytree(space.folder, staged, ignore=shutil.ignore_patterns(".slip_space_cache", "__pycache__"))
        card = staged / "README.md"
        metadata = (metadata_load(card) or {}) if card.exists() else {}
        metadata.update(models=[model.repo_id, *(u.repo_id for u in export)], datasets=[dataset.repo_id])
        if export:
            metadata["slip_clip_export"] = export[0].repo_id
        if index:
            metadata["slip_index"] = index[0].repo_id
        metadata_save(card, metadata)
        urls.append(upload_folder_to_hub(staged, space.repo_id, "space", private=private, token=token,
                                         ignore_patterns=IGNORED["space"]))
    return urls


__all__ = ["IGNORED", "Upload", "plan_publish", "publish"]
