"""Fixtures for the job-system tests: a fake stage, isolated settings, database/broker backends, workers.

The fake stage behaves like a training stage where it matters to the job system: it records per-epoch
metrics and progress, checks for cancellation between epochs, writes a checkpoint after every epoch and
resumes from it when config.train.resume is set. It is steered by environment variables so that a worker
subprocess can run it too:
  FAKE_EPOCH_S      seconds each epoch sleeps (default 0)
  FAKE_FAIL_EPOCH   raise RuntimeError at this epoch (a ConfigError, the user's bad input, with FAKE_FAIL_AS=config)

Run as a script, this module is `jobs` with the fake stage registered for `train` and `prepare-data`
(`python tests/jobs_fixtures.py worker ...`): a worker for the fake stage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FAKE_STAGE_PATH = "jobs_fixtures:fake_stage"
FAKE_STAGES = ("train", "prepare-data")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
STEPS_PER_EPOCH = 4
# Fast beats and sweeps, but a staleness no live job reaches: a job's heartbeat thread can be starved for
# seconds on a loaded machine (a native call that holds the GIL, such as the dlopen of a large library in an
# import, or an fsync behind a disk writer), and a 2 s staleness then handed a live job to a second attempt
# (CI, test_recovery: a comparison child with attempts == 2 and no worker killed).
FAST_TIMINGS = {
    "JOBS_HEARTBEAT_S": "0.3",
    "JOBS_STALE_AFTER_S": "30",
    "JOBS_SWEEP_INTERVAL_S": "0.5",
    "JOBS_MAX_ATTEMPTS": "3",
    "JOBS_REQUEUE_AFTER_S": "3",
}
# For the tests about staleness itself: the worker that takes a killed worker's job over, and a `--wait` with
# no worker at all. Never for a worker whose live job must stay its own.
TAKEOVER_TIMINGS = {"JOBS_STALE_AFTER_S": "2"}
# `--wait` deciding from a live job's heartbeat: short enough for a job to outlive it several times, long
# enough that a heartbeat starved for a few seconds on the loaded machine does not look dead.
WATCH_TIMINGS = {"JOBS_STALE_AFTER_S": "5"}
# A worker running the real stages: its child imports torch and trains, and a message it holds for longer than
# the 3 s requeue window while it starts would be sent again (harmless, but noisy in the logs these tests read).
REAL_STAGE_TIMINGS = {**FAST_TIMINGS, "JOBS_STALE_AFTER_S": "60", "JOBS_REQUEUE_AFTER_S": "60"}

log = logging.getLogger("fake_stage")


def fake_stage(config: Any, recorder: Any) -> Any:
    from worker.result import StageResult

    run_dir = Path(config.run_path("train"))
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "last.json"
    start = 0
    if config.train.resume and checkpoint.exists():
        start = json.loads(checkpoint.read_text())["epoch"] + 1
    with (run_dir / "starts.txt").open("a") as starts:  # one line per run of the stage: where it began
        starts.write(f"{start}\n")
    epoch_s = float(os.environ.get("FAKE_EPOCH_S", "0"))
    fail_epoch = os.environ.get("FAKE_FAIL_EPOCH")
    epochs, begun = config.train.epochs, time.perf_counter()
    print(f"fake stage starting at epoch {start} of {epochs}")
    for epoch in range(start, epochs):
        if recorder.cancelled():
            log.info("fake stage: cancelled before epoch %s", epoch)
            return StageResult("train", metrics={"epochs_run": epoch}, status="cancelled")
        if fail_epoch is not None and epoch == int(fail_epoch):
            if os.environ.get("FAKE_FAIL_AS") == "config":
                from worker.config import ConfigError

                raise ConfigError(f"fake bad input at epoch {epoch}: name the problem and the fix")
            raise RuntimeError(f"fake failure at epoch {epoch}")
        time.sleep(epoch_s)
        recorder.log_metrics({"train_loss": 1.0 / (epoch + 1)}, split="train", epoch=epoch)
        recorder.log_metrics({"val_loss": 2.0 / (epoch + 1), "i2t_recall@1": epoch / epochs}, split="val", epoch=epoch)
        recorder.progress(epoch=epoch, step=(epoch + 1) * STEPS_PER_EPOCH, total=epochs * STEPS_PER_EPOCH)
        # Atomic, as the real stage's checkpoints (worker/training/atomic_io.py): a kill -9 mid-write must leave
        # the previous checkpoint, not an empty file (a quiet run: JSONDecodeError on the takeover's resume).
        partial = checkpoint.with_name(f".{checkpoint.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({"epoch": epoch}))
        partial.replace(checkpoint)
        log.info("fake stage: epoch %s done", epoch)
    metrics = {
        "train_time_s": time.perf_counter() - begun,
        "samples_per_s": 123.5,
        "peak_gpu_mem_mb": None,
        "peak_ram_mb": 321.0,
        "trainable_params": 1000,
        "total_params": 50000,
        "best_val_loss": 2.0 / epochs,
        "i2t_recall@1": (epochs - 1) / epochs,
        "epochs_run": epochs,
        "best_checkpoint": str(checkpoint),
    }
    return StageResult("train", metrics=metrics, artifacts={"best_checkpoint": str(checkpoint)})


def starts(run_dir: str | Path) -> list[int]:
    """The epochs each run of the fake stage in this folder began at."""
    path = Path(run_dir) / "starts.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def use_fake_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.core.stages import STAGE_FUNCTIONS, Stage

    for stage in FAKE_STAGES:
        monkeypatch.setitem(STAGE_FUNCTIONS, Stage(stage), FAKE_STAGE_PATH)


# --- backends ------------------------------------------------------------------------------------------


def _unreachable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable ({error.__class__.__name__}: {error})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; under CI=true this test must run, not skip")
    pytest.skip(message)


def redis_broker_url() -> str:
    """A Redis database of its own for these tests, emptied first: db 11, 12, ... one per pytest-xdist worker
    (gw0, gw1, ...), so that two workers never empty each other's queues."""
    import redis

    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    assert 11 + worker <= 15, f"Redis has 16 databases: at most 5 xdist workers, not {worker + 1}"
    url = f"{REDIS_URL.rstrip('/')}/{11 + worker}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.flushdb()
    except Exception as exc:
        _unreachable(f"Redis at {REDIS_URL}", exc)
    return url


