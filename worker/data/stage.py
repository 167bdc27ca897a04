"""The prepare-data stage: build or reuse the prepared dataset and report what was kept and skipped."""

from __future__ import annotations

import logging
import time
from typing import Any

from worker.config import RunConfig
from worker.data.prepared import PreparedData, load_prepared
from worker.recorder import Recorder
from worker.result import StageResult

logger = logging.getLogger(__name__)


def summarize(prepared: PreparedData, target: str) -> str:
    """One line for the log: what was kept, per split, and each kind of skip."""
    c = prepared.counts
    line = (
        f"kept {c['studies_kept']} studies / {c['images_kept']} images "
        f"(train {c['train_images']}, val {c['val_images']}, test {c['test_images']}); "
        f"skipped: {c['studies_without_target']} reports without {target}, "
        f"{c['rows_missing_file']} rows with a missing image file, {c['images_undecodable']} undecodable images, "
        f"{c.get('rows_unknown_uid', 0) + c.get('rows_without_report', 0)} rows without a report, "
        f"{c['rows_other_projection']} rows of the other view"
    )
    # What only some layouts record (IU-Xray's stray PNGs, MIMIC-CXR's split CSV and view positions).
    extras = {
        "pngs_not_in_csv": "PNGs not in the CSV", "rows_not_in_split_csv": "images not in the split CSV",
        "rows_unknown_view": "images of another view position", "rows_other_view": "rows of other view positions",
        "images_16bit_converted": "16-bit images converted", "images_rgb_converted": "RGB images converted",
        "studies_frontal_only": "frontal-only studies", "studies_lateral_only": "lateral-only studies",
    }  # fmt: skip
    shown = [f"{c[name]} {words}" for name, words in extras.items() if name in c]
    return line + ("; " + ", ".join(shown) if shown else "")


def describe_missing(missing: dict[str, list[str]], shown: int = 10) -> str:
    """'3 studies it names are not in the local copy: test CXR1_1_IM-0001, ...' (the first few per split)."""
    total = sum(len(ids) for ids in missing.values())
    parts = [
        f"{name} {', '.join(ids[:shown])}{f' and {len(ids) - shown} more' if len(ids) > shown else ''}"
        for name, ids in missing.items()
        if ids
    ]
    return f"{total} studies it names are not in the local copy: {'; '.join(parts)}"


def prepare_data(config: RunConfig, recorder: Recorder) -> StageResult:
    """Stage entry point: counts and split sizes in metrics, paths in artifacts."""
    started = time.perf_counter()
    prepared = load_prepared(config)
    recorder.log_metrics({name: float(value) for name, value in prepared.counts.items()}, split="data")
    recorder.progress(epoch=0, step=1, total=1)
    logger.info("prepare-data (%s, %s): %s", config.data.source, prepared.root, summarize(prepared, config.data.target))
    metrics: dict[str, Any] = dict(prepared.counts)
    if config.data.split_file:
        # Named in the result (not only counted) so a reader can tell which published studies were not used.
        metrics["split_file_missing_studies"] = prepared.missing_studies
        if prepared.counts["split_file_missing"]:
            logger.warning("split file %s: %s", config.data.split_file, describe_missing(prepared.missing_studies))
    metrics["elapsed_s"] = round(time.perf_counter() - started, 3)
    return StageResult(stage="prepare-data", metrics=metrics, artifacts=dict(prepared.artifacts))
