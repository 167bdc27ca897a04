"""Settings from the environment (and a `.env` file): where the database, broker and files live.

With nothing set, everything is embedded under `var/`: SQLite for the experiments, and a local Redis the
project starts itself on a unix socket for the broker and results (jobs/broker/localbroker.py), so a laptop needs
no server. Production sets DATABASE_URL (PostgreSQL) and CELERY_BROKER_URL (its Redis).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = PROJECT_ROOT / ".env"
LOCAL_BROKER_SOCKET = "redis.sock"
# A unix socket path must fit sockaddr_un.sun_path (108 bytes on Linux, with its terminating NUL).
MAX_SOCKET_PATH = 100


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore", populate_by_name=True)

    var_dir: Path = Field(PROJECT_ROOT / "var", alias="MEDVL_VAR_DIR", description="Root of data and artifacts.")
    database_url: str | None = Field(None, alias="DATABASE_URL", description="Default: SQLite in var/.")
    celery_broker_url: str | None = Field(
        None, alias="CELERY_BROKER_URL", description="Default: a local Redis on a unix socket in var/broker."
    )
    celery_result_backend: str | None = Field(None, alias="CELERY_RESULT_BACKEND", description="Default: the broker.")
    api_token: SecretStr | None = Field(None, alias="API_TOKEN")
    api_auth_disabled: bool = Field(False, alias="API_AUTH_DISABLED")
    flower_basic_auth: str | None = Field(None, alias="FLOWER_BASIC_AUTH", description="user:password[,...]")
    hf_token: SecretStr | None = Field(None, alias="HF_TOKEN")
    kaggle_username: str | None = Field(None, alias="KAGGLE_USERNAME")
    kaggle_key: SecretStr | None = Field(None, alias="KAGGLE_KEY")

    artifacts_dir: Path | None = Field(None, alias="JOBS_ARTIFACTS_DIR", description="Default: var/artifacts.")
    artifacts_url: str | None = Field(
        None,
        alias="JOBS_ARTIFACTS_URL",
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/]+)*/?$",
        description="s3://bucket/prefix: artifacts and job logs live in that bucket; the local artifacts and logs "
        "folders are each host's mirror of it (jobs/core/storage.py). Default: the local folders alone.",
    )
    s3_endpoint_url: str | None = Field(
        None, alias="JOBS_S3_ENDPOINT_URL", description="An S3-compatible server (MinIO, Ceph); default: AWS."
    )
    data_roots: str = Field(
        "",
        alias="MEDVL_DATA_ROOTS",
        description="Further folders (':'-separated) that jobs may read, e.g. a dataset copy outside var/.",
    )
    logs_dir: Path | None = Field(None, alias="JOBS_LOG_DIR", description="Default: var/logs.")
    broker_dir: Path | None = Field(
        None, alias="JOBS_BROKER_DIR", description="The local Redis's folder (socket, AOF). Default: var/broker."
    )
    heartbeat_s: float = Field(15.0, gt=0, alias="JOBS_HEARTBEAT_S", description="How often a running job beats.")
    stale_after_s: float = Field(
        120.0, gt=0, alias="JOBS_STALE_AFTER_S", description="A RUNNING job silent this long lost its worker."
    )
    publish_patience_s: float = Field(
        1800.0,
        ge=0,
        alias="JOBS_PUBLISH_PATIENCE_S",
        description="How long a finished run keeps trying to upload its files while the artifacts bucket is away.",
    )
    sweep_interval_s: float = Field(
        60.0, gt=0, alias="JOBS_SWEEP_INTERVAL_S", description="How often a worker looks for stale jobs."
    )
    requeue_after_s: float = Field(
        120.0,
        gt=0,
        alias="JOBS_REQUEUE_AFTER_S",
        description="A QUEUED job whose message is in no queue this long after it became runnable is sent again.",
    )
    max_attempts: int = Field(3, ge=1, alias="JOBS_MAX_ATTEMPTS", description="Runs of a job before FAILED.")
    time_limit_grace_s: int = Field(
        120, ge=1, alias="JOBS_TIME_LIMIT_GRACE_S", description="Hard limit = soft limit (max_time_s) + this."
    )

    def resolved_var_dir(self) -> Path:
        return self.var_dir if self.var_dir.is_absolute() else PROJECT_ROOT / self.var_dir

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_var_dir() / 'experiments.db'}"

    @property
    def local_broker_dir(self) -> Path | None:
        """The folder of the project-managed Redis (jobs/broker/localbroker.py), when no CELERY_BROKER_URL
        names another broker."""
        return None if self.celery_broker_url else self.broker_dir or self.resolved_var_dir() / "broker"

    @property
    def broker(self) -> str:
        local = self.local_broker_dir
        return local_broker_url(local) if local else str(self.celery_broker_url)

    @property
    def result_backend(self) -> str:
        return self.celery_result_backend or self.broker

    @property
    def artifacts_root(self) -> Path:
        return self.artifacts_dir or self.resolved_var_dir() / "artifacts"

    @property
    def extra_data_roots(self) -> list[Path]:
        return [Path(part) for part in self.data_roots.split(os.pathsep) if part.strip()]

    @property
    def logs_root(self) -> Path:
        return self.logs_dir or self.resolved_var_dir() / "logs"


def local_broker_socket(directory: Path) -> Path:
    """The unix socket of the local Redis whose folder is `directory`."""
    path = directory / LOCAL_BROKER_SOCKET
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    # A deep var folder: keep the socket in a short per-folder directory under the temp dir instead.
    digest = hashlib.sha1(os.fsencode(directory)).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"medvl-redis-{digest}" / LOCAL_BROKER_SOCKET


def local_broker_url(directory: Path) -> str:
    """Kombu's and Celery's URL for the local Redis's socket (broker and result backend alike)."""
    return f"redis+socket://{local_broker_socket(directory)}"


@lru_cache
def get_settings() -> Settings:
    """The settings of this process (cached; tests that change the environment call reset_settings())."""
    return Settings()


def export_env_file(path: Path = ENV_FILE) -> list[str]:
    """Put the variables of `.env` into this process's environment where the environment does not set them;
    returns their names.

    The settings above read `.env` themselves, but the libraries a stage uses read the environment only
    (huggingface_hub's HF_TOKEN and HF_ENDPOINT, kagglehub's KAGGLE_*, MLflow's MLFLOW_TRACKING_URI), and so do
    the processes a command starts (Celery's pool, uvicorn). Exporting it once at start gives every process of
    this checkout, and everything in it, the same settings file, as docker compose's env_file does."""
    from dotenv import dotenv_values  # pydantic-settings' own .env reader

    if not path.is_file():
        return []
    values = {key: value for key, value in dotenv_values(path).items() if value is not None}
    added = [key for key in values if key not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    return added


def settings_problem() -> str | None:
    """One line naming the first setting that does not validate (and its value), or None."""
    from pydantic import ValidationError

    try:
        get_settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        return f"{name}={error.get('input')!r}: {error['msg']}; fix it in the environment or in .env"
    return None


def reset_settings() -> None:
    get_settings.cache_clear()
