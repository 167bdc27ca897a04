"""Checkpoint files that are either whole or absent, and whose write errors name the file.

A worker killed while it writes `last.ckpt` must leave the previous checkpoint intact, or the job that
takes over has nothing to resume from. Lightning writes in place; this CheckpointIO writes a temporary file
beside the target, flushes it to disk and renames it over the target (atomic on POSIX).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, folder not writable); the message names the path."""


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        atomic_torch_save(checkpoint, Path(path))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to `path` through a temporary file and a rename; CheckpointWriteError names the path."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write (ENOSPC) as a RuntimeError
        temporary.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        errno = exc.errno if isinstance(exc, OSError) else None
        raise CheckpointWriteError(errno, f"could not write checkpoint {path}: {reason}") from exc
