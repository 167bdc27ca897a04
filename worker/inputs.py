"""How a stage names a file that a later stage, perhaps on another host, opens again.

A `train-full` checkpoint records the SigLIP checkpoint it was trained on, and evaluate, predict and export
load it back from that name. By default the name is the local path. The job runner may install another
`Inputs` for the length of a stage (jobs/execution/runner.py: with an artifacts bucket, a name is the file's
s3:// URL and opening it downloads the file), so nothing here knows where files live.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Inputs(Protocol):
    def name(self, path: str) -> str:
        """What to record for the local file `path`, so another stage can open it."""

    def local(self, name: str) -> str:
        """A local file for a recorded name (a download, for a remote one)."""


class LocalInputs:
    def name(self, path: str) -> str:
        return path

    def local(self, name: str) -> str:
        return name


_current: Inputs = LocalInputs()


def name_of(path: str) -> str:
    return _current.name(path)


def local_file(name: str) -> str:
    return _current.local(name)


@contextmanager
def using(inputs: Inputs) -> Iterator[None]:
    global _current
    previous, _current = _current, inputs
    try:
        yield
    finally:
        _current = previous
