"""Progress of a step that takes minutes at MIMIC-CXR size (caching images, encoding a gallery, retrieval).

On a terminal: a rich progress bar on stderr (stdout may carry a stage's ``--json`` result), gone when the step
ends. Elsewhere (a worker's job log, CI): one log line per step when it ends, with its count and time, and
only for a step over ``LOG_MIN_ITEMS`` items, so a small split's log is not filled with them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress

logger = logging.getLogger(__name__)

LOG_MIN_ITEMS = 10_000
"""Fewer items than this take seconds: no log line for them."""


@contextmanager
def progress(description: str, total: int, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """``with progress("encoding training texts", len(texts), "texts") as advance: ... advance(len(batch))``."""
    console = Console(stderr=True)
    started = time.perf_counter()
    done = 0
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)

        def advance(count: int) -> None:
            nonlocal done
            done += count
            bar.advance(task, count)

        yield advance
    if not console.is_terminal and total >= LOG_MIN_ITEMS:
        elapsed = time.perf_counter() - started
        rate = f", {done / elapsed:,.0f} {unit}/s" if elapsed > 0 else ""
        logger.info("%s: %s %s in %.1f s%s", description, f"{done:,}", unit, elapsed, rate)
