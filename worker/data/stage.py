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


# Each layout's reasons for skipping a row or an image (worker.data.readers) and the view selection's, in the
# order the log lists them; a layout reports the ones it has.
SKIP_WORDS = (
    ("rows_unknown_uid", "rows without a report"),
    ("rows_bad_path", "rows whose path names no study"),
    ("rows_unknown_projection", "rows without a projection"),
    ("rows_without_study_id", "manifest rows without a study id"),
    ("rows_without_image", "manifest rows without an image"),
    ("images_unknown_view", "images of an unknown view"),
    ("rows_missing_file", "rows with a missing image file"),
    ("images_missing_file", "images with a missing file"),
    ("rows_without_target", "rows without the target section"),
    ("images_without_target", "images without the target section"),
    ("images_undecodable", "undecodable images"),
    ("rows_other_projection", "rows of the other view"),
    ("rows_other_view", "rows of other view positions"),
    ("rows_beyond_one_per_study", "rows beyond one per study"),
    ("pngs_not_in_csv", "PNGs not in the CSV"),
    ("studies_not_in_official_split", "studies in no split of the dataset's own"),
)


def summarize(prepared: PreparedData, target: str) -> str:
    """One line for the log: what was kept, per split, and each kind of skip."""
    c = prepared.counts
    skips = ", ".join(f"{c[name]} {words}" for name, words in SKIP_WORDS if name in c)
    return (
        f"kept {c['studies_kept']} studies / {c['images_kept']} images "
        f"(train {c['train_images']}, val {c['val_images']}, test {c['test_images']}); "
        f"skipped: {c.get('studies_without_target', 0)} reports without {target}, {skips}; "
        f"converted {c.get('images_16bit_converted', 0)} 16-bit and {c.get('images_rgb_converted', 0)} RGB images; "
        f"{c.get('studies_frontal_only', 0)} frontal-only and {c.get('studies_lateral_only', 0)} lateral-only studies"
    )


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
