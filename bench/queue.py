"""The job system under load: submit latency, time to start, and 500 jobs through one worker.

Everything is the product's: the HTTP API (``uvicorn api.app:app``) and ``jobs worker`` (Celery, prefork,
one task per child) as subprocesses on 127.0.0.1, with a no-op stage registered for the ``train`` stage
in the benchmark's worker only (the way tests/jobs_fixtures.py registers its fake stage), so what is
measured is the queue, the worker and the database, not the ML. Each phase gets its own folder (and an
empty Redis database among 12-15, claimed with a key and emptied afterwards); nothing else is touched.

  embedded  SQLite database + the local Redis broker on a unix socket (the offline default)
  redis     Redis broker at 127.0.0.1:6379, PostgreSQL at 127.0.0.1:5432 (a schema of its own) if it answers,
            else SQLite for the database

Measured, per backend:
  start latency  POST /jobs until the no-op stage begins on an idle worker (sequential jobs)
  submit load    POST /jobs latency p50/p99 under 50 concurrent clients for 20 s (no worker running)
  drain          500 queued jobs through one worker: all SUCCEEDED once, none lost or run twice

Run: python -m bench.queue [--backends embedded,redis] [--drain-jobs 500]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import REPO, check, parser, percentile, print_checks, print_table, write_results

NOOP_STAGE = "bench.queue:noop_stage"
WORKER_COMMAND = "_worker"
REDIS_SERVER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DATABASES = range(12, 16)  # tests use 0 and 11; a run claims a free one of these for itself
CLAIM_KEY = "medvl-bench-claim"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TOKEN = "bench-token"
BODY = {"stage": "train", "preset": "smoke"}
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
RUNS_FILE = "noop-runs.txt"


# --- the no-op stage and the worker that runs it -----------------------------------------------------------


def noop_stage(config: Any, recorder: Any) -> Any:
    """Records when it began (for the start latency) and that it ran (one line per run, to spot doubles)."""
    from worker.result import StageResult

    started = time.time()
    run_dir = Path(config.run_path("train"))
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / RUNS_FILE).open("a") as runs:
        runs.write(f"{started}\n")
    return StageResult("train", metrics={"stage_started_unix": started})


def run_worker(hostname: str) -> None:
    """`jobs worker` with the no-op stage in place of training (the forked children inherit the table)."""
    from jobs.cli.main import main as jobs_main
    from jobs.core.stages import STAGE_FUNCTIONS, Stage

    STAGE_FUNCTIONS[Stage.train] = NOOP_STAGE
    sys.argv = ["jobs", "worker", "--queues", "gpu,cpu", "--hostname", hostname, "--loglevel", "INFO"]
    jobs_main()


# --- backends and processes --------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    root: Path
    variables: dict[str, str]
    database: str
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.variables,
            "JOBS_ARTIFACTS_DIR": str(self.root / "artifacts"),
            "JOBS_LOG_DIR": str(self.root / "logs"),
            "MEDVL_VAR_DIR": str(self.root / "var"),
            "API_TOKEN": TOKEN,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }

    def close(self) -> None:
        for step in reversed(self.cleanup):
            with contextlib.suppress(Exception):
                step()


def embedded_backend(root: Path) -> Backend:
    """SQLite and the local Redis the project starts (stopped with the backend)."""
    from jobs.broker import localbroker

    broker_dir = root / "broker"
    backend = Backend("embedded", root, {
        "DATABASE_URL": f"sqlite:///{root / 'experiments.db'}", "JOBS_BROKER_DIR": str(broker_dir),
    }, database="sqlite")  # fmt: skip
    backend.cleanup.append(lambda: localbroker.stop(localbroker.LocalBroker(broker_dir)))
    return backend


def claim_redis_database() -> tuple[str, Any]:
    """A Redis database of this run's own: empty, and claimed with a key so a concurrent run skips it."""
    import redis

    for number in REDIS_DATABASES:
        url = f"{REDIS_SERVER.rstrip('/')}/{number}"
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=6 * 3600):
                return url, client
        except redis.RedisError as exc:
            message = f"Redis at {REDIS_SERVER} does not answer ({exc}); start it or pass --backends embedded"
            raise RuntimeError(message) from None
    raise RuntimeError(f"Redis databases {REDIS_DATABASES.start}-{REDIS_DATABASES.stop - 1} are all in use; "
                       "wait for the other benchmark run or empty one")


