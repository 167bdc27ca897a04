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


# Why rows and studies were left out, in the order a reader and the selection check them (a manifest counts its
# images: images_*); a layout's own reasons (counted under rows_* / studies_*_ names) follow these.
_DROP_ORDER = (
    "studies_without_target", "rows_unknown_uid", "rows_missing_file", "rows_without_target",
    "images_unknown_view", "images_missing_file", "images_without_target", "images_undecodable",
    "rows_other_projection", "rows_other_view", "rows_beyond_one_per_study",
    "studies_not_in_official_split", "studies_not_in_split_file",
)  # fmt: skip
_NOT_DROPS = {
    "studies_kept", "studies_frontal_only", "studies_lateral_only", "studies_in_manifest_split",
    "studies_without_patient",
}  # fmt: skip


def summarize(prepared: PreparedData, target: str) -> str:
    """One line for the log: what was kept, per split, and each kind of skip with its count (none left out)."""
    c = prepared.counts
    others = sorted(
        name for name in c
        if name.startswith(("rows_", "studies_")) and name not in _DROP_ORDER and name not in _NOT_DROPS
        and not name.endswith(("_images", "_studies"))
    )  # fmt: skip
    drops = [f"{c[name]} {name.replace('_', ' ')}" for name in (*_DROP_ORDER, *others) if c.get(name)]
    line = (
        f"kept {c['studies_kept']} studies / {c['images_kept']} images "
        f"(train {c['train_images']}, val {c['val_images']}, test {c['test_images']}); "
        f"target {target}; dropped: {', '.join(drops) or 'nothing'}"
    )
    converted = [f"{c[key]} {label}" for key, label in (("images_16bit_converted", "16-bit"),
                 ("images_rgb_converted", "RGB")) if c.get(key)]  # fmt: skip
    if converted:
        line += f"; converted {' and '.join(converted)} images to 8-bit gray"
    if c.get("pngs_not_in_csv"):
        line += f"; {c['pngs_not_in_csv']} image files the CSV does not name"
    return line


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
