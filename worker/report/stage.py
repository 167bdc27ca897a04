"""The report stage: rows in, Markdown + HTML + JSON + charts out."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from worker.report import plots, render
from worker.report.analysis import compare_runs
from worker.result import StageResult

log = logging.getLogger(__name__)


def build_report(
    experiments: Iterable[Mapping[str, Any]],
    metric_rows: Iterable[Mapping[str, Any]],
    out_dir: Path,
    *,
    grid: Mapping[str, list[str]] | None = None,
    kind: str = "compare",
    compare_job_id: int | None = None,
    report_job_id: int | None = None,
    metric: str | None = None,
    mode: str | None = None,
    failures: Iterable[Mapping[str, str]] = (),
    split: str = "",
) -> StageResult:
    """Write report.md, report.html (charts embedded) and report.json under out_dir (see compare_runs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison = compare_runs(
        experiments,
        metric_rows,
        grid=grid,
        kind=kind,
        compare_job_id=compare_job_id,
        report_job_id=report_job_id,
        metric=metric,
        mode=mode,
        failures=failures,
        split=split,
    )
    charts = plots.draw_all(comparison, out_dir)
    paths = {
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
        "json": out_dir / "report.json",
    }
    paths["markdown"].write_text(render.markdown(comparison))
    paths["html"].write_text(render.html(comparison, charts))
    paths["json"].write_text(json.dumps(comparison.to_dict(), indent=2))
    log.info("report written to %s", paths["html"])
    artifacts = {name: str(p) for name, p in {**paths, **charts}.items()}
    metrics = {
        "rows": len(comparison.table),
        "configurations": len(comparison.cells),
        "missing": len(comparison.missing),
    }
    return StageResult(stage="report", metrics=metrics, artifacts=artifacts)