def redis_backend(root: Path) -> Backend:
    """A Redis database of our own, and a PostgreSQL schema of our own if the server answers (else SQLite)."""
    from sqlalchemy import create_engine, text

    url, client = claim_redis_database()
    backend = Backend("redis", root, {"CELERY_BROKER_URL": url, "CELERY_RESULT_BACKEND": url}, database="sqlite")
    backend.cleanup.append(client.flushdb)  # our database only: the queue, results and the claim
    schema = f"bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception:
        backend.variables["DATABASE_URL"] = f"sqlite:///{root / 'experiments.db'}"
        return backend

    def drop_schema() -> None:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()

    separator = "&" if "?" in POSTGRES_URL else "?"
    backend.variables["DATABASE_URL"] = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    backend.database = "postgresql"
    backend.cleanup.append(drop_schema)
    return backend


BACKENDS = {"embedded": embedded_backend, "redis": redis_backend}


class Service:
    """A subprocess in its own process group, so stopping it stops its children (the worker's pool) too."""

    def __init__(self, name: str, command: list[str], backend: Backend):
        self.log_path = backend.root / f"{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=REPO, env=backend.environment(), stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{what}: the process exited ({self.process.returncode}):\n{self.output()[-2000:]}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{what}: not ready after {timeout:.0f} s:\n{self.output()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_api(backend: Backend) -> tuple[Service, str]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = Service("api", [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port),
                          "--log-level", "warning"], backend)
    api.wait_for(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 60, "the API")
    return api, url


def start_worker(backend: Backend) -> Service:
    hostname = f"bench-{uuid.uuid4().hex[:6]}@localhost"
    worker = Service("worker", [sys.executable, "-m", "bench.queue", WORKER_COMMAND, hostname], backend)
    worker.wait_for(lambda: " ready." in worker.output(), 90, "the worker")
    return worker


# --- measurements ------------------------------------------------------------------------------------------


def _client(url: str):
    import httpx

    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def wait_final(client, job_id: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in FINAL:
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} not finished after {timeout:.0f} s")


def start_latencies(url: str, jobs: int, timeout: float) -> list[float]:
    """POST one job, wait until it ends, repeat: seconds from each POST to its stage's first line."""
    latencies = []
    with _client(url) as client:
        for _ in range(jobs):
            posted = time.time()
            response = client.post("/jobs", json=BODY)
            response.raise_for_status()
            job = wait_final(client, response.json()["id"], timeout)
            if job["state"] != "SUCCEEDED":
                raise RuntimeError(f"job {job['id']} ended {job['state']}: {job['error']}")
            experiments = client.get("/experiments", params={"limit": 1000}).json()
            metrics = next(e["metrics"] for e in experiments if e["job_id"] == job["id"])
            latencies.append(metrics["stage_started_unix"] - posted)
    return latencies


async def _load(url: str, clients: int, seconds: float) -> tuple[list[float], Counter[str]]:
    import httpx

    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                                 limits=limits) as client:

        async def one_client() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.post("/jobs", json=BODY)
                    outcomes[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies, outcomes


def submit_load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    started = time.perf_counter()
    latencies, outcomes = asyncio.run(_load(url, clients, seconds))
    elapsed = time.perf_counter() - started
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": sum(outcomes.values()),
        "accepted": outcomes.get("202", 0), "outcomes": dict(outcomes), "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
        "max_ms": 1000 * max(latencies) if latencies else None,
    }


