"""Which file paths a client may name: only those under the data and artifact roots.

A job runs with the worker's file system rights, so a path from the network must not reach outside the
folders the system owns (``var/`` by default: data, models, artifacts). Relative paths resolve the way the
worker resolves them: ``var/...`` under the var root, anything else under the repository.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from api.models import JobSubmission

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Config keys whose values are local paths; a model key holds a hub id unless it looks like a path.
PATH_CONFIG_KEYS = ("data.data_dir", "paths.var_dir", "paths.run_dir")
MODEL_CONFIG_KEYS = ("model.siglip", "model.biogpt")
LOCAL_PATH_PREFIXES = ("var/", "./", "../", "/", "~")


def resolve(raw: str, var_root: Path) -> Path:
    """The absolute, normalised path a worker would open for `raw`."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path.resolve()
    if path.parts and path.parts[0] == "var":
        return var_root.joinpath(*path.parts[1:]).resolve()
    return (PROJECT_ROOT / path).resolve()


def outside_roots(raw: str, roots: Iterable[Path], var_root: Path) -> str | None:
    """None when `raw` lies under one of `roots`; otherwise the one-line reason it is refused."""
    resolved_roots = [root.resolve() for root in roots]
    target = resolve(raw, var_root)
    if any(target.is_relative_to(root) for root in resolved_roots):
        return None
    allowed = ", ".join(str(root) for root in resolved_roots)
    return f"path {raw!r} is outside the allowed roots ({allowed}); put the file under one of them"


def submission_paths(submission: JobSubmission) -> dict[tuple[str, ...], str]:
    """Every path a submission names, keyed by its location in the request body."""
    found: dict[tuple[str, ...], str] = {}
    for name in ("config", "data_dir"):
        if value := getattr(submission, name):
            found[(name,)] = value
    for name in ("checkpoint", "siglip_checkpoint"):
        if value := getattr(submission.params, name):
            found[("params", name)] = value
    for key, value in submission.overrides.items():
        if _names_a_path(key, value):
            found[("overrides", key)] = value
    # A sweep sets config keys too, one value per run.
    for key, values in (submission.params.grid or {}).items():
        for index, value in enumerate(values):
            if _names_a_path(key, value):
                found[("params", "grid", key, str(index))] = value
    return found


def _names_a_path(key: str, value: str) -> bool:
    looks_local = key in MODEL_CONFIG_KEYS and value.startswith(LOCAL_PATH_PREFIXES)
    return key in PATH_CONFIG_KEYS or looks_local
