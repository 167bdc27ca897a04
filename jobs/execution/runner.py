"""Run one job's stage: claim the row, build its config, call the stage, record what it returns.

The same code serves the Celery task (jobs/execution/tasks.py) and `jobs run` (in this process, no broker).
The worker package is imported here only inside functions, so importing this module stays torch-free.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import traceback
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from db.models import Experiment, Job, utcnow
from jobs.broker.queue import safe_url
from jobs.core import storage
from jobs.core.checkpoint_kinds import check_checkpoint_kinds
from jobs.core.database import retry_write, transaction
from jobs.core.locations import WorkerInputRefused, check_on_worker
from jobs.core.schemas import JobState
from jobs.core.settings import PROJECT_ROOT, get_settings
from jobs.core.stages import Stage, stage_function
from jobs.core.views import job_log_path
from jobs.execution import artifacts, lastwords, unpublished
from jobs.execution.claim import Claim, Heartbeat, WorkerIdentity, claim, max_time_s
from jobs.execution.fence import Fence
from jobs.execution.joblog import capture_job_log
from jobs.execution.ranks import follower_launch
from jobs.execution.recorder import DatabaseRecorder, ProgressCallback, json_safe
from jobs.execution.refs import resolve_job_refs
from jobs.execution.resumption import resumable_job
from worker.config import ConfigError
from worker.recorder import JobLost

if TYPE_CHECKING:
    from worker.config import RunConfig
    from worker.result import StageResult

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "lightning", "celery", "sqlalchemy")
# Every installed version, fixed by `make lock` (docs/dependencies.md); experiments record its digest.
LOCK_FILE = PROJECT_ROOT / "requirements.lock"
TRACEBACK_LINES = 15
# StageResult metrics that are also experiment columns (db/models.py), so SQL can sort and compare runs.
EXPERIMENT_METRIC_COLUMNS = (
    "train_time_s",
    "samples_per_s",
    "peak_gpu_mem_mb",
    "peak_gpu_reserved_mb",
    "peak_ram_mb",
    "trainable_params",
    "total_params",
    "best_val_loss",
)
PEFT_STAGES = {Stage.train, Stage.train_full, Stage.evaluate, Stage.qualitative}


@dataclass
class JobOutcome:
    job_id: int
    state: JobState | None
    ran: bool
    reason: str = ""
    result: StageResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """What the Celery task returns (JSON): enough for a chord to find the job's rows."""
        state = self.state.value if self.state else None
        return {"job_id": self.job_id, "state": state, "ran": self.ran, "reason": self.reason}


def execute_job(
    job_id: int,
    worker: WorkerIdentity,
    *,
    on_progress: ProgressCallback | None = None,
    delivery: dict[str, Any] | None = None,
) -> JobOutcome:
    """Claim the job and run it to a final state, unless another worker has it or it is already done."""
    claimed = claim(job_id, worker, delivery=delivery)
    if not claimed.acquired:
        log.info("job %s: not run (%s)", job_id, claimed.reason)
        return JobOutcome(job_id, _current_state(job_id), ran=False, reason=claimed.reason)
    fence = Fence(job_id, worker.worker_id, claimed.attempt)
    if claimed.attempt > 1:
        artifacts.fetch_log(job_id)  # a takeover on another host appends to what the first attempt uploaded
    heartbeat = Heartbeat(job_id, worker, attempt=claimed.attempt)
    with heartbeat, capture_job_log(job_log_path(job_id), fresh=claimed.attempt == 1):
        log.info("job %s: %s by %s (attempt %s)", job_id, claimed.reason, worker.worker_id, claimed.attempt)
        publish_only = _publish_pending(job_id)  # the stage finished in an earlier attempt: only its publish is left
        # A publish retry follows an attempt that ended; only a takeover fences a live one off.
        if claimed.previous_worker is not None and (claimed.takeover or not publish_only):
            log.warning(
                "job %s: attempt %s (%s) is fenced off: its writes are refused from now on",
                job_id,
                claimed.attempt - 1,
                claimed.previous_worker,
            )
        if publish_only:
            return _publish_only(fence, heartbeat)
        return _run_claimed(fence, claimed, heartbeat, on_progress)