def submit_many(url: str, count: int) -> list[int]:
    ids = []
    with _client(url) as client:
        for _ in range(count):
            response = client.post("/jobs", json=BODY)
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def drain(backend: Backend, url: str, count: int, timeout: float, stall: float) -> dict[str, Any]:
    """Queue ``count`` jobs, then let one worker run them all; count outcomes and runs per job. Gives up
    after ``timeout`` seconds, or after ``stall`` seconds without a job finishing (a wedged worker)."""
    ids = set(submit_many(url, count))
    worker = start_worker(backend)
    started = time.perf_counter()
    states: Counter[str] = Counter()
    stalled = False
    try:
        with _client(url) as client:
            deadline = time.monotonic() + timeout
            finished, last_progress = 0, time.monotonic()
            while time.monotonic() < deadline:
                jobs = client.get("/jobs", params={"limit": 1000}).json()
                states = Counter(j["state"] for j in jobs if j["id"] in ids)
                done = sum(states[s] for s in FINAL)
                if done >= count:
                    break
                if done > finished:
                    finished, last_progress = done, time.monotonic()
                elif time.monotonic() - last_progress > stall:
                    stalled = True
                    break
                time.sleep(1.0)
            elapsed = time.perf_counter() - started
            jobs = {j["id"]: j for j in client.get("/jobs", params={"limit": 1000}).json() if j["id"] in ids}
    finally:
        worker.stop()
    runs = Counter()
    for path in (backend.root / "artifacts").rglob(RUNS_FILE):
        runs[len(path.read_text().split())] += 1
    succeeded = states.get("SUCCEEDED", 0)
    unfinished = count - sum(states[s] for s in FINAL)
    return {
        "jobs": count, "seconds": round(elapsed, 1), "jobs_per_s": succeeded / elapsed if elapsed else None,
        "states": dict(states), "succeeded": succeeded, "unfinished": unfinished,
        # A job is lost when the worker went idle with it never run; a timed-out drain cannot tell.
        "lost": None if unfinished else count - succeeded - states.get("FAILED", 0) - states.get("CANCELLED", 0),
        "ran_once": runs.get(1, 0), "ran_more_than_once": sum(n for k, n in runs.items() if k > 1),
        "attempts_over_1": sum(1 for j in jobs.values() if j["attempts"] > 1),
        "timed_out": unfinished > 0,
        "stalled": stalled,
        "first_unfinished": min((i for i, j in jobs.items() if j["state"] not in FINAL), default=None),
    }


def measure_backend(name: str, args: Any) -> dict[str, Any]:
    """A fresh backend per phase, so each phase starts from an empty queue."""
    result: dict[str, Any] = {"backend": name}
    phases = (("start_latency", args.latency_jobs), ("submit_load", args.load_seconds), ("drain", args.drain_jobs))
    for phase, amount in phases:
        if not amount:
            continue
        root = Path(tempfile.mkdtemp(prefix=f"bench-queue-{name}-{phase}-"))
        backend = BACKENDS[name](root)
        result["database"] = backend.database
        api = worker = None
        try:
            api, url = start_api(backend)
            if phase == "start_latency":
                worker = start_worker(backend)
                latencies = start_latencies(url, amount, args.job_timeout)
                result[phase] = {"jobs": amount, "p50_s": percentile(latencies, 50), "max_s": max(latencies),
                                 "min_s": min(latencies), "all_s": [round(x, 3) for x in latencies]}
            elif phase == "submit_load":
                result[phase] = submit_load(url, args.clients, amount)
            else:
                result[phase] = drain(backend, url, amount, args.drain_timeout, args.stall_timeout)
            print(f"  {name} {phase}: {summary(phase, result[phase])}", flush=True)
        except Exception as exc:  # report it, keep its folder (logs, databases) and go on with the next phase
            result[phase] = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
            print(f"  {name} {phase}: FAILED {result[phase]['error'][:300]} (logs kept in {root})", flush=True)
        finally:
            for service in (worker, api):
                if service is not None:
                    service.stop()
            backend.close()
            outcome = result.get(phase, {})
            if args.keep or "error" in outcome or outcome.get("timed_out"):
                outcome["kept"] = str(root)  # logs and databases, for a look at what went wrong
            else:
                shutil.rmtree(root, ignore_errors=True)
    return result


