"""A job's log shows a repeated third-party warning or log line once, and every line of the project's own."""

from __future__ import annotations

import logging
import sys
import warnings

from jobs.execution.joblog import capture_job_log


def _to_stderr(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def test_repeats_from_libraries_are_shown_once_and_ours_every_time(tmp_path, monkeypatch):
    # pytest records warnings instead of printing them; print them, as a job's process does.
    monkeypatch.setattr(warnings, "showwarning", _to_stderr)
    log = tmp_path / "job.log"
    with capture_job_log(log, fresh=True):
        # A library that adds its own console handler when imported, during the job (as Lightning does).
        library = logging.getLogger("somelib")
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("LIB %(message)s"))
        library.addHandler(console)
        for epoch in range(3):
            logging.getLogger("somelib.checkpoint").info("`weights_only` was not set")
            logging.getLogger("worker.training.epoch_log").info("epoch %d", epoch)
            with warnings.catch_warnings():  # resets Python's own registry of shown warnings
                warnings.warn("deprecated thing", FutureWarning, stacklevel=1)
        library.removeHandler(console)
    text = log.read_text()

    assert text.count("LIB `weights_only` was not set") == 1  # the library's console copy
    assert text.count("INFO somelib.checkpoint: `weights_only` was not set") == 1  # the file's own line
    assert [f"epoch {n}" in text for n in range(3)] == [True] * 3
    assert text.count("FutureWarning: deprecated thing") == 1


def test_the_filters_go_when_the_job_ends(tmp_path):
    handler = logging.StreamHandler()
    logging.getLogger("otherlib").addHandler(handler)
    try:
        with capture_job_log(tmp_path / "job.log", fresh=True):
            logging.getLogger("otherlib").warning("once")
            logging.getLogger("otherlib").warning("once")
        assert handler.filters == []
    finally:
        logging.getLogger("otherlib").removeHandler(handler)