@dataclass
class _Prepared:
    stage: Stage
    params: dict[str, Any]
    config: RunConfig
    experiment_id: int
    run_dir: Path  # local: the mirror's copy when artifacts live in a bucket


def _prepare(fence: Fence, claimed: Claim) -> _Prepared:
    """The job's config with its run folder (resuming after a takeover), and its experiment row. With an
    artifacts bucket the row names the folder by URL, and the stage gets local copies of it and its inputs."""
    from worker.config import RunConfig

    job_id = fence.job_id
    with transaction() as session:
        job = session.get_one(Job, job_id)
        stage, params, config_dict = Stage(job.stage), dict(job.params or {}), dict(job.config or {})
        run_dir = job.run_dir
        fresh_dir = str(get_settings().artifacts_root / f"job-{job_id}-{job.submitted_at:%Y%m%dT%H%M%S}")
    # A comparison's child names its input as job:<id>; it becomes that job's checkpoint now that it ran.
    params = resolve_job_refs(params)
    submitted = RunConfig.model_validate(config_dict)
    # Checked at submit too; again here, in the worker, so that no row makes a stage open what a request could not.
    params = check_on_worker(submitted, params)
    params = artifacts.local_params(params)
    check_checkpoint_kinds(stage, params)  # a job:<id> input is known only now
    if run_dir is None:
        earlier = submitted.train.resume and _earlier_run_dir(job_id, stage, submitted)
        run_dir = earlier or artifacts.recorded_name(fresh_dir)
    config = submitted.model_copy(deep=True)
    if claimed.attempt > 1:
        # A takeover continues from the last checkpoint the dead worker wrote in the same run_dir.
        config.train.resume = True
    local_run_dir = artifacts.local_run_dir(run_dir, resume=config.train.resume)
    config.paths.run_dir = str(local_run_dir)
    _update_job(fence, run_dir=run_dir)
    # Hash the config as submitted: the per-job run_dir and a takeover's resume flag do not make it another run.
    experiment_id = _ensure_experiment(fence, stage, config, submitted.config_hash())
    return _Prepared(stage, params, config, experiment_id, local_run_dir)


def _earlier_run_dir(job_id: int, stage: Stage, submitted: RunConfig) -> str | None:
    """`--resume` on a new job: the run folder of the latest earlier job of this stage with the same config
    (apart from the resume flag), so training continues from that job's last checkpoint. EarlierJobActive when
    that job has not ended (two trainers would share one folder)."""
    earlier = resumable_job(stage.value, submitted.to_dict(), before_id=job_id)
    if earlier is not None and earlier.run_dir:
        log.info("job %s: resuming job %s (%s) in its run folder %s", job_id, earlier.job_id, earlier.state.value,
                 earlier.run_dir)  # fmt: skip
        return earlier.run_dir
    log.info("job %s: --resume found no earlier job with the same config; starting fresh", job_id)
    return None