@dataclass
class PostgresSchema:
    url: str
    name: str


def postgres_schema() -> PostgresSchema:
    """A fresh schema in the test database; tables land there through the connection's search_path."""
    from sqlalchemy import create_engine, text

    name = f"jobs_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
        engine.dispose()
    except Exception as exc:
        _unreachable(f"PostgreSQL at {POSTGRES_URL}", exc)
    separator = "&" if "?" in POSTGRES_URL else "?"
    return PostgresSchema(f"{POSTGRES_URL}{separator}options=-csearch_path%3D{name}", name)


def drop_postgres_schema(schema: PostgresSchema) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema.name}" CASCADE'))
    engine.dispose()


@dataclass
class JobEnv:
    """Environment of one isolated job system: database, broker, folders and fast timings."""

    root: Path
    variables: dict[str, str]

    @property
    def artifacts(self) -> Path:
        return Path(self.variables["JOBS_ARTIFACTS_DIR"])


def embedded_variables(root: Path) -> dict[str, str]:
    """SQLite in the folder, and the local Redis the project starts (no CELERY_BROKER_URL)."""
    return {"DATABASE_URL": f"sqlite:///{root / 'experiments.db'}", "JOBS_BROKER_DIR": str(root / "broker")}


# The settings a job system reads from the environment that a test of the real stages sets for itself.
CONFIGURED = (
    "DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "JOBS_ARTIFACTS_DIR", "JOBS_LOG_DIR", "MEDVL_VAR_DIR",
)  # fmt: skip


