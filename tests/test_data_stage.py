"""The prepare-data stage: counts, split sizes and paths in a JSON-ready result, and a log summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from worker.config import RunConfig
from worker.data import PreparedData
from worker.data.stage import prepare_data
from worker.recorder import MemoryRecorder


def test_stage_result_holds_counts_sizes_and_paths(
    smoke_config: RunConfig, smoke_prepared: PreparedData, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = MemoryRecorder()
    with caplog.at_level(logging.INFO, logger="worker.data.stage"):
        result = prepare_data(smoke_config, recorder)
    assert result.stage == "prepare-data" and result.status == "succeeded"
    payload = json.loads(json.dumps(result.to_dict()))
    metrics = payload["metrics"]
    expected = smoke_prepared.planted.expected_counts("Frontal", "impression")
    assert {k: metrics[k] for k in expected} == expected
    assert metrics["train_images"] + metrics["val_images"] + metrics["test_images"] == metrics["images_kept"]
    assert metrics["train_studies"] > metrics["test_studies"] > metrics["val_studies"] > 0
    for name in ("dataset_root", "split_manifest", "cache_train", "cache_val", "cache_test", "siglip_model"):
        assert Path(payload["artifacts"][name]).exists(), name
    assert recorder.series("studies_kept", split="data") == [float(metrics["studies_kept"])]
    summary = " ".join(r.getMessage() for r in caplog.records)
    assert f"kept {metrics['studies_kept']} studies" in summary
    # Every drop reason with a count, and none without one.
    for name in ("images_undecodable", "rows_missing_file", "rows_other_projection", "studies_without_target"):
        assert metrics[name] > 0 and f"{metrics[name]} {name.replace('_', ' ')}" in summary, name
    assert "rows other view" not in summary  # IU-Xray: none (no view positions)