def _run_claimed(
    fence: Fence, claimed: Claim, heartbeat: Heartbeat, on_progress: ProgressCallback | None
) -> JobOutcome:
    """Prepare, run the stage, publish its files, record the end. Every write is fenced: once another attempt
    owns the job, the first write refused raises JobLost and this run ends without writing anything more."""
    job_id, experiment_id, recorder = fence.job_id, None, None
    try:
        prepared = _prepare(fence, claimed)
        experiment_id = prepared.experiment_id
        recorder = DatabaseRecorder(
            job_id,
            experiment_id,
            fence=fence,
            lost=heartbeat.lost,
            on_progress=on_progress,
            before_epoch=artifacts.epoch_upload(job_id, prepared.run_dir, guard=fence.check),
        )
        finished = _run_stage(fence, prepared, recorder)
        try:
            # Uploaded before the rows name them, with the heartbeat still beating through a long upload.
            result = artifacts.publish(finished, prepared.run_dir, job_id, guard=fence.check)
        except storage.StorageError as exc:  # the bucket stayed away: keep the training, retry the publish alone
            recorder.record_waiting()  # the epochs are recorded with the run's numbers; their files wait here
            return _leave_unpublished(fence, experiment_id, heartbeat, finished, prepared.run_dir, _waited(exc))
        recorder.record_waiting()  # epochs whose upload failed: their checkpoints are in the bucket now
    except JobLost as exc:
        return _fenced_off(job_id, heartbeat, str(exc))
    except SoftTimeLimitExceeded:
        _keep_waiting_epochs(recorder)
        return _finish_failed(fence, experiment_id, heartbeat, _time_limit_message(job_id))
    except KeyboardInterrupt:
        _keep_waiting_epochs(recorder)
        _finish(fence, experiment_id, heartbeat, JobState.CANCELLED, error="interrupted")
        raise
    except Exception as exc:
        _keep_waiting_epochs(recorder)
        return _finish_failed(fence, experiment_id, heartbeat, _describe(exc))
    state = JobState.CANCELLED if result.status == "cancelled" else JobState.SUCCEEDED
    if not _finish(fence, experiment_id, heartbeat, state, result=result):
        return JobOutcome(job_id, None, ran=True, reason=_lost_message(fence))
    return JobOutcome(job_id, state, ran=True, reason=claimed.reason, result=result)


def _publish_pending(job_id: int) -> bool:
    with transaction() as session:
        return unpublished.pending(session, job_id)


def _waited(exc: storage.StorageError) -> str:
    patience_s = get_settings().publish_patience_s
    return f"the run's files were not uploaded ({exc}; uploads are retried for JOBS_PUBLISH_PATIENCE_S={patience_s:g}s)"


def _publish_only(fence: Fence, heartbeat: Heartbeat) -> JobOutcome:
    """The retry of a finished run's publish (`jobs publish`): upload the files this host kept and record the
    result, without running the stage; no metric row is written (the run recorded its epochs)."""
    job_id = fence.job_id
    experiment_id = _experiment_of(job_id)
    kept = unpublished.read(job_id)
    if kept is None:
        return _still_unpublished(fence, experiment_id, heartbeat, _not_here(job_id, experiment_id))
    log.info("job %s: publishing the finished run kept in %s (the stage is not run again)", job_id, kept.run_dir)
    try:
        result = artifacts.publish(kept.result, kept.run_dir, job_id, guard=fence.check)
    except JobLost as exc:
        return _fenced_off(job_id, heartbeat, str(exc))
    except storage.StorageError as exc:
        return _leave_unpublished(fence, experiment_id, heartbeat, kept.result, kept.run_dir, _waited(exc))
    except Exception as exc:  # the files stay where they are: the job stays publish-pending, to retry once fixed
        reason = _describe(exc).splitlines()[0]
        return _leave_unpublished(fence, experiment_id, heartbeat, kept.result, kept.run_dir, reason)
    state = JobState.CANCELLED if result.status == "cancelled" else JobState.SUCCEEDED
    if not _finish(fence, experiment_id, heartbeat, state, result=result):
        return JobOutcome(job_id, None, ran=True, reason=_lost_message(fence))
    unpublished.forget(job_id)
    return JobOutcome(job_id, state, ran=True, reason="published", result=result)


def _experiment_of(job_id: int) -> int | None:
    with transaction() as session:
        return session.scalar(select(Experiment.id).where(Experiment.job_id == job_id))


def _not_here(job_id: int, experiment_id: int | None) -> str:
    """One line: this host does not hold the finished run, and which host does (as its experiment row says)."""
    where, here = None, unpublished.host()
    if experiment_id is not None:
        with transaction() as session:
            kept = session.scalar(select(Experiment.artifacts).where(Experiment.id == experiment_id)) or {}
        where = kept.get(unpublished.WAITING_ON)
    if where and where.startswith(f"{here}:") and not Path(where.removeprefix(f"{here}:")).is_dir():
        return f"job {job_id}'s finished run is no longer on this host ({where} is gone); it cannot be published"
    return (
        f"this host ({here}) does not hold job {job_id}'s finished run; its files are kept on "
        f"{where or 'the host that ran it'}: run `jobs publish {job_id}` again while a worker runs there"
    )


