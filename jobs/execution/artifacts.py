"""A job's files and the artifacts bucket (jobs/core/storage.py), for the runner.

Before the stage: its s3:// inputs are downloaded, and a resumed run's folder too (its last.ckpt is where a
takeover on another host continues). After each recorded epoch: the run folder and the job log are uploaded,
so the bucket holds the checkpoint the epoch's metrics describe. At the end: everything the stage names is
uploaded, and only then named by URL in the rows. Without JOBS_ARTIFACTS_URL, every function here leaves
paths as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.core import storage
from jobs.core.locations import PATH_PARAMS
from jobs.core.settings import get_settings
from jobs.core.views import job_log_path

if TYPE_CHECKING:
    from worker.result import StageResult

log = logging.getLogger(__name__)

# An upload after an epoch waits this long for a server that is away; the next epoch's upload catches up.
EPOCH_PATIENCE_S = 10.0
CHECKPOINT_SUFFIX = ".ckpt"
LAST_CHECKPOINT = "last.ckpt"
Guard = Callable[[], None]  # raises (JobLost) when the run may no longer upload: called before each upload


class BucketInputs:
    """worker.inputs.Inputs over the bucket: a file is recorded by its URL and opened from the mirror."""

    def __init__(self, store: storage.Bucket):
        self.store = store

    def name(self, path: str) -> str:
        return self.store.url_of(path) or path

    def local(self, name: str) -> str:
        return str(storage.local_copy(name))


class PreparedInBucket:
    """worker.data.shared.SharedStore over the bucket's ``prepared/`` area: the image caches of a prepared
    dataset, decoded by the first host that needed them and copied by the others."""

    AREA = "prepared"

    def __init__(self, store: storage.Bucket):
        self.store = store

    def url(self, key: str) -> str:
        return f"{self.store.url}/{self.AREA}/{key}"

    def download(self, key: str, target: Path) -> bool:
        return self.store.download(self.url(key), target)

    def upload(self, source: Path, key: str) -> None:
        self.store.upload(source, self.url(key))


@contextmanager
def stage_inputs() -> Iterator[None]:
    """worker.inputs names files by their bucket URL for the length of a stage, and the data stage's image
    caches are shared through the bucket (worker/data/shared.py), when there is a bucket."""
    from worker import inputs
    from worker.data import shared

    store = storage.bucket()
    if store is None:
        yield
        return
    with inputs.using(BucketInputs(store)), shared.sharing(PreparedInBucket(store)):
        yield


def recorded_name(local: str) -> str:
    """What a job row records for a local file or folder: its URL when artifacts live in a bucket."""
    store = storage.bucket()
    return (store.url_of(local) or local) if store else local


def local_run_dir(run_dir: str, *, resume: bool) -> Path:
    """The local folder a stage runs in. A resumed run's folder is downloaded first, but of its checkpoints only
    what it resumes from: each last.ckpt and the best checkpoints it names (superseded ones are not fetched)."""
    if not storage.is_url(run_dir):
        return Path(run_dir)
    store = storage.require_bucket(run_dir)
    if not resume:
        return store.local_of(run_dir)
    local = store.fetch(run_dir, missing_ok=True, wanted=lambda url: not url.endswith(CHECKPOINT_SUFFIX))
    store.fetch(run_dir, missing_ok=True, wanted=lambda url: url.endswith(f"/{LAST_CHECKPOINT}"))
    for last in local.rglob(LAST_CHECKPOINT):
        for name in _checkpoints_named_by(last):
            url = store.url_of(last.parent / name)
            if url is not None:
                store.fetch(url, missing_ok=True)
    return local


def _checkpoints_named_by(last: Path) -> set[str]:
    """The file names of the best checkpoints a last.ckpt's ModelCheckpoint state names (read without torch)."""
    from worker.checkpoint_info import NotACheckpoint, read_header

    try:
        states = read_header(last).get("callbacks") or {}
    except NotACheckpoint:
        return set()
    names: set[str] = set()
    for state in states.values():
        if isinstance(state, dict) and "best_model_path" in state:
            paths = [state.get("best_model_path"), *(state.get("best_k_models") or {})]
            names.update(Path(path).name for path in paths if isinstance(path, str) and path)
    return names


