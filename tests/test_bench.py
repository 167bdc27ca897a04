"""The benchmarks start, and their CPU modes write the JSON the README and RESULTS.md describe.

Kept tiny (a few seconds): --help of every script, fits.py's CPU skip, and train_step.py on a 1-layer
toy SigLIP (product step through Lightning, and a plain HF+PEFT loop) instead of the real shapes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("data", "data_scale", "reader_scale", "train_step", "fits", "generate", "queue")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_explains_itself(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--out" in done.stdout


def test_a_target_is_evaluated_only_where_its_hardware_ran() -> None:
    from bench._common import check, percentile

    assert check("x", 10.0, 8.0)["passed"] is True
    assert check("x", 10.0, 8.0, higher_is_better=False)["passed"] is False
    assert check("x", 10.0, 8.0)["ratio"] == 1.25
    skipped = check("x", 10.0, 8.0, why_skipped="CPU run")
    assert skipped["passed"] is None and skipped["note"] == "CPU run"
    assert check("x", None, 8.0)["passed"] is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0, 1.0], 100) == 5.0


def test_fits_skips_cleanly_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fits.py would really run")
    from bench import fits

    out = tmp_path / "fits.json"
    assert fits.main(["--out", str(out)]) == {"skipped": True}
    result = json.loads(out.read_text())
    assert result["skipped"] is True and result["mode"] == "cpu"
    assert {"cpu", "cores", "versions"} <= set(result["machine"])


def test_train_step_cpu_mode_times_the_product_and_a_reference_loop(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bench import train_step

    torch.set_num_threads(1)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    tiny = train_step.ModelSpec(
        "tiny-siglip", "siglip", "iu-xray",
        {"text_config": {**tower, "vocab_size": 100, "max_position_embeddings": train_step.TEXT_TOKENS},
         "vision_config": {**tower, "image_size": 32, "patch_size": 8}},
        gpu_batch=4, cpu_batch=4, cpu_layers=1, image_size=32)
    monkeypatch.setitem(train_step.MODELS, tiny.name, tiny)
    monkeypatch.setattr(train_step, "MODELS_DIR", tmp_path / "models")
    out = tmp_path / "train_step.json"

    train_step.main(["--device", "cpu", "--models", "tiny-siglip", "--variants", "product-lora,plain-lora",
                     "--warmup", "1", "--steps", "2", "--out", str(out)])

    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and result["shapes"]["tiny-siglip"]["layers"] == 1
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"product-lora", "plain-lora"}
    for row in rows.values():
        assert "error" not in row, row.get("error")
        assert row["steps_timed"] == 2 and row["step_ms"] > 0 and row["samples_per_s"] > 0
        assert row["peak_alloc_mb"] is None  # no GPU: no GPU memory figures
        assert 0 < row["trainable_params"] < row["total_params"]
    assert rows["product-lora"]["default"] is True
    assert rows["product-lora"]["settings"]["lora_dropout"] == 0.0
    assert rows["plain-lora"]["settings"]["lora_dropout"] == train_step.PLAIN_DROPOUT
    assert result["targets"] and all(t["passed"] is None for t in result["targets"])


def test_faults_checks_the_fencing_columns_of_compare_database_and_disk() -> None:
    from bench.faults import checks_for

    def training(taken_over: bool, redone: int | None, fenced: int | None, best: bool) -> dict:
        return {"taken_over": taken_over, "epochs_redone": redone, "fenced_writes": fenced,
                "best_checkpoint_correct": best}

    clean = {"backend": "b",
             "compare": [{"state": "SUCCEEDED", "report": True, "experiments_per_child": [1],
                          "trainings": [training(False, None, 0, True), training(True, 0, 0, True)]}],
             "database_away": {"state": "SUCCEEDED", "worker_alive": True, "missing_epoch_rows": 0,
                               "attempts": 1, "epochs_redone": 0, "fenced_writes": 0,
                               "best_checkpoint_correct": True},
             "disk_full": {"state": "FAILED", "names_the_path": True, "next_job": "SUCCEEDED",
                           "next_job_fenced_writes": 0, "next_job_best_checkpoint_correct": True}}
    checks = {c["target"]: c for c in checks_for(clean)}
    for name in ("writes from a fenced attempt in a comparison", "epochs redone after kill -9 in a comparison",
                 "comparison trainings with the true best checkpoint",
                 "writes from a fenced attempt around a database outage", "epochs redone around a database outage",
                 "best checkpoint correct after a database outage",
                 "writes from a fenced attempt in the job after a full disk",
                 "best checkpoint correct in the job after a full disk"):
        assert checks[f"b: {name}"]["passed"] is True, name
    assert checks["b: comparison trainings with the true best checkpoint"]["measured"] == 2

    # A fenced write, a redone epoch, a wrong best or a figure that could not be measured fails its check.
    bad = json.loads(json.dumps(clean))
    bad["compare"][0]["trainings"] = [training(False, None, 1, True), training(True, None, 0, False)]
    bad["database_away"].update(attempts=2, epochs_redone=None, best_checkpoint_correct=False)
    bad["disk_full"]["next_job_fenced_writes"] = None
    failed = {c["target"] for c in checks_for(bad) if c["passed"] is False}
    assert {"b: writes from a fenced attempt in a comparison", "b: epochs redone after kill -9 in a comparison",
            "b: comparison trainings with the true best checkpoint", "b: epochs redone around a database outage",
            "b: best checkpoint correct after a database outage",
            "b: writes from a fenced attempt in the job after a full disk"} <= failed

    # Results written before these columns existed still check as before.
    old = {"backend": "b", "compare": [{"state": "SUCCEEDED", "report": True, "experiments_per_child": [1]}],
           "database_away": {"state": "SUCCEEDED", "worker_alive": True, "missing_epoch_rows": 0}}
    assert [c["target"] for c in checks_for(old)] == ["b: comparisons settled after kill -9",
                                                      "b: training through 10 s without the database"]