def _leave_unpublished(
    fence: Fence, experiment_id: int, heartbeat: Heartbeat, result: StageResult, run_dir: Path, why: str
) -> JobOutcome:
    """The stage finished but its files are not in the bucket: keep them and the result on this host, record
    the run's numbers, and end the job FAILED as publish-pending (`jobs publish` retries the publish alone)."""
    try:
        unpublished.keep(fence.job_id, result, run_dir)
    except OSError as exc:  # without the record no retry can publish: the job fails for good
        return _finish_failed(fence, experiment_id, heartbeat, f"{why}; the result could not be kept either ({exc})")
    values = _unpublished_values(result, f"{unpublished.host()}:{run_dir}")
    return _still_unpublished(fence, experiment_id, heartbeat, why, values)


def _still_unpublished(
    fence: Fence,
    experiment_id: int | None,
    heartbeat: Heartbeat,
    why: str,
    experiment_values: dict[str, Any] | None = None,
) -> JobOutcome:
    """End the job FAILED with a one-line "publish pending" error saying how to retry; the experiment stays (or
    becomes, with `experiment_values`) unpublished."""
    job_id = fence.job_id
    error = (
        f"publish pending: {why}; once the bucket answers, `jobs publish {job_id}` uploads the run and records it "
        "without training again"
    )
    values = experiment_values or {"finished_at": utcnow()}
    if not _finish(fence, experiment_id, heartbeat, JobState.FAILED, error=error, experiment_values=values):
        return JobOutcome(job_id, None, ran=True, reason=_lost_message(fence))
    log.error("job %s: %s", job_id, error)
    return JobOutcome(job_id, JobState.FAILED, ran=True, reason=error)


def _unpublished_values(result: StageResult, where: str) -> dict[str, Any]:
    """The experiment columns of a finished run whose files are not in the bucket: its numbers, not its files
    (a row names a file only once it is uploaded; `unpublished_on` says where they wait)."""
    values = _experiment_result(JobState.FAILED, result, utcnow())
    values["metrics"] = {name: value for name, value in values["metrics"].items() if not _local_path(value)}
    values.update(status=unpublished.UNPUBLISHED, artifacts={unpublished.WAITING_ON: where}, checkpoint_path=None)
    return values


def _local_path(value: Any) -> bool:
    return isinstance(value, str) and Path(value).is_absolute()


def _keep_waiting_epochs(recorder: DatabaseRecorder | None) -> None:
    """A run that ends without a result records the epochs still waiting for their upload: a failed job keeps
    its partial metrics (those epochs are not resumable, and a resume redoes them)."""
    if recorder is None:
        return
    try:
        recorder.record_waiting()
    except (JobLost, OperationalError) as exc:  # fenced off, or the database is what failed
        log.warning("job %s: epochs waiting for their upload not recorded (%s)", recorder.job_id, exc)


def _run_stage(fence: Fence, prepared: _Prepared, recorder: DatabaseRecorder) -> StageResult:
    function = stage_function(prepared.stage)
    _update_job(fence, gpu_name=_gpu_name())
    with follower_launch(prepared.stage, prepared.config, prepared.params), artifacts.stage_inputs():
        return function(prepared.config, recorder, **prepared.params)


def _fenced_off(job_id: int, heartbeat: Heartbeat, why: str) -> JobOutcome:
    """A run that lost its job: it stops here, leaving the job's rows, files and bucket to the new owner."""
    heartbeat.stop()
    log.warning("%s", why)
    return JobOutcome(job_id, None, ran=True, reason=why)


