"""Third-party warnings and log lines that repeat are shown once per job.

Libraries repeat theirs for every epoch, batch or load (Lightning logs "`weights_only` was not set" at
every checkpoint), and a job's log then holds tens of copies of one line and little else. Python's own "once
per location" does not hold for warnings either: every `warnings.catch_warnings()` (Lightning, transformers
and torch enter them often) resets the registry that remembers what was shown. So both are remembered here,
by their text, for as long as the job runs. The project's own log lines (jobs.*, worker.*) all pass: one line
per epoch is the point of them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

OURS = ("jobs", "worker")
Key = tuple[str, int, str]


def _key(record: logging.LogRecord) -> Key | None:
    """What makes two records the same line; None for the project's own records, which always pass."""
    if record.name.split(".", 1)[0] in OURS:
        return None
    return (record.name, record.levelno, record.getMessage())


class _Once(logging.Filter):
    """One handler's filter: passes a record whose key this handler has not written yet."""

    def __init__(self, seen: set[Key], on_pass: Any = None) -> None:
        super().__init__()
        self.seen = seen
        self._on_pass = on_pass

    def filter(self, record: logging.LogRecord) -> bool:
        key = _key(record)
        if key is None:
            return True
        if key in self.seen:
            return False
        self.seen.add(key)
        if self._on_pass is not None:
            self._on_pass(record)
        return True


class _Watch:
    """Filters the job file's handler and every handler a third-party record reaches on its way to it.

    Libraries add console handlers of their own when they are imported, which is often during the job
    (Lightning's `lightning` logger gets one), so the handlers cannot all be known up front: the first
    record that reaches the job's file through a logger with such a handler puts a filter on it, seeded with
    every line the file has written (which that handler, emitting first, wrote too)."""

    def __init__(self, file_handler: logging.Handler) -> None:
        self._file_seen: set[Key] = set()
        self._filters: dict[logging.Handler, _Once] = {}
        self.add(file_handler, _Once(self._file_seen, on_pass=self._reach))

    def add(self, handler: logging.Handler, once: _Once | None = None) -> None:
        if handler in self._filters:
            return
        once = once or _Once(set(self._file_seen))
        handler.addFilter(once)
        self._filters[handler] = once

    def _reach(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            for handler in logger.handlers:
                self.add(handler)
            logger = logger.parent if logger.propagate else None

    def close(self) -> None:
        for handler, once in self._filters.items():
            handler.removeFilter(once)


@contextmanager
def shown_once(file_handler: logging.Handler, handlers: Iterable[logging.Handler] = ()) -> Iterator[None]:
    """While inside, a warning already shown is dropped, and a third-party log line already written is
    dropped by the job file's handler and by the handlers the same records reach (`handlers`: the ones
    known now; the others are found as records arrive)."""
    watch = _Watch(file_handler)
    for handler in handlers:
        watch.add(handler)
    shown: set[tuple[type[Warning], str]] = set()
    original = warnings.showwarning

    def show_once(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        key = (category, str(message))
        if key not in shown:
            shown.add(key)
            original(message, category, *args, **kwargs)

    warnings.showwarning = show_once
    try:
        yield
    finally:
        warnings.showwarning = original
        watch.close()
