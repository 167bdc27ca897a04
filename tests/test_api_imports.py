"""The API process stays light: no torch, no ML stages, up in about a second, and closed without a token.

Each check runs in a fresh interpreter, because this test process has long since imported torch elsewhere.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "lightning", "transformers", "peft", "bitsandbytes")
# The plain-data modules of worker that validation needs (the config schema, the file and model rule, the
# torch-free reader of a checkpoint's kind).
TORCH_FREE_WORKER_MODULES = {"worker.config", "worker.locations", "worker.checkpoint_info", "worker.recorder"}


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "MEDVL_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'experiments.db'}",
        "JOBS_BROKER_DIR": str(tmp_path / "broker"),
        "API_TOKEN": "",  # set empty, not unset: a developer's .env must not change what these tests see
        "API_AUTH_DISABLED": "0",
    }
    env.update(extra)
    return env


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_importing_the_api_loads_no_torch(tmp_path: Path) -> None:
    result = _python(
        f"import sys, api.app; print(sorted(m for m in {HEAVY_MODULES} if m in sys.modules))", _env(tmp_path)
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_serving_a_submit_loads_no_torch_and_no_ml_stage(tmp_path: Path) -> None:
    # A whole request cycle: building the app, validating a config, recording and enqueueing a job.
    code = f"""
import sys
from fastapi.testclient import TestClient
import api.app
client = TestClient(api.app.app)
response = client.post("/jobs", json={{"stage": "train", "preset": "smoke", "peft": "qlora"}})
assert response.status_code == 202, response.text
assert client.get("/healthz").status_code == 200
stages = sorted(m for m in sys.modules if m.startswith("worker.") and m not in {TORCH_FREE_WORKER_MODULES})
print(sorted(m for m in {HEAVY_MODULES} if m in sys.modules), stages)
"""
    result = _python(code, _env(tmp_path, API_AUTH_DISABLED="1"))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] []"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_uvicorn_serves_healthz_within_seconds(tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1", "--port", str(port)]
    started = time.monotonic()
    server = subprocess.Popen(command, cwd=REPO, env=_env(tmp_path, API_TOKEN="t0ken"), stderr=subprocess.PIPE)
    try:
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else "uvicorn exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() - started < 30, "the API did not answer within 30 s"
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=10)
    # About a second on an idle machine; the bound leaves room for a loaded CI box.
    elapsed = time.monotonic() - started
    print(f"uvicorn api.app:app answered /healthz after {elapsed:.2f} s")
    assert elapsed < 15


def test_uvicorn_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(_free_port())]
    result = subprocess.run(command, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=60)

    assert result.returncode != 0
    assert "set API_TOKEN" in result.stderr
    assert "API_AUTH_DISABLED=1" in result.stderr
