"""The comparison report computed from rows the test writes itself."""

import json

import pytest
from PIL import Image

from worker.report import build_report, compare_methods

LORA = {
    "train_time_s": 100.0, "samples_per_s": 50.0, "peak_gpu_mem_mb": 6000.0, "peak_gpu_reserved_mb": 6500.0,
    "peak_ram_mb": 3000.0, "weight_memory_mb": 800.0, "trainable_params": 1_000_000, "total_params": 200_000_000,
    "best_val_loss": 0.5, "i2t_recall@1": 0.40, "i2t_recall@5": 0.7, "i2t_recall@10": 0.8,
    "t2i_recall@1": 0.35, "t2i_recall@5": 0.65, "t2i_recall@10": 0.75,
}  # fmt: skip
QLORA = {**LORA, "train_time_s": 150.0, "samples_per_s": 40.0, "peak_gpu_mem_mb": 4500.0,
         "weight_memory_mb": 250.0, "best_val_loss": 0.55, "i2t_recall@1": 0.30}  # fmt: skip


def experiments(qlora_metrics=QLORA):
    return [
        {"id": 1, "job_id": 10, "stage": "train", "peft_method": "lora", "status": "SUCCEEDED", "metrics": LORA},
        {"id": 2, "job_id": 11, "stage": "train", "peft_method": "qlora", "status": "SUCCEEDED",
         "metrics": qlora_metrics},
    ]  # fmt: skip


def metric_rows():
    rows = []
    for exp_id, losses in ((1, [0.9, 0.6, 0.5]), (2, [0.95, 0.7, 0.55])):
        for epoch, loss in enumerate(losses):
            rows.append({"experiment_id": exp_id, "split": "val", "epoch": epoch, "step": None,
                         "name": "val_loss", "value": loss})  # fmt: skip
    return rows


def test_every_number_and_ratio_in_the_json(tmp_path):
    result = build_report(experiments(), metric_rows(), tmp_path, compare_job_id=7)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["compare_job_id"] == 7
    table = {row["metric"]: row for row in report["table"]}
    assert set(table) == set(LORA)
    for metric, lora_value in LORA.items():
        assert table[metric]["lora"] == pytest.approx(lora_value)
        assert table[metric]["qlora"] == pytest.approx(QLORA[metric])
        assert table[metric]["ratio"] == pytest.approx(QLORA[metric] / lora_value)
    assert report["curves"]["lora"]["val_loss"] == [[0, 0.9], [1, 0.6], [2, 0.5]]
    assert report["missing"] == []
    assert result.artifacts["html"].endswith("report.html")
    assert Image.open(result.artifacts["loss_curves"]).size[0] > 300


def test_conclusions_follow_the_numbers(tmp_path):
    c = compare_methods(experiments(), metric_rows())
    text = " ".join(c.conclusions)
    assert "QLoRA used 25% less peak GPU memory" in text
    assert "20% slower" in text
    assert "lost accuracy" in text and "-0.100" in text

    worse = compare_methods(experiments({**QLORA, "peak_gpu_mem_mb": 7000.0, "i2t_recall@1": 0.45}), [])
    text = " ".join(worse.conclusions)
    assert "QLoRA used 17% MORE peak GPU memory" in text
    assert "matched or beat LoRA" in text


def test_cpu_run_compares_weight_memory_instead_of_gpu(tmp_path):
    cpu_lora = {**LORA, "peak_gpu_mem_mb": None, "peak_gpu_reserved_mb": None}
    cpu_qlora = {**QLORA, "peak_gpu_mem_mb": None, "peak_gpu_reserved_mb": None}
    rows = experiments(cpu_qlora)
    rows[0]["metrics"] = cpu_lora
    c = compare_methods(rows, [])
    assert any(line.startswith("No GPU in this run: QLoRA's weights took 69% less") for line in c.conclusions)
    assert "peak_gpu_mem_mb" not in {row["metric"] for row in c.table}


def test_a_failed_child_is_reported_missing_and_the_rest_still_renders(tmp_path):
    rows = experiments()[:1]
    result = build_report(rows, metric_rows(), tmp_path, failures={"qlora:train": "job 11 FAILED: out of memory"})
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["missing"] == ["qlora train: job 11 FAILED: out of memory"]
    assert all(row["qlora"] is None and row["ratio"] is None for row in report["table"])
    assert "out of memory" in (tmp_path / "report.html").read_text()
    assert result.metrics["missing"] == 1
