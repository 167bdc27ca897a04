"""Which base model a run loads, pinned: a checkpoint is only ever put back on the base it was trained on.

Every checkpoint's run config carries ``model.siglip_revision`` / ``model.biogpt_revision``: the resolved
hub commit of a hub id, or ``sha256:HASH`` of a local folder's weight files. The training stage pins the
revision it loads (``pin_base``); every later load passes a hub commit to ``from_pretrained``
(``base_source``) and re-hashes a local folder, refusing one whose weights changed. Torch-free: the hub
lookup is ``huggingface_hub``, imported only when a hub id is pinned.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from worker.config import RunConfig
from worker.locations import is_hub_id

FIELDS = ("siglip", "biogpt")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
HUB_COMMIT = re.compile(r"[0-9a-f]{40}")
DIGEST_PREFIX = "sha256:"
# The variables huggingface_hub and transformers read to stay off the network, and the values meaning "yes".
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}


class BaseMismatch(ValueError):
    """A checkpoint's recorded base differs from the base there is now; the message names both."""


def is_hub_model(config: RunConfig, field: str) -> bool:
    return not config.model.build_tiny_fixtures and is_hub_id(getattr(config.model, field))


def base_dir(config: RunConfig, field: str) -> str:
    """What ``from_pretrained`` gets: the hub id, the local folder, or the tiny fixture's folder for this init."""
    if config.model.build_tiny_fixtures:
        from worker.fixtures.spec import fixture_dir

        return str(fixture_dir(config, field))
    return config.resolve_model_path(getattr(config.model, field))


def base_source(config: RunConfig, field: str) -> tuple[str, dict[str, Any]]:
    """(path or hub id, ``from_pretrained`` keyword arguments): a hub model at its pinned commit."""
    revision = getattr(config.model, f"{field}_revision")
    pinned = {"revision": revision} if revision and is_hub_model(config, field) else {}
    return base_dir(config, field), pinned


def pin_base(config: RunConfig, field: str, source: str | None = None) -> RunConfig:
    """``config`` with ``model.<field>_revision`` set to the identity of the base it will load.

    A hub id is resolved to its commit (an unset revision: the latest; a branch or tag: its commit). A local
    folder is hashed; when the config already names a hash (a checkpoint's), a different one is refused
    with BaseMismatch. ``source`` names where the recorded revision came from, for that message."""
    name = getattr(config.model, field)
    recorded = getattr(config.model, f"{field}_revision")
    source = source or f"the config's model.{field}_revision"
    if is_hub_model(config, field):
        current = hub_commit(name, recorded, f"model.{field}_revision")
    else:
        folder = base_dir(config, field)
        current = weights_digest(folder)
        if recorded and recorded != current:
            raise BaseMismatch(
                f"model.{field}: {source} records {name} with weights {recorded}, but {folder} now holds "
                f"{current}; restore that base (same var dir and files) or train again on this one"
            )
    return config.model_copy(update={"model": config.model.model_copy(update={f"{field}_revision": current})})


def verified_base(config: RunConfig, field: str, source: str) -> RunConfig:
    """What a loader of a checkpoint calls: the recorded base checked (``pin_base``). A checkpoint from before
    bases were pinned records none and loads as it always did, without a hub lookup."""
    return pin_base(config, field, source) if getattr(config.model, f"{field}_revision") else config


def hub_offline() -> bool:
    """Whether the hub must not be asked: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set to a true value."""
    return any(os.environ.get(name, "").strip().upper() in OFFLINE_VALUES for name in OFFLINE_VARIABLES)


def hub_commit(repo_id: str, revision: str | None, key: str = "the model's revision") -> str:
    """The commit a hub revision (None: the default branch) names; a commit id is taken as it is, offline too.
    Offline, the Hugging Face cache answers (``cached_commit``)."""
    if revision and HUB_COMMIT.fullmatch(revision):
        return revision
    if hub_offline():
        return cached_commit(repo_id, revision)
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(repo_id, revision=revision, token=os.environ.get("HF_TOKEN")).sha
    except Exception as exc:  # offline, unknown id, gated, hub down: all end here, with one line
        raise RuntimeError(
            f"cannot resolve the commit of hub model '{repo_id}' at {revision or 'its default branch'} "
            f"({exc.__class__.__name__}); connect to the hub (HF_TOKEN for gated models), set {key} to a commit "
            "already in the local cache, or point the model at a local folder"
        ) from exc


def cached_commit(repo_id: str, revision: str | None) -> str:
    """The commit of the snapshot the local Hugging Face cache holds for ``repo_id`` at ``revision`` (None: the
    default branch), read from the cache's refs without a network call; one line naming the download otherwise."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception as exc:  # not cached, or cached without that ref: either way the cache cannot answer
        at = f" --revision {revision}" if revision else ""
        raise RuntimeError(
            f"hub model '{repo_id}' at {revision or 'its default branch'} is not in the Hugging Face cache and the "
            f"hub is offline ({exc.__class__.__name__}); on a connected machine run `hf download {repo_id}{at}` "
            "with the same HF_HOME (or copy its hub cache folder here), or point the model at a local folder"
        ) from None
    return Path(folder).name


def weights_digest(folder: str | Path) -> str:
    """``sha256:HASH`` of a folder's weight files (names and bytes); refuses a folder without any."""
    path = Path(folder)
    files = sorted(p for p in path.glob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(
            f"no model weights (*.safetensors, *.bin) in {path}; point the model at a save_pretrained folder"
        )
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _digest(stats)


@functools.lru_cache(maxsize=32)
def _digest(stats: tuple[tuple[str, int, int], ...]) -> str:
    """Keyed by path, size and modification time: a folder is hashed once per process until it changes."""
    sha = hashlib.sha256()
    for name, _, _ in stats:
        sha.update(Path(name).name.encode() + b"\0")
        with open(name, "rb") as weights:
            for block in iter(lambda: weights.read(1 << 20), b""):
                sha.update(block)
    return DIGEST_PREFIX + sha.hexdigest()
