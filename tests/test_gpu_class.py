"""A queue per GPU class: `--gpu-class a100` jobs go to gpu.a100, taken only by workers started on it."""

from __future__ import annotations

import pytest
from jobs_fixtures import JobEnv, Worker, invoke, use_fake_stages, wait_for

from jobs import service
from jobs.broker.celery_app import is_queue_name, queue_for
from jobs.core.schemas import JobState, SubmitRequest
from jobs.core.stages import Stage


def test_gpu_stages_route_to_their_class_and_cpu_stages_do_not():
    assert queue_for(Stage.train) == "gpu"
    assert queue_for(Stage.train, "a100") == "gpu.a100"
    assert queue_for(Stage.prepare_data, "a100") == "cpu"
    assert [is_queue_name(n) for n in ("gpu", "cpu", "gpu.a100", "gpu.", "gpu.A100", "tpu", "cpu.x")] == [
        True, True, True, False, False, False, False,
    ]  # fmt: skip


def test_a_bad_gpu_class_is_refused_naming_the_option(job_env: JobEnv):
    result = invoke("submit", "train", "--gpu-class", "A100!")
    assert result.exit_code == 2 and "gpu_class" in result.output
    with pytest.raises(ValueError, match="gpu_class"):
        SubmitRequest(stage=Stage.train, gpu_class="x y")


@pytest.mark.slow
def test_a_class_worker_takes_its_class_and_leaves_plain_gpu_jobs(job_env: JobEnv, monkeypatch):
    use_fake_stages(monkeypatch)
    worker = Worker(job_env, queues="gpu.a100,cpu", name="a100")
    try:
        plain = service.submit(SubmitRequest(stage=Stage.train, overrides={"train.epochs": "1"}))
        classed = service.submit(SubmitRequest(stage=Stage.train, overrides={"train.epochs": "1"}, gpu_class="a100"))
        wait_for(lambda: service.get_job(classed.id).state.finished, 60, "the a100 job to finish", worker)
        assert service.get_job(classed.id).state is JobState.SUCCEEDED
        assert service.get_job(plain.id).state is JobState.QUEUED  # nobody listens on plain `gpu`
    finally:
        worker.stop()