def local_params(params: dict[str, Any]) -> dict[str, Any]:
    """The params with each s3:// file downloaded and named by its local copy."""
    local = dict(params)
    for name in PATH_PARAMS:
        value = params.get(name)
        if storage.is_url(value):
            local[name] = str(storage.local_copy(value))
    return local


def fetch_log(job_id: int) -> None:
    """A takeover appends to the job's log: download what the earlier attempt uploaded of it."""
    store = storage.bucket()
    url = store.url_of(job_log_path(job_id)) if store else None
    if store is not None and url is not None:
        try:
            store.fetch(url, missing_ok=True, patience_s=EPOCH_PATIENCE_S)
        except storage.StorageError as exc:
            log.warning("job %s: earlier log not downloaded (%s)", job_id, exc)


def epoch_upload(job_id: int, run_dir: Path, *, guard: Guard | None = None) -> Callable[[], bool] | None:
    """What the recorder calls before it records an epoch's metrics: True once the run folder (its checkpoints)
    and the log are in the bucket, False when the bucket stayed away (the epoch is recorded after a later
    upload); None without a bucket."""
    store = storage.bucket()
    if store is None:
        return None

    def upload() -> bool:
        try:
            store.push(run_dir, patience_s=EPOCH_PATIENCE_S, guard=guard)
            store.prune(run_dir, CHECKPOINT_SUFFIX, patience_s=EPOCH_PATIENCE_S, guard=guard)
            store.push(job_log_path(job_id), patience_s=EPOCH_PATIENCE_S, guard=guard)
        except storage.StorageError as exc:
            log.warning("job %s: run folder not uploaded after an epoch (%s); its metrics wait for a later upload",
                        job_id, exc)  # fmt: skip
            return False
        return True

    return upload


def publish(result: StageResult, run_dir: Path, job_id: int, *, guard: Guard | None = None) -> StageResult:
    """Upload the run folder, every file the result names and the log; then the result naming them by URL.
    A bucket that is away is waited for (JOBS_PUBLISH_PATIENCE_S): a finished training is not failed for an
    outage. A StorageError after that fails the job (its metrics stay in the metrics table)."""
    store = storage.bucket()
    if store is None:
        return result
    patience_s = get_settings().publish_patience_s
    if run_dir.exists():
        store.push(run_dir, patience_s, guard=guard)
        store.prune(run_dir, CHECKPOINT_SUFFIX, patience_s, guard=guard)
    store.push(job_log_path(job_id), patience_s, guard=guard)
    return replace(
        result,
        artifacts=store.publish(result.artifacts, patience_s, guard=guard),
        metrics=store.publish(result.metrics, patience_s, guard=guard),
    )


def upload_quietly(job_id: int, run_dir: str | None, *, guard: Guard | None = None) -> None:
    """A failed or cancelled job's folder and log, for a reader on another host; a failure is only logged."""
    store = storage.bucket()
    if store is None:
        return
    try:
        if run_dir and storage.is_url(run_dir) and store.contains(run_dir) and store.local_of(run_dir).exists():
            store.push(store.local_of(run_dir), patience_s=EPOCH_PATIENCE_S, guard=guard)
        if job_log_path(job_id).exists():
            store.push(job_log_path(job_id), patience_s=EPOCH_PATIENCE_S, guard=guard)
    except storage.StorageError as exc:
        log.warning("job %s: files not uploaded (%s)", job_id, exc)


def log_name(job_id: int) -> str:
    """How the job row names the job's log: its URL when there is a bucket."""
    return recorded_name(str(job_log_path(job_id)))