def _time_limit_message(job_id: int) -> str:
    with transaction() as session:
        config = session.scalar(select(Job.config).where(Job.id == job_id)) or {}
    return f"time limit: the job ran longer than train.max_time_s={max_time_s(config)}s"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WorkerInputRefused | ConfigError):
        # A setting, a path or a dataset of the user's (e.g. a data folder not in its layout): the line names
        # the problem and the fix, and a traceback would only bury it.
        return f"{exc.__class__.__name__}: {exc}" if isinstance(exc, ConfigError) else str(exc)
    lines = traceback.format_exception(exc)
    tail = "".join(lines).rstrip().splitlines()[-TRACEBACK_LINES:]
    message = f"{exc.__class__.__name__}: {exc}"
    if isinstance(exc, OperationalError):  # "database or disk is full" names no file: say which database
        first, _, rest = message.partition("\n")
        message = f"{first} (database {safe_url(get_settings().database)})\n{rest}"
    return message.rstrip("\n") + "\n" + "\n".join(tail)


def _finish_failed(fence: Fence, experiment_id: int | None, heartbeat: Heartbeat, error: str) -> JobOutcome:
    if heartbeat.lost.is_set():  # the failure came after the job was lost: it is the new owner's to finish
        return _fenced_off(fence.job_id, heartbeat, _lost_message(fence))
    log.error("job %s failed: %s", fence.job_id, error)
    if not _finish(fence, experiment_id, heartbeat, JobState.FAILED, error=error):
        return JobOutcome(fence.job_id, None, ran=True, reason=_lost_message(fence))
    return JobOutcome(fence.job_id, JobState.FAILED, ran=True, reason=error.splitlines()[0])


def _lost_message(fence: Fence) -> str:
    return f"job {fence.job_id}: attempt {fence.attempt} ({fence.worker_id}) is fenced off; it writes nothing more"


@retry_write
def _update_job(fence: Fence, **values: Any) -> bool:
    """Change the job row only while this run owns it."""
    with transaction() as session:
        return session.execute(update(Job).where(fence.owned()).values(**values)).rowcount == 1


def _finish(
    fence: Fence,
    experiment_id: int | None,
    heartbeat: Heartbeat,
    state: JobState,
    *,
    error: str | None = None,
    result: StageResult | None = None,
    experiment_values: dict[str, Any] | None = None,
) -> bool:
    """Write the final state; False when the run no longer owns the job (nothing was written).
    `experiment_values`: the experiment's columns as given, instead of those of `state` and `result`; the run
    folder is then not uploaded either (a publish-pending run: the bucket just stayed away)."""
    job_id = fence.job_id
    upload = state is not JobState.SUCCEEDED and experiment_values is None  # a success was published whole
    if upload and storage.bucket() is not None:
        try:
            artifacts.upload_quietly(job_id, _run_dir_of(job_id), guard=fence.check)
        except JobLost as exc:
            log.warning("%s", exc)
    heartbeat.stop()
    if heartbeat.lost.is_set():
        # Another worker owns the job now: its run writes the final state, not this one.
        log.warning("%s; leaving the job's state to its new owner", _lost_message(fence))
        return False
    now = utcnow()
    job_values: dict[str, Any] = {"state": state.value, "finished_at": now, "error": error}
    if result is not None:
        job_values["artifacts"] = json_safe({**result.artifacts, "log": artifacts.log_name(job_id)})
    if state is JobState.SUCCEEDED:
        job_values["progress"] = _completed_progress(job_id)
    if experiment_values is None:
        experiment_values = _experiment_result(state, result, now)
    try:
        written = _write_final(fence, experiment_id, job_values, experiment_values)
    except OperationalError:  # still failing after retries (the database's disk is full)
        # A failure or a cancel is kept beside the log for the sweep to record; a success is not (its results
        # would be missing from the row): the job is taken over and resumed from its last checkpoint instead.
        if state is not JobState.SUCCEEDED:
            lastwords.leave(job_id, state.value, error)
        raise
    if not written:
        log.warning("%s; final state %s not written", _lost_message(fence), state.value)
    return written


