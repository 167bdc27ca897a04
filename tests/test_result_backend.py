"""A process that sends jobs holds no result subscription (jobs/broker/result_backend.py).

Celery's own Redis backend subscribed the API to every branch of a comparison's chord and unsubscribed from
AsyncResult.__del__; with the broker gone, that finalizer retried for 20 s inside whatever the garbage
collector had interrupted, then raised (CI: a SystemError out of an interrupted ast.parse).
"""

from __future__ import annotations

import gc
import sys

from jobs_fixtures import Worker, wait_for

from jobs import service
from jobs.broker import localbroker
from jobs.broker.celery_app import app_for
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage, StageParams
from jobs.pipelines.launch import canvas
from jobs.pipelines.plan import create_plan, plan_runs
from worker.config import load_config


def _sent_comparison():
    request = SubmitRequest(stage=Stage.compare, preset="smoke", params=StageParams(with_generation=False))
    config = load_config(request.preset, request.overrides).to_dict()
    plan = create_plan(request, config, plan_runs(request, config), with_generation=False)
    return plan, canvas(plan, None).apply_async()


def test_a_sent_comparison_subscribes_to_nothing_and_its_results_die_quietly_without_a_broker(
    job_env, monkeypatch
):
    plan, result = _sent_comparison()
    broker = localbroker.configured()
    assert broker is not None and broker.client().pubsub_channels() == []  # Celery's backend: one per branch

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    assert localbroker.stop(broker)
    del result
    gc.collect()
    assert unraisable == []
    assert all(service.get_job(job_id).state is JobState.QUEUED for job_id in plan.child_ids())


def test_a_waited_result_is_polled_from_the_stored_state(job_env):
    job = service.submit(SubmitRequest(stage=Stage.train, preset="smoke"))
    worker = Worker(job_env, extra_env={"FAKE_EPOCH_S": "0.05"})
    try:
        result = app_for().AsyncResult(service.get_job(job.id).celery_task_id)
        wait_for(lambda: service.get_job(job.id).state.finished, 60, "the job to finish", worker)
        assert result.get(timeout=30) is not None and result.state == "SUCCESS"
    finally:
        worker.stop()
