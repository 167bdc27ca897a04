"""Push an output folder to the Hugging Face Hub in one commit, so a failure leaves nothing half-uploaded."""

from __future__ import annotations

import os
from pathlib import Path


class HubPushError(RuntimeError):
    """The push did not happen; the message says why and what to do. The local folder is complete."""


def push_folder(folder: Path, repo_id: str, *, private: bool) -> str:
    """Create ``repo_id`` (a model repo; private on request) if needed and upload ``folder`` as one commit.

    Returns the commit's URL. Needs HF_TOKEN with write access; HF_ENDPOINT, when set, names another hub."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise HubPushError(
            "pushing to the Hugging Face Hub needs HF_TOKEN, a token with write access "
            f"(https://huggingface.co/settings/tokens); the export itself is complete at {folder}"
        )
    import httpx2  # huggingface_hub's HTTP client: its transport errors are the network ones
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        # One commit for the whole folder: the Hub applies all files or none.
        commit = api.upload_folder(
            folder_path=folder, repo_id=repo_id, repo_type="model", commit_message=f"Upload {folder.name} (medvl-peft)"
        )
    except (httpx2.TransportError, OfflineModeIsEnabled, ConnectionError) as exc:
        raise HubPushError(
            f"cannot reach the Hugging Face Hub at {api.endpoint} over the network ({exc.__class__.__name__}: {exc}); "
            f"nothing was uploaded to {repo_id}. The export is complete at {folder}: push it again where the "
            "network reaches the Hub (`jobs run export --checkpoint CKPT --push-to-hub REPO_ID`), or upload "
            "that folder with `hf upload`"
        ) from exc
    except HfHubHTTPError as exc:
        raise HubPushError(
            f"the Hugging Face Hub refused the push to {repo_id} ({exc}); check that HF_TOKEN has write access "
            f"to that namespace. The export is complete at {folder}"
        ) from exc
    return str(commit.commit_url)
