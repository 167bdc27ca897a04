"""Shared fixtures for the whole suite.

``smoke_config``   (session) the ``smoke`` preset with ``paths.var_dir`` set to a session temp folder, so
                   tests never write into the repository's ``var/``. ``MEDVL_VAR_DIR`` is unset for the
                   session because it would take precedence over ``paths.var_dir``. Derive variants with
                   ``smoke_config.model_copy(update=...)`` or ``load_config("smoke", {...})`` with
                   ``"paths.var_dir": smoke_config.paths.var_dir`` to reuse the built data and models.
``smoke_prepared`` (session) ``load_prepared(smoke_config)``: the synthetic dataset, the tiny SigLIP and
                   BioGPT (at ``worker.base_models.base_dir(smoke_config, "siglip" / "biogpt")``),
                   the split manifest and the 64x64 image caches, built once for the session (a few seconds).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.config import RunConfig, load_config

# The job-system fixtures (job_env) and the S3 server (s3) live beside their helpers; registered here, every
# test module gets them by naming them as arguments, without importing them.
pytest_plugins = ("jobs_fixtures", "storage_fixtures")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (a stable sort: the order is otherwise kept). `make test` gives each module to one
    xdist worker; a long module that started last would leave the other worker idle at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: a second intra-op thread only adds contention (measured on
    the report-generation tests: 85 s with two, 9 s with one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def _no_local_broker_outlives_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stop every local Redis a test started under this session's temp folders (daemonized, they would
    outlive pytest); fixtures stop their own, this catches the ones a subprocess started."""
    yield
    import psutil

    root = str(tmp_path_factory.getbasetemp())
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "redis-server" in (process.info["name"] or "") and any(root in part for part in cmdline):
            process.terminate()


@pytest.fixture(scope="session")
def smoke_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunConfig]:
    var_dir = tmp_path_factory.mktemp("var")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MEDVL_VAR_DIR", raising=False)
        yield load_config("smoke", {"paths.var_dir": str(var_dir)})


@pytest.fixture(scope="session")
def smoke_prepared(smoke_config: RunConfig):
    from worker.data import load_prepared

    return load_prepared(smoke_config)
