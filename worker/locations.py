"""Values that name a file or a model: a Hugging Face hub id, or a local path under the allowed roots.

A job runs with the worker's file system rights, so every value that names something to open (a model, a
dataset folder, a checkpoint, a config file) is either a hub id, which only ever reaches the hub, or a local
path that resolves, symlinks followed, under one of the folders the system owns. This module holds the one
rule and the one resolution both the job system (when it accepts a request and again before a job runs) and
the stages (when they open a path) use, so what is checked is what is opened. It stays torch-free.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# How a field of a config says what its value names (in the field's json_schema_extra).
LOCATION_KEY = "names"
Kind = Literal["path", "model"]

# A hub repo id as the hub spells them: one namespace, one name, each starting with a letter or digit.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
# Values written as local paths, never taken for a hub id.
_PATH_PREFIXES = ("var/", "./", "../", "/", "~")


def is_hub_id(value: str) -> bool:
    """`owner/name` with the hub's characters and no `..`: what from_pretrained would download."""
    return not value.startswith(_PATH_PREFIXES) and ".." not in value and _HUB_ID.fullmatch(value) is not None


def resolve_local(raw: str, var_root: Path) -> Path:
    """The absolute path, symlinks followed, that `raw` names: `var/...` under the var root, `~` expanded,
    anything else relative to the repository (the same from every working directory)."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path.resolve()
    if path.parts and path.parts[0] == "var":
        return var_root.joinpath(*path.parts[1:]).resolve()
    return (PROJECT_ROOT / path).resolve()


def _roots_text(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots)


def location_problem(
    key: str, value: str, kind: Kind, roots: Sequence[Path], var_root: Path, remedy: str = "put it under one of them"
) -> str | None:
    """None when `value` may be opened; otherwise one line naming the key, the value, the allowed roots and
    `remedy` (how to make it allowed)."""
    if "\x00" in value:
        return f"{key}: the value contains a NUL byte; name a file or folder under the allowed roots"
    if kind == "model" and is_hub_id(value):
        # from_pretrained looks for a local folder of that name first: in the working directory.
        if Path(value).exists():
            return (
                f"{key}: {value!r} is a hub id but also a folder in the working directory ({Path.cwd()}), which "
                f"would be loaded instead; write a local model as a path under the allowed roots "
                f"({_roots_text(roots)})"
            )
        return None
    try:
        target = resolve_local(value, var_root)
    except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop
        target = None
    if target is not None and any(target.is_relative_to(root) for root in roots):
        return None
    not_hub = ", and is not a Hugging Face hub id (owner/name)" if kind == "model" else ""
    return (
        f"{key}: {value!r} is outside the allowed roots ({_roots_text(roots)}){not_hub}; "
        f"{remedy} (symlinks are followed)"
    )


def named_locations(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str, Kind]]:
    """(dotted key, value, kind) for every set field of `model` (and its sections) that names a file or a model."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from named_locations(value, f"{key}.")
            continue
        extra = field.json_schema_extra
        kind = extra.get(LOCATION_KEY) if isinstance(extra, dict) else None
        if kind in ("path", "model") and isinstance(value, str):
            yield key, value, kind  # type: ignore[misc]


def resolved_roots(roots: Iterable[Path]) -> tuple[Path, ...]:
    return tuple(Path(root).expanduser().resolve() for root in roots)
