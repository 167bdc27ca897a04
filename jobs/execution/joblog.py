"""Capture one job's output into var/logs/job-<id>.log: Python logging (the stage's and Lightning's) and
whatever the stage prints (Lightning's summaries and progress bar), while it still reaches the terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TextIO

from jobs.execution.repeats import shown_once

# Lightning's loggers do not propagate to the root logger; they get the handler directly.
_NON_PROPAGATING = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Tee:
    """A text stream that writes to the original stream and to the log file."""

    def __init__(self, primary: TextIO, copy: IO[str]) -> None:
        self._primary = primary
        self._copy = copy

    def write(self, text: str) -> int:
        # A handler created during an earlier job in this process (Lightning makes some) may still hold this
        # Tee after that job's file closed; the text then goes only to the terminal.
        if not self._copy.closed:
            self._copy.write(text)
            self._copy.flush()
        try:
            return self._primary.write(text)
        except ValueError:  # the terminal stream was closed; the log file still has it
            return len(text)

    def flush(self) -> None:
        if not self._copy.closed:
            self._copy.flush()
        self._primary.flush()

    def isatty(self) -> bool:
        return self._primary.isatty()

    def __getattr__(self, name: str) -> object:
        return getattr(self._primary, name)


@contextmanager
def capture_job_log(path: Path, *, fresh: bool) -> Iterator[Path]:
    """Send logging (INFO and up) and stdout/stderr to `path` as well; `fresh` starts the file anew."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w" if fresh else "a", encoding="utf-8", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.setLevel(logging.INFO)
        root = logging.getLogger()
        loggers = [root, *(logging.getLogger(name) for name in _NON_PROPAGATING)]
        targets = [logger for logger in loggers if logger is root or not logger.propagate]
        old_level = root.level
        for logger in targets:
            logger.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        old_stdout, old_stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(old_stdout, stream), _Tee(old_stderr, stream)
        try:
            # Libraries' own console handlers write into the file too (through the tee): they are filtered too.
            with shown_once(handler, [h for logger in targets for h in logger.handlers]):
                yield path
        finally:
            sys.stdout, sys.stderr = old_stdout, old_stderr
            for logger in targets:
                logger.removeHandler(handler)
            root.setLevel(old_level)
