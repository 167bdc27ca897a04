"""Load a checkpoint file without running code from it.

A path a user or a job row names can point at any file under the allowed roots, including one written into
the bucket by someone else, and unpickling runs whatever a pickle asks for. Every checkpoint is therefore
read with ``torch.load(weights_only=True)``: tensors, plain containers, numbers and strings only, which is
all the training stages write (configs are stored as plain dicts). A file that needs anything more is refused
in one line, before anything in it is built.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

# torch's refusal names the object it would not build: "Unsupported global: GLOBAL posix.system was not ...".
# (Any other unpickling error, e.g. "Unsupported operand", is a file that is no pickle at all.)
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global|Trying to load unsupported \w+)[^.\n]*")


class UnsafeCheckpoint(ValueError):
    """The file holds pickled objects beyond tensors and plain containers; it was not loaded."""


def load_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (``what`` names it in errors, e.g. "SigLIP checkpoint"), on the CPU.

    Raises FileNotFoundError for a missing file, UnsafeCheckpoint for one that needs more than a weights-only
    load, and ValueError for one that is not a torch checkpoint at all."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _REFUSED_GLOBAL.search(str(exc))
        if found is None:
            raise ValueError(f"{what} {path} is not a checkpoint of the train or train-full stage (it does not "
                             "unpickle); pass the best_checkpoint of such a run") from None  # fmt: skip
        raise UnsafeCheckpoint(
            f"{what} {path} was refused: it holds pickled objects beyond tensors and plain containers "
            f"({found.group(0).strip()}), and loading it could run code; pass a checkpoint written by the train "
            "or train-full stage"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ValueError(f"{what} {path} is not a checkpoint of the train or train-full stage (it does not load: "
                         f"{exc.__class__.__name__}); pass the best_checkpoint of such a run") from None  # fmt: skip
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{what} {path} is not a checkpoint of the train or train-full stage (it holds a "
                         f"{type(checkpoint).__name__})")  # fmt: skip
    return checkpoint
