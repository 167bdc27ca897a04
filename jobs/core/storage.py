"""Where artifacts live: the local artifacts folder (the default), or an S3-compatible bucket.

With `JOBS_ARTIFACTS_URL=s3://bucket/prefix`, every host keeps a mirror of the bucket in its own artifacts and
logs folders: `<artifacts folder>/X` is `s3://bucket/prefix/artifacts/X`, `<logs folder>/X` is
`s3://bucket/prefix/logs/X`. Stages read and write local files only (Lightning never sees a remote path: its
ModelCheckpoint on a remote filesystem removed the top-k files of the run it resumed, lightning#21813). The
worker uploads a run's folder after each recorded epoch and at the end, and names a file in the database only
once it is uploaded; an S3 object appears whole or not at all (a multipart upload only once complete), so a
reader never sees half a file. Reading an s3:// name downloads it into the mirror, once per content: an index
beside the mirror keeps each file's ETag, size and mtime, so a second read of an unchanged object, or the read
of a file this host uploaded, downloads nothing, and a file this host changed since is never overwritten by
the bucket's older copy.

A prepared dataset's image caches go under `s3://bucket/prefix/prepared/`, outside the mirror: a host copies
them into its own data folder instead of decoding the images again (jobs/execution/artifacts.py,
`PreparedInBucket`; worker/data/shared.py).

Credentials and region come from the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, AWS_PROFILE); `JOBS_S3_ENDPOINT_URL` names an S3-compatible server (MinIO, Ceph, R2).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from jobs.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

SCHEME = "s3://"
INDEX_DIR = ".bucket-index"
# How long an upload or download keeps trying while the server is away before the job gives up.
PATIENCE_S = 60.0
T = TypeVar("T")


class StorageError(RuntimeError):
    """The bucket cannot be used; one line naming the setting to fix."""


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


@dataclass(frozen=True)
class Bucket:
    url: str  # s3://bucket/prefix, no trailing slash
    artifacts: Path
    logs: Path
    endpoint: str | None = None

    # --- names -------------------------------------------------------------------------------------------------

    def url_of(self, path: str | Path) -> str | None:
        """The bucket's name for a file of the mirror; None for a file outside it."""
        target = Path(path).resolve()
        for area, root in (("artifacts", self.artifacts), ("logs", self.logs)):
            if target.is_relative_to(root.resolve()):
                relative = target.relative_to(root.resolve()).as_posix()
                return f"{self.url}/{area}" + (f"/{relative}" if relative != "." else "")
        return None

    @property
    def name(self) -> str:
        """The bucket's own name (the first part of JOBS_ARTIFACTS_URL)."""
        return _key(self.url).split("/")[0]

    def contains(self, url: str) -> bool:
        return url == self.url or url.startswith(self.url + "/")

    def local_of(self, url: str) -> Path:
        """The mirror's file for a bucket name (StorageError for a name outside JOBS_ARTIFACTS_URL)."""
        for area, root in (("artifacts", self.artifacts), ("logs", self.logs)):
            base = f"{self.url}/{area}"
            if url == base or url.startswith(base + "/"):
                relative = url.removeprefix(base).strip("/")
                parts = Path(relative).parts
                if ".." in parts:
                    break
                return root / relative if relative else root
        raise StorageError(
            f"{url} is not under JOBS_ARTIFACTS_URL={self.url}/artifacts or /logs; name an artifact this system wrote"
        )

    # --- transfers ---------------------------------------------------------------------------------------------

    def push(
        self, path: str | Path, patience_s: float = PATIENCE_S, *, guard: Callable[[], None] | None = None
    ) -> int:
        """Upload the file, or the folder's files, that changed since they were last uploaded; returns how many.
        `guard` runs right before each upload and stops it by raising (a run that lost its job uploads nothing)."""
        local = Path(path)
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        sent = 0
        for file in files:
            url = self.url_of(file)
            if url is None or _being_written(file):
                continue
            try:
                stat = file.stat()
            except FileNotFoundError:  # replaced or removed since the listing (a checkpoint rotation)
                continue
            entry = self._entry(url)
            if entry and (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
                continue
            if guard is not None:
                guard()
            try:
                self._call(lambda: self.fs().put_file(str(file), _key(url)), f"upload of {file}", patience_s)  # noqa: B023
            except FileNotFoundError:
                if file.exists():
                    raise
                continue
            info = self._call(lambda: self.fs().info(_key(url)), f"upload of {file}", patience_s)  # noqa: B023
            self._remember(url, info, stat)
            sent += 1
        return sent

    def fetch(
        self,
        url: str,
        *,
        missing_ok: bool = False,
        patience_s: float = PATIENCE_S,
        wanted: Callable[[str], bool] | None = None,
    ) -> Path:
        """The mirror's copy of the object, or of every object under the folder `url` (those `wanted` accepts by
        URL), downloaded if changed."""
        local = self.local_of(url)
        objects = self._call(lambda: self._listing(url), f"listing of {url}", patience_s)
        if not objects:
            if missing_ok:
                return local
            raise FileNotFoundError(f"{url} is not in the bucket (JOBS_ARTIFACTS_URL={self.url})")
        for key, info in objects.items():
            object_url = SCHEME + key
            if wanted is not None and not wanted(object_url):
                continue
            target = self.local_of(object_url)
            entry = self._entry(object_url)
            # Unchanged in the bucket since this host last uploaded or downloaded it: the local copy is that
            # content, or newer (a log this host is still writing), and is kept.
            if entry and entry["etag"] == info.get("ETag") and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
            self._call(lambda: self.fs().get_file(key, str(partial)), f"download of {object_url}", patience_s)  # noqa: B023
            partial.replace(target)  # a reader of the mirror never sees half a download either
            self._remember(object_url, info, target.stat())
        return local

    def download(self, url: str, target: Path, patience_s: float = PATIENCE_S) -> bool:
        """Copy one object to the file `target`, whole or not at all; False when the bucket has no such object.
        For objects outside the mirror (``prepared/``): no index, the caller decides where the copy goes."""
        try:
            self._call(lambda: self.fs().info(_key(url), refresh=True), f"listing of {url}", patience_s)
        except FileNotFoundError:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            self._call(lambda: self.fs().get_file(_key(url), str(partial)), f"download of {url}", patience_s)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return True

    def upload(self, path: Path, url: str, patience_s: float = PATIENCE_S) -> None:
        """Store the file as `url` (an S3 object appears whole or not at all)."""
        self._call(lambda: self.fs().put_file(str(path), _key(url)), f"upload of {path}", patience_s)

    def prune(
        self, folder: Path, suffix: str, patience_s: float = PATIENCE_S, *, guard: Callable[[], None] | None = None
    ) -> list[str]:
        """Delete the folder's bucket objects ending in `suffix` that its local copy no longer has (checkpoints
        a run superseded); returns their URLs. Only for a folder whose local copy is the whole truth for them."""
        url = self.url_of(folder)
        if url is None:
            return []
        objects = self._call(lambda: self._listing(url), f"listing of {url}", patience_s)
        gone = [SCHEME + key for key in objects if key.endswith(suffix) and not self.local_of(SCHEME + key).exists()]
        for object_url in gone:
            if guard is not None:
                guard()
            self._call(lambda: self.fs().rm_file(_key(object_url)), f"removal of {object_url}", patience_s)  # noqa: B023
            self._index_file(object_url).unlink(missing_ok=True)
        return gone

    def check(self) -> None:
        """StorageError (one line naming the setting) unless the bucket exists and these credentials may list it."""
        self._call(lambda: self.fs().ls(self.name, refresh=True), "a listing", patience_s=0)

    def create(self) -> None:
        """Make the bucket when it does not exist yet (an S3-compatible server of one's own)."""

        def make() -> None:
            with contextlib.suppress(FileExistsError):
                self.fs().mkdir(self.name)

        self._call(make, f"creation of bucket {self.name!r}", patience_s=PATIENCE_S)

    def publish(self, value: Any, patience_s: float = PATIENCE_S, *, guard: Callable[[], None] | None = None) -> Any:
        """Upload every mirror file or folder `value` names (a path, or a dict or list of them), then return
        `value` naming them by URL: what a row may record once the upload is done."""
        for path in set(_mirror_paths(value, self)):
            self.push(path, patience_s, guard=guard)
        return _by_url(value, self)

    # --- internals ---------------------------------------------------------------------------------------------

    def fs(self) -> Any:
        return _filesystem(self.endpoint, os.getpid())

    def _listing(self, url: str) -> dict[str, dict[str, Any]]:
        fs = self.fs()
        key = _key(url)
        try:
            info = fs.info(key, refresh=True)
        except FileNotFoundError:
            return {}
        if info.get("type") == "file":
            return {key: info}
        return {k: v for k, v in fs.find(key, detail=True, refresh=True).items() if v.get("type") == "file"}

    def _index_file(self, url: str) -> Path:
        return self.artifacts / INDEX_DIR / f"{hashlib.sha1(url.encode()).hexdigest()}.json"

    def _entry(self, url: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._index_file(url).read_text())
        except (OSError, ValueError):
            return None

    def _remember(self, url: str, info: dict[str, Any], stat: os.stat_result) -> None:
        index = self._index_file(url)
        index.parent.mkdir(parents=True, exist_ok=True)
        entry = {"url": url, "etag": info.get("ETag"), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        partial = index.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entry))
        partial.replace(index)

    def _call(self, action: Callable[[], T], what: str, patience_s: float) -> T:
        """`action`, retried while the server does not answer (up to patience_s); its failure as StorageError."""
        deadline = time.monotonic() + patience_s
        delay = 0.5
        while True:
            try:
                return action()
            except FileNotFoundError as exc:
                if _missing_bucket(exc):
                    raise StorageError(self._explain(what, exc)) from None
                raise
            except _credential_errors() as exc:
                raise StorageError(self._explain(what, exc)) from None
            except _transient_errors() as exc:  # no answer, a dropped connection, a 5xx
                if time.monotonic() + delay > deadline:
                    raise StorageError(self._explain(what, exc)) from None
                log.warning("%s: %s; trying again in %.1fs", what, _first_line(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _explain(self, what: str, exc: BaseException) -> str:
        at = f" at JOBS_S3_ENDPOINT_URL={self.endpoint}" if self.endpoint else ""
        where = f"JOBS_ARTIFACTS_URL={self.url}{at}"
        if isinstance(exc, FileNotFoundError):
            return f"{where}: bucket {self.name!r} does not exist ({what}); create it or fix JOBS_ARTIFACTS_URL"
        if isinstance(exc, _credential_errors()):
            return (
                f"{where}: access denied ({what}: {_first_line(exc)}); fix AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for this bucket"
            )
        return (
            f"{where}: the storage server did not answer ({what}: {_first_line(exc)}); check JOBS_S3_ENDPOINT_URL "
            "and that the server is up"
        )


@lru_cache(maxsize=1)
def _credential_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    return (PermissionError, NoCredentialsError, PartialCredentialsError)


@lru_cache(maxsize=1)
def _transient_errors() -> tuple[type[BaseException], ...]:
    import aiohttp
    from botocore.exceptions import BotoCoreError

    return (OSError, BotoCoreError, aiohttp.ClientError)


def _key(url: str) -> str:
    return url.removeprefix(SCHEME)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _missing_bucket(exc: FileNotFoundError) -> bool:
    return "bucket does not exist" in str(exc).lower() or "nosuchbucket" in str(exc).lower()


def _being_written(path: Path) -> bool:
    """A temporary file of an atomic write (worker/training/atomic_io.py, fetch below): never uploaded."""
    return path.name.startswith(".") and (path.name.endswith(".tmp") or ".partial-" in path.name)


@lru_cache(maxsize=4)
def _filesystem(endpoint: str | None, pid: int) -> Any:
    """One s3fs filesystem per endpoint and process (a forked child gets its own event loop and connections)."""
    import s3fs

    client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
    return s3fs.S3FileSystem(
        skip_instance_cache=True,
        client_kwargs=client_kwargs,
        # A server that is away: fail a try within seconds, and let Bucket._call decide how long to keep trying.
        config_kwargs={"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2, "mode": "standard"}},
    )


def bucket(settings: Settings | None = None) -> Bucket | None:
    """The configured bucket, or None for the local default."""
    settings = settings or get_settings()
    url = settings.artifacts_url
    if not url:
        return None
    return Bucket(url.rstrip("/"), settings.artifacts_root, settings.logs_root, settings.s3_endpoint_url)


def require_bucket(value: str) -> Bucket:
    """The bucket for an s3:// name (StorageError when JOBS_ARTIFACTS_URL is not set or is another bucket)."""
    store = bucket()
    if store is None:
        raise StorageError(f"{value} is an s3:// name but JOBS_ARTIFACTS_URL is not set; set it to the bucket")
    if not store.contains(value):
        raise StorageError(f"{value} is outside JOBS_ARTIFACTS_URL={store.url}; only that bucket/prefix is read")
    return store


def local_copy(value: str, *, missing_ok: bool = False) -> Path:
    """The local file for an artifact name: itself, or the mirror's copy of an s3:// object (downloaded)."""
    if not is_url(value):
        return Path(value)
    return require_bucket(value).fetch(value, missing_ok=missing_ok)


def _by_url(value: Any, store: Bucket) -> Any:
    """`value` (a path, or a dict or list of them) with every mirror path replaced by its bucket name."""
    if isinstance(value, dict):
        return {key: _by_url(item, store) for key, item in value.items()}
    if isinstance(value, list):
        return [_by_url(item, store) for item in value]
    if isinstance(value, str) and value.startswith("/") and not is_url(value):
        return store.url_of(value) or value
    return value


def _mirror_paths(value: Any, store: Bucket) -> Iterator[Path]:
    """The existing mirror files and folders that `value` (a path, a dict or a list of them) names."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _mirror_paths(item, store)
    elif isinstance(value, list):
        for item in value:
            yield from _mirror_paths(item, store)
    elif isinstance(value, str) and value.startswith("/") and store.url_of(value) and Path(value).exists():
        yield Path(value)
