"""A new user's first hour, driven as a user drives it: the real `jobs` console script on the smoke preset
with a private var folder, then the results database queried with the SQL that README.md and docs/ print.

Two real training runs (LoRA and QLoRA, two epochs each) fill the database once for the module.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from jobs_fixtures import REPO
from PIL import Image

pytestmark = pytest.mark.slow

EPOCHS = 2
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.DOTALL)
DOCUMENTED = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / ".venv/bin/jobs"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    var = tmp_path_factory.mktemp("var")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_URL", "MEDVL_", "JOBS_"))}
    env |= {"MEDVL_VAR_DIR": str(var), "OMP_NUM_THREADS": "1"}
    runs = {}
    for method in ("lora", "qlora"):
        done = _cli(env, "run", "train", "--preset", "smoke", "--peft", method, "--epochs", str(EPOCHS), "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        runs[method] = json.loads(done.stdout)
    return SimpleNamespace(env=env, var=var, db=var / "experiments.db", runs=runs)


def _documented_queries() -> list[tuple[str, str]]:
    return [(path.name, sql) for path in DOCUMENTED for sql in SQL_BLOCK.findall(path.read_text())]


def test_the_documentation_has_queries_and_the_readme_some_of_them():
    queries = _documented_queries()
    assert len(queries) >= 5
    assert any(name == "README.md" for name, _ in queries)


def test_every_documented_query_runs_on_a_database_a_real_smoke_run_filled(smoke):
    with sqlite3.connect(smoke.db) as connection:
        for name, sql in _documented_queries():
            rows = connection.execute(sql).fetchall()
            assert rows, f"{name}: no rows from\n{sql}"


def test_the_best_run_query_and_jobs_results_agree_on_the_best_train_run(smoke):
    with sqlite3.connect(smoke.db) as connection:
        best = connection.execute(
            "SELECT job_id, best_val_loss, loss_unit, peak_gpu_mem_mb FROM training_runs "
            "WHERE stage = 'train' AND status = 'succeeded' ORDER BY best_val_loss LIMIT 1"
        ).fetchone()
        losses = [row[0] for row in connection.execute("SELECT best_val_loss FROM training_runs")]
    assert best[1] == min(losses) and best[2] == "per image-text pair"
    assert best[3] is None  # no GPU here: documented as empty on a CPU
    shown = _cli(smoke.env, "results", "--stage", "train", "--sort", "best_val_loss", "--limit", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert row["job_id"] == best[0]


def test_jobs_metrics_takes_a_job_id_and_filters_by_name(smoke):
    job_id = smoke.runs["qlora"]["job_id"]
    shown = _cli(smoke.env, "metrics", str(job_id), "--name", "val_loss", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert [row["epoch"] for row in rows] == list(range(EPOCHS)) and {row["name"] for row in rows} == {"val_loss"}
    (experiment_id,) = {row["experiment_id"] for row in rows}
    by_experiment = _cli(smoke.env, "metrics", str(experiment_id), "--experiment", "--name", "val_loss", "--json")
    assert json.loads(by_experiment.stdout) == rows
    only_val = json.loads(_cli(smoke.env, "metrics", str(job_id), "--split", "val", "--json").stdout)
    assert {row["split"] for row in only_val} == {"val"} and len(only_val) > len(rows)


def test_jobs_status_prints_the_latest_metrics(smoke):
    shown = _cli(smoke.env, "status", str(smoke.runs["lora"]["job_id"]))
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    for name in ("train train_loss", "val val_loss", "val i2t_recall@1"):
        assert any(re.fullmatch(rf"latest {name} +[0-9.]+ \(epoch {EPOCHS - 1}\)", line) for line in lines), lines


def test_the_log_has_one_line_per_epoch_and_each_warning_once(smoke):
    job_id = smoke.runs["lora"]["job_id"]
    log = _cli(smoke.env, "logs", str(job_id)).stdout
    line = r"epoch (\d+) \((\d+) of (\d+)\): train_loss [0-9.]+, val_loss [0-9.]+, i2t_recall@1 [0-9.]+"
    epochs = re.findall(line, log)
    assert epochs == [(str(n), str(n + 1), str(EPOCHS)) for n in range(EPOCHS)], log
    warnings = [line for line in log.splitlines() if "Warning:" in line]
    assert len(warnings) == len(set(warnings)), "\n".join(warnings)
    # Lightning logs this at every checkpoint; once to its console line and once to the file's is all.
    assert log.count("`weights_only` was not set") <= 2, log


def test_predict_counts_unreadable_files_and_exits_non_zero(smoke, tmp_path):
    checkpoint = smoke.runs["lora"]["artifacts"]["best_checkpoint"]
    good = tmp_path / "good.png"
    Image.fromarray(np.full((64, 64), 128, dtype=np.uint8)).save(good)
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    images = [str(good), str(tmp_path / "notes.png"), str(tmp_path / "broken.png")]
    env = smoke.env | {"MEDVL_DATA_ROOTS": str(tmp_path)}

    done = _cli(env, "run", "predict", "--checkpoint", checkpoint, "--images", *images)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "predicted 1 of 3 files; 2 could not be read" in done.stderr

    allowed = _cli(env, "run", "predict", "--checkpoint", checkpoint, "--images", *images, "--allow-unreadable")
    assert allowed.returncode == 0, allowed.stderr[-2000:]


def test_a_checkpoint_that_does_not_exist_is_refused_before_a_job_exists(smoke, tmp_path):
    before = json.loads(_cli(smoke.env, "list", "--json").stdout)
    missing = smoke.var / "runs" / "no-such.ckpt"
    done = _cli(smoke.env, "run", "evaluate", "--checkpoint", str(missing))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: params.checkpoint: {str(missing)!r} does not exist; "
                                                "check the path (a relative one is taken from where you run `jobs`)"]
    assert json.loads(_cli(smoke.env, "list", "--json").stdout) == before
