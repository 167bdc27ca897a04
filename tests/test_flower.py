"""Flower on the embedded default (the local Redis): it sees the worker, its queues, each task and a running
job's progress, through the same HTTP API its pages use."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import httpx
import pytest
from jobs_fixtures import REPO, TESTS, Worker, wait_for

from jobs import service
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage

AUTH = ("admin", "s3cret")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def flower(job_env):
    port = _free_port()
    env = {**os.environ, **job_env.variables, "FLOWER_BASIC_AUTH": ":".join(AUTH)}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    log = (job_env.root / "flower.log").open("w")
    process = subprocess.Popen(
        [str(REPO / ".venv/bin/jobs"), "flower", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 60, "Flower to answer")
    yield base
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
    log.close()


def _get(url: str) -> dict:
    response = httpx.get(url, auth=AUTH, timeout=10)
    response.raise_for_status()
    return response.json()


def test_flower_shows_the_worker_its_queues_the_task_and_the_progress(job_env, flower):
    worker = Worker(job_env, extra_env={"FAKE_EPOCH_S": "0.5"}, name="seen")
    try:
        job = service.submit(SubmitRequest(stage=Stage.train, overrides={"train.epochs": "30"}))
        wait_for(lambda: service.get_job(job.id).state is JobState.RUNNING, 60, "the job to start", worker)

        def worker_listed() -> dict | None:
            workers = _get(f"{flower}/api/workers?refresh=1")
            return next((info for name, info in workers.items() if name.startswith("seen-")), None)

        info = wait_for(worker_listed, 60, "Flower to list the worker", worker)
        assert {queue["name"] for queue in info["active_queues"]} == {"gpu", "cpu"}

        def task_listed() -> dict | None:
            return _get(f"{flower}/api/tasks").get(job.celery_task_id)

        task = wait_for(task_listed, 60, "Flower to list the task", worker)
        # The task list names the job, its stage and its method, not only a task UUID.
        assert task["name"] == "train" and task["args"] == f"job {job.id}, train, lora"

        def progress() -> dict | None:
            task = _get(f"{flower}/api/task/info/{job.celery_task_id}")
            return json.loads(task["result"]) if task["state"] == "PROGRESS" and task.get("result") else None

        reported = wait_for(progress, 60, "Flower to show the job's progress", worker)
        assert reported["job_id"] == job.id and 0 < reported["percent"] < 100 and reported["total"] == 120
    finally:
        worker.stop()