@retry_write
def _write_final(
    fence: Fence, experiment_id: int | None, job_values: dict[str, Any], experiment_values: dict[str, Any]
) -> bool:
    """The job's final state and its experiment's results in one transaction, only while the job is this
    run's (a run that lost its job must not overwrite the experiment its new owner is writing)."""
    with transaction() as session:
        owned = session.execute(update(Job).where(fence.owned()).values(**job_values)).rowcount == 1
        if owned and experiment_id is not None:
            session.execute(update(Experiment).where(Experiment.id == experiment_id).values(**experiment_values))
        return owned


def _run_dir_of(job_id: int) -> str | None:
    with transaction() as session:
        return session.scalar(select(Job.run_dir).where(Job.id == job_id))


def _completed_progress(job_id: int) -> dict[str, Any]:
    with transaction() as session:
        progress = dict(session.scalar(select(Job.progress).where(Job.id == job_id)) or {})
    if progress.get("total"):
        progress["step"] = progress["total"]
    progress["percent"] = 100.0
    return progress


def _experiment_result(state: JobState, result: StageResult | None, now: datetime) -> dict[str, Any]:
    """The experiment columns for a finished run: status, the StageResult's metrics and the known result fields."""
    values: dict[str, Any] = {"status": state.value.lower(), "finished_at": now}
    if result is None:
        return values
    metrics = json_safe(result.metrics)
    artifacts = json_safe(result.artifacts)
    values.update(metrics=metrics, artifacts=artifacts)
    values.update({name: metrics[name] for name in EXPERIMENT_METRIC_COLUMNS if name in metrics})
    values["checkpoint_path"] = (
        metrics.get("best_checkpoint") or artifacts.get("best_checkpoint") or _first_checkpoint(artifacts)
    )
    return values


def _first_checkpoint(artifacts: dict[str, str]) -> str | None:
    return next((path for name, path in artifacts.items() if "checkpoint" in name), None)


@retry_write
def _ensure_experiment(fence: Fence, stage: Stage, config: RunConfig, config_hash: str) -> int:
    """The job's experiment row: created on the first attempt, reused (same id) after a takeover; written only
    while the run owns the job."""
    job_id = fence.job_id
    with transaction() as session:
        fence.hold(session)
        existing = session.scalar(select(Experiment.id).where(Experiment.job_id == job_id))
        if existing is not None:
            session.execute(update(Experiment).where(Experiment.id == existing).values(status="running"))
            return existing
        experiment = Experiment(
            job_id=job_id,
            stage=stage.value,
            peft_method=str(config.peft.method) if stage in PEFT_STAGES else None,
            model_ids={"siglip": config.model.siglip, "biogpt": config.model.biogpt},
            dataset=_dataset_name(config),
            config=config.to_dict(),
            config_hash=config_hash,
            git_commit=git_commit(),
            versions=package_versions(),
            seed=config.seed,
            status="running",
        )
        session.add(experiment)
        session.flush()
        return experiment.id


def _dataset_name(config: RunConfig) -> str:
    data = config.data
    origin = {"synthetic": "synthetic", "kaggle": data.kaggle_dataset}.get(data.source) or data.data_dir or data.source
    return f"{origin} ({data.projection}, {data.target})"


def package_versions() -> dict[str, str | None]:
    """Python, the main packages' versions, and the digest of the lock that fixes every other one (None where
    the lock is not beside the code), so that a result names the exact environment it ran in."""
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions[LOCK_FILE.name] = lock_digest()
    return versions


def lock_digest(path: Path = LOCK_FILE) -> str | None:
    """``sha256:HEX`` of the lock file's bytes, or None when there is none."""
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None


def _gpu_name() -> str | None:
    """The GPU this job uses, if the stage's import brought in torch and CUDA is there."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(torch.cuda.current_device()))


def _current_state(job_id: int) -> JobState | None:
    with transaction() as session:
        state = session.scalar(select(Job.state).where(Job.id == job_id))
    return JobState(state) if state else None
