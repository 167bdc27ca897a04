"""The report stage: rows in, Markdown + HTML + JSON + charts out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from worker.report import plots, render
from worker.report.compare import compare_methods
from worker.result import StageResult

log = logging.getLogger(__name__)


def build_report(
    experiments: Iterable[Mapping[str, Any]],
    metric_rows: Iterable[Mapping[str, Any]],
    out_dir: Path,
    *,
    compare_job_id: int | None = None,
    expected_stages: Iterable[str] = ("train",),
    failures: Mapping[str, str] | None = None,
) -> StageResult:
    """Write report.md, report.html (charts embedded) and report.json under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison = compare_methods(
        experiments, metric_rows, compare_job_id=compare_job_id, expected_stages=expected_stages, failures=failures
    )
    title = "LoRA vs QLoRA" + (f" — comparison job {compare_job_id}" if compare_job_id else "")
    charts = plots.draw_all(comparison, out_dir)
    paths = {
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
        "json": out_dir / "report.json",
    }
    paths["markdown"].write_text(render.markdown(comparison, title))
    paths["html"].write_text(render.html(comparison, title, charts))
    paths["json"].write_text(json.dumps(comparison.to_dict(), indent=2))
    log.info("report written to %s", paths["html"])
    artifacts = {name: str(p) for name, p in {**paths, **charts}.items()}
    metrics = {"rows": len(comparison.table), "missing": len(comparison.missing)}
    return StageResult(stage="report", metrics=metrics, artifacts=artifacts)
