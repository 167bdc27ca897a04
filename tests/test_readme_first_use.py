"""The README's first use, typed as a newcomer types it: its shell blocks in a real interactive bash after
the documented activation, from a fresh folder, then its SQL on the database that run filled.

The only changes to what the README says: Flower listens on a free port (5555 may be taken on a shared
machine), and the long comparison block is left out (the demo's own tests cover it).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess

import pytest
from jobs_fixtures import REPO

pytestmark = pytest.mark.slow

README = (REPO / "README.md").read_text()
FIRST_USE = README.split("## First use", 1)[1].split("\n## ", 1)[0]
SHELL = re.findall(r"```\n(.*?)```", FIRST_USE, re.DOTALL)
SQL = re.findall(r"```sql\n(.*?)```", FIRST_USE, re.DOTALL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_first_use_trains_shows_the_task_in_flower_and_answers_which_run_was_best(tmp_path):
    start, train = (block for block in SHELL if "jobs worker" in block or "jobs submit train" in block)
    port = _free_port()
    script = "\n".join([
        "set -m",
        f"source {REPO / '.venv/bin/activate'}",
        start.replace("jobs flower ", f"jobs flower --port {port} "),
        "sleep 10",  # the worker and Flower connect before the task is sent
        train,
        "echo '--- flower'",
        f'curl -s -u "$FLOWER_BASIC_AUTH" http://127.0.0.1:{port}/api/tasks; echo',
        "echo '--- builtin'; jobs",
        "kill %1 %2; sleep 3; kill -9 %1 %2 2>/dev/null; wait",
        "jobs broker stop",
    ])  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_URL", "MEDVL_", "JOBS_"))}
    env |= {"HOME": str(tmp_path), "MEDVL_VAR_DIR": str(tmp_path / "var"), "OMP_NUM_THREADS": "1"}
    env.pop("CELERY_BROKER_URL", None)
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(["bash", "-ic", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout

    assert "job 1 (train): SUCCEEDED" in out, out[-3000:] + done.stderr[-3000:]
    assert re.search(r"epoch 19 \(20 of 20\): train_loss", out), out[-3000:]
    tasks = json.loads(out.split("--- flower\n", 1)[1].split("\n", 1)[0])
    assert [(t["name"], t["args"], t["state"]) for t in tasks.values()] == [("train", "job 1, train, qlora", "SUCCESS")]
    listed = out.split("--- builtin\n", 1)[1]
    assert "Running" in listed and "jobs worker" in listed and "jobs flower" in listed
    with sqlite3.connect(tmp_path / "var" / "experiments.db") as connection:
        (best,) = connection.execute(SQL[0]).fetchall()
    assert best[1:3] == (1, "qlora") and best[4] == "per image-text pair"
