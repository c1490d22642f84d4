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

    def files(self) -> list[str]:
        """The folder's files (relative paths) that the upload sends."""
        relative = sorted(str(p.relative_to(self.folder)) for p in self.folder.rglob("*") if p.is_file())
        return list(filter_repo_objects(relative, ignore_patterns=IGNORED[self.repo_type]))


def plan_publish(model_dir: str | os.PathLike, dataset_dir: str | os.PathLike, space_dir: str | os.PathLike,
                 model_repo: str, dataset_repo: str, space_repo: str, clip_repo: str | None = None,
                 staging_dir: str | os.PathLike | None = None) -> list[Upload]:
    """The uploads (model, dataset, Space, and with `clip_repo` the model's plain-CLIP export, written into
    `staging_dir` by `slip_hf.interop.export_clip`), after checking that every folder exists and holds what its
    repo needs."""
    uploads = [Upload(Path(model_dir), model_repo, "model"), Upload(Path(dataset_dir), dataset_repo, "dataset"),
               Upload(Path(space_dir), space_repo, "space")]
    needs = {"model": "config.json", "dataset": "README.md", "space": "app.py"}
    for upload in uploads:
        if not upload.folder.is_dir():
            raise FileNotFoundError(f"{upload.repo_type} folder {upload.folder}: no such folder.")
        if not (upload.folder / needs[upload.repo_type]).is_file():
            raise FileNotFoundError(f"{upload.repo_type} folder {upload.folder} has no {needs[upload.repo_type]}.")
    if clip_repo:
        from ..interop import export_clip

        if staging_dir is None:
            raise ValueError("publishing the CLIP export needs a staging folder to write it into.")
        export = export_clip(model_dir, Path(staging_dir) / "clip-export", slip_repo=model_repo, dataset_id=dataset_repo)
        uploads.append(Upload(export.out_dir, clip_repo, "model"))
    return uploads


def publish(uploads: list[Upload], private: bool = False, token: str | None = None) -> list[str]:
    """Upload the model (and its plain-CLIP export, when planned), the dataset, then the Space, whose card is
    pointed at them (`models:` / `datasets:` / `slip_clip_export:`, which its app reads). Returns the commit URLs."""
    model, dataset, space, *export = uploads
    urls = [upload_folder_to_hub(u.folder, u.repo_id, u.repo_type, private=private, token=token, ignore_patterns=IGNORED[u.repo_type])
            for u in (model, *export, dataset)]
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / "space"
        shutil.copytree(space.folder, staged, ignore=shutil.ignore_patterns(".slip_space_cache", "__pycache__"))
        card = staged / "README.md"
        metadata = (metadata_load(card) or {}) if card.exists() else {}
        metadata.update(models=[model.repo_id, *(u.repo_id for u in export)], datasets=[dataset.repo_id])
        if export:
            metadata["slip_clip_export"] = export[0].repo_id
        metadata_save(card, metadata)
        urls.append(upload_folder_to_hub(staged, space.repo_id, "space", private=private, token=token,
                                         ignore_patterns=IGNORED["space"]))
    return urls


__all__ = ["IGNORED", "Upload", "plan_publish", "publish"]
