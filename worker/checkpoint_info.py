"""What a checkpoint file is, read without torch: its kind and its run config.

The job system refuses a checkpoint of the wrong kind when a job is submitted, in processes that never
import torch (the API, the CLI). A ``torch.save`` file is a zip holding ``data.pkl``; it is unpickled
here with every class but a few plain containers replaced by an inert stand-in and every tensor storage
by None, so no code from the file runs and the tensors are never read.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

# The keys the training stages write (worker/siglip/module.py, worker/generation/module.py import them).
RUN_CONFIG_KEY = "run_config"
LORA_TARGETS_KEY = "lora_targets"
SIGLIP_CHECKPOINT_KEY = "siglip_checkpoint"

TRAIN, TRAIN_FULL = "train", "train-full"
_SAFE = {("collections", "OrderedDict"): collections.OrderedDict, ("builtins", "set"): set,
         ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice}  # fmt: skip


class NotACheckpoint(ValueError):
    """The file is missing or was not written by ``torch.save``."""


class _Inert(dict):
    """Stands in for any class a checkpoint pickles (tensors, Lightning's containers); it accepts what the
    pickle hands it and keeps dict items, so the plain dicts and lists around it unpickle unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _SAFE.get((module, name), _Inert)

    def persistent_load(self, pid: Any) -> None:
        return None  # a tensor storage: never read


def read_header(path: str | Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, tensors left out; NotACheckpoint for anything else."""
    path = Path(path)
    if not path.is_file():
        raise NotACheckpoint(f"{path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            with archive.open(name) as data:
                header = _HeaderUnpickler(data).load()
    except (zipfile.BadZipFile, StopIteration, pickle.UnpicklingError, EOFError, TypeError, AttributeError) as exc:
        raise NotACheckpoint(f"{path} is not a checkpoint file ({exc.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise NotACheckpoint(f"{path} is not a training checkpoint (it holds a {type(header).__name__})")
    return header


def checkpoint_kind(header: dict[str, Any]) -> str | None:
    """``train`` (a SigLIP adapter), ``train-full`` (a report generator) or None (not one of ours)."""
    if RUN_CONFIG_KEY not in header:
        return None
    if SIGLIP_CHECKPOINT_KEY in header:
        return TRAIN_FULL
    return TRAIN if LORA_TARGETS_KEY in header else None


def recorded_config(path: str | Path) -> dict[str, Any] | None:
    """The run config a checkpoint was written with (None when it has none)."""
    config = read_header(path).get(RUN_CONFIG_KEY)
    return config if isinstance(config, dict) else None