def summary(phase: str, values: dict[str, Any]) -> str:
    if phase == "start_latency":
        return f"p50 {values['p50_s']:.3f} s, max {values['max_s']:.3f} s over {values['jobs']} jobs"
    if phase == "submit_load":
        return (f"{values['requests']} requests, p50 {values['p50_ms']:.0f} ms, p99 {values['p99_ms']:.0f} ms, "
                f"{values['requests_per_s']:.1f}/s, outcomes {values['outcomes']}")
    ended = " (STALLED: no job finished for --stall-timeout)" if values["stalled"] else ""
    if values["timed_out"] and not values["stalled"]:
        ended = " (timed out)"
    return (f"{values['succeeded']}/{values['jobs']} succeeded in {values['seconds']} s{ended}, "
            f"unfinished {values['unfinished']} (first: job {values['first_unfinished']}), "
            f"ran twice {values['ran_more_than_once']}")


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        latency, load, drained = r.get("start_latency", {}), r.get("submit_load", {}), r.get("drain", {})
        rows.append({"what": f"{r['backend']} ({r.get('database')})", "start_p50_s": latency.get("p50_s"),
                     "start_max_s": latency.get("max_s"), "post_p50_ms": load.get("p50_ms"),
                     "post_p99_ms": load.get("p99_ms"), "posts_per_s": load.get("requests_per_s"),
                     "drained": drained.get("succeeded"), "lost": drained.get("lost"),
                     "jobs_per_s": drained.get("jobs_per_s")})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="embedded,redis", help="Comma-separated: embedded, redis.")
    p.add_argument("--latency-jobs", type=int, default=10, help="Sequential jobs for the start latency (0: skip).")
    p.add_argument("--clients", type=int, default=50, help="Concurrent clients in the submit load.")
    p.add_argument("--load-seconds", type=float, default=20, help="Length of the submit load (0: skip).")
    p.add_argument("--drain-jobs", type=int, default=500, help="Jobs through one worker (0: skip).")
    p.add_argument("--drain-timeout", type=float, default=900, help="Give up draining after this many seconds.")
    p.add_argument("--stall-timeout", type=float, default=180,
                   help="Stop draining when no job has finished for this many seconds (a wedged worker).")
    p.add_argument("--job-timeout", type=float, default=60, help="Longest wait for one job in the latency phase.")
    p.add_argument("--keep", action="store_true", help="Keep each phase's temporary folder (logs, databases).")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise SystemExit(f"--backends: unknown {unknown}; choose from {', '.join(BACKENDS)}")

    results = [measure_backend(name, args) for name in names]
    checks = []
    for r in results:
        drained = r.get("drain", {})
        if "succeeded" in drained:
            checks.append(check(f"{r['backend']}: all {drained['jobs']} no-op jobs through one worker SUCCEEDED "
                                "(none lost or stuck)",
                                float(drained["succeeded"]), float(drained["jobs"]), unit="jobs"))
            checks.append(check(f"{r['backend']}: no job ran twice", float(drained["ran_more_than_once"]), 0.0,
                                higher_is_better=False, unit="jobs"))
    print_table("Job system", table_rows(results), ["what", "start_p50_s", "start_max_s", "post_p50_ms", "post_p99_ms",
                                                   "posts_per_s", "drained", "lost", "jobs_per_s"])
    print_checks(checks)
    payload = {"mode": "cpu", "backends": results, "targets": checks,
               "settings": {"clients": args.clients, "load_seconds": args.load_seconds,
                            "latency_jobs": args.latency_jobs, "drain_jobs": args.drain_jobs}}
    write_results("queue", payload, args.out)
    return payload


if __name__ == "__main__":
    if sys.argv[1:2] == [WORKER_COMMAND]:
        run_worker(sys.argv[2])
    else:
        main()