def smoke_worker_env(smoke_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobEnv:
    """The embedded default for a real worker: data and tiny models from the session's smoke folder, a
    database and broker of the test's own, timings for real stages."""
    from jobs.core.database import dispose_engines
    from jobs.core.settings import reset_settings

    for name in CONFIGURED:
        monkeypatch.delenv(name, raising=False)
    variables = {
        **embedded_variables(tmp_path),
        "JOBS_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "JOBS_LOG_DIR": str(tmp_path / "logs"),
        "MEDVL_VAR_DIR": str(Path(smoke_config.paths.var_dir)),
        **REAL_STAGE_TIMINGS,
    }
    env = JobEnv(tmp_path, variables)
    for name, value in env.variables.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    dispose_engines()
    return env


@pytest.fixture
def job_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    """The embedded default (SQLite database, local Redis broker) in a temp folder, with fast heartbeats."""
    yield from activate(tmp_path, embedded_variables(tmp_path), monkeypatch)


# Parameters of a fixture that runs a test on both backends; `both_backends` gives the environment.
BACKENDS = ["embedded", pytest.param("redis-postgres", marks=[pytest.mark.redis, pytest.mark.postgres])]


def both_backends(kind: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    """The embedded default, or a real Redis broker + a fresh PostgreSQL schema (dropped afterwards)."""
    if kind == "embedded":
        yield from activate(root, embedded_variables(root), monkeypatch)
        return
    broker = redis_broker_url()
    schema = postgres_schema()
    try:
        variables = {"DATABASE_URL": schema.url, "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker}
        yield from activate(root, variables, monkeypatch)
    finally:
        drop_postgres_schema(schema)


def activate(root: Path, backend: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    from jobs.core.database import dispose_engines
    from jobs.core.settings import reset_settings

    variables = {
        **backend,
        "JOBS_ARTIFACTS_DIR": str(root / "artifacts"),
        "JOBS_LOG_DIR": str(root / "logs"),
        **FAST_TIMINGS,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    unset = {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"} - set(backend)
    for name in ("FAKE_EPOCH_S", "FAKE_FAIL_EPOCH", "FAKE_FAIL_AS", *unset):
        monkeypatch.delenv(name, raising=False)
    reset_settings()
    dispose_engines()
    yield JobEnv(root, variables)
    dispose_engines()
    _stop_local_broker()
    reset_settings()


def override(env: JobEnv, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    """Change settings of an active JobEnv for one test: here, and in the workers and CLIs it starts."""
    from jobs.core.settings import reset_settings

    env.variables.update(variables)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    reset_settings()


def _stop_local_broker() -> None:
    from jobs.broker import localbroker

    if (local := localbroker.configured()) is not None:
        localbroker.stop(local)


# --- workers -------------------------------------------------------------------------------------------


class Worker:
    """A `jobs worker` subprocess in its own process group (so a test can SIGKILL it with its children)."""

    def __init__(
        self,
        env: JobEnv,
        *,
        fake: bool = True,
        extra_env: dict[str, str] | None = None,
        name: str = "w",
        queues: str = "gpu,cpu",
    ):
        command = [sys.executable, str(TESTS / "jobs_fixtures.py")] if fake else [str(REPO / ".venv/bin/jobs")]
        environment = {**os.environ, **env.variables, **(extra_env or {})}
        environment["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), environment.get("PYTHONPATH", "")])
        self.log_path = env.root / f"worker-{name}-{uuid.uuid4().hex[:4]}.log"
        self.hostname = f"{name}-{uuid.uuid4().hex[:6]}@test"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [*command, "worker", "--queues", queues, "--hostname", self.hostname],
            cwd=REPO,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its children at once: no chance to clean up or acknowledge."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """End the worker after a test (its shutdown is not under test, and a warm one takes seconds)."""
        self.kill()
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the worker answers a ping (a loaded machine boots it in seconds, not instantly)."""
        from jobs.broker import queue

        wait_for(lambda: self.hostname in queue.workers_answering(), timeout, f"worker {self.hostname} to answer", self)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, worker: Worker | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    detail = f"\n--- worker log ---\n{worker.output()[-4000:]}" if worker else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def invoke(*args: str) -> Any:
    """The `jobs` command in this process (the environment is the test's); returns click's Result."""
    from typer.testing import CliRunner

    from jobs.cli.main import app

    return CliRunner().invoke(app, list(args))


def run_cli(env: JobEnv, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `jobs` console script in a subprocess with this environment."""
    return subprocess.run(
        [str(REPO / ".venv/bin/jobs"), *args],
        cwd=REPO,
        env={**os.environ, **env.variables},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


if __name__ == "__main__":
    from jobs.cli.main import main
    from jobs.core.stages import STAGE_FUNCTIONS, Stage

    for stage_name in FAKE_STAGES:
        STAGE_FUNCTIONS[Stage(stage_name)] = FAKE_STAGE_PATH
    main()
