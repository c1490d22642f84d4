"""Uploading a folder (a built dataset, a trained model, a Space) to the Hugging Face Hub."""

import os
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import HfApi


def upload_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: str,
    *,
    private: bool = False,
    token: str | None = None,
    ignore_patterns: Sequence[str] = (),
    commit_message: str = "Upload with slip_hf",
) -> str:
    """Create the repo if needed (`exist_ok`; a Space with the Gradio SDK) and upload `folder` in one commit;
    returns the commit URL."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder}: no such folder.")
    api = HfApi(token=token)
    extra = {"space_sdk": "gradio"} if repo_type == "space" else {}
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **extra)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(Path(folder)),
        repo_type=repo_type,
        commit_message=commit_message,
        ignore_patterns=list(ignore_patterns),
    )
    return str(getattr(info, "commit_url", info))


__all__ = ["upload_folder_to_hub"]
