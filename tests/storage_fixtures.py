"""A real S3-compatible server for the artifacts-bucket tests: moto's standalone server on 127.0.0.1.

It runs as a subprocess, not a thread of the test process, so a test can stop it (SIGSTOP) as a fault, and
its request handling never shares an interpreter with pytest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jobs_fixtures import REPO

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def new_bucket(self) -> str:
        """A fresh bucket's name (one per test: nothing one test uploads is seen by another)."""
        import boto3

        name = f"medvl-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=self.endpoint, **_client_credentials()).create_bucket(Bucket=name)
        return name

    def variables(self, bucket: str) -> dict[str, str]:
        """The settings that put a job system's artifacts in `bucket` on this server."""
        return {"JOBS_ARTIFACTS_URL": f"s3://{bucket}/medvl", "JOBS_S3_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The server frozen (it accepts connections but answers nothing), then back with its data."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


def _client_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_s3_server(log_path: Path) -> S3Server:
    port = _free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(REPO / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return S3Server(f"http://127.0.0.1:{port}", process)
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"moto_server did not listen on port {port} within 60 s")


def stop_s3_server(server: S3Server) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGCONT)
        os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)


class OutageProxy:
    """A TCP proxy in front of the S3 server that can go down (connections refused, open ones cut) and come
    back, the server and its objects untouched: a bucket that is away, as a network outage makes it."""

    def __init__(self, target: str):
        self.target_port = int(target.rsplit(":", 1)[1])
        self.port = _free_port()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    @contextlib.contextmanager
    def away(self) -> Iterator[None]:
        self.down()
        try:
            yield
        finally:
            self.up()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: the proxy is down
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One server per test module (registered in conftest.py: a test names it as an argument)."""
    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    stop_s3_server(server)
