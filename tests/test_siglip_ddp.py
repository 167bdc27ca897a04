"""`--devices 2`: two CPU processes train with Lightning DDP over gloo (QLoRA: a 4-bit base per rank).

Lightning's "ddp" strategy starts the second rank by re-running the launching script, so the run happens
in a subprocess script rather than inside pytest's own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from siglip_fixtures import build_tiny_siglip

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("siglip_fixtures.py")
REPO = Path(__file__).resolve().parents[1]


def test_two_cpu_processes_train_with_ddp(tmp_path):
    model_dir = build_tiny_siglip(tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(SCRIPT.parent)]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), str(model_dir), str(tmp_path / "run"), str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = {p.name: json.loads(p.read_text()) for p in out.glob("rank-*.json")}
    assert set(ranks) == {"rank-0.json", "rank-1.json"}, run.stderr[-3000:]

    lead = ranks["rank-0.json"]
    metrics = lead["result"]["metrics"]
    assert lead["result"]["status"] == "succeeded"
    assert metrics["epochs_run"] == 1
    # Each rank sees half of the 48 training pairs: 3 steps of 8, and the samples count covers both ranks.
    assert lead["progress_events"] == 3
    assert metrics["samples_per_s"] > 0
    # Retrieval ran over the whole val split gathered from both ranks (24 pairs), not one rank's 12.
    assert metrics["i2t_recall@1_strict_chance"] == pytest.approx(1 / 24)
    assert Path(metrics["best_checkpoint"]).is_file()
    # Only rank 0 reports progress and metrics to the recorder.
    assert ranks["rank-1.json"]["progress_events"] == 0 and ranks["rank-1.json"]["metric_rows"] == 0
