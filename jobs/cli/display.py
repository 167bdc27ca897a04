"""Human output of the `jobs` command: aligned rich tables and a progress bar (`--json` bypasses all of it)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobs.core.schemas import ExperimentView, JobState, JobView, MetricView

# Piped output (a file, `grep`, a test) gets wide lines rather than rich's 80-column default, so nothing is cut.
PIPE_WIDTH = 200


def _console() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=PIPE_WIDTH)


STATE_STYLES = {
    JobState.QUEUED: "cyan",
    JobState.RUNNING: "yellow",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
}
def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


def _state(state: JobState) -> str:
    return f"[{STATE_STYLES[state]}]{state.value}[/]"


def _progress_text(job: JobView) -> str:
    progress = job.progress or {}
    if progress.get("percent") is None:
        return "-"
    percent = f"{progress['percent']:.0f}%"
    if progress.get("epoch") is None:  # stages without epochs (evaluate, report) report only completion
        return percent
    return f"{percent} (epoch {progress['epoch']}, step {progress.get('step')}/{progress.get('total')})"


def _method(job: JobView) -> str:
    """The PEFT method of a training job, so a comparison's two branches can be told apart; a job that reads a
    checkpoint has its checkpoint's (jobs/service/submission.py records it in the job's config)."""
    if job.stage in ("prepare-data", "compare", "sweep", "report"):
        return "-"
    return str(((job.config or {}).get("peft") or {}).get("method") or "-")


def job_summary_line(job: JobView) -> str:
    line = f"job {job.id} ({job.stage}): {job.state.value}"
    if job.experiment_ids:
        line += f"; experiment {', '.join(map(str, job.experiment_ids))}"
    return line


def predict_counts(metrics: dict[str, Any]) -> tuple[str, int] | None:
    """A predict run's counts as one line, and how many files could not be read; None for other stages."""
    if "num_failed" not in metrics:
        return None
    failed, total = int(metrics["num_failed"]), int(metrics["num_files"])
    line = f"predicted {int(metrics['num_predicted'])} of {total} files; {failed} could not be read"
    return (line + (" (each one's reason is in predictions.jsonl)" if failed else ""), failed)


def artifact_lines(artifacts: dict[str, str]) -> list[str]:
    """Where a run wrote its files (predictions, checkpoints, the Hugging Face output), one per line."""
    return [f"  {name}: {path}" for name, path in artifacts.items()]


# What `jobs status` shows of a run's latest metrics, in this order; `jobs metrics ID` has every one.
KEY_METRICS = ("train_loss", "val_loss", "i2t_recall@1", "t2i_recall@1", "bleu4", "rougeL", "meteor", "coco_cider",
               "num_predicted", "num_failed")  # fmt: skip


def latest_rows(rows: Iterable[MetricView]) -> list[tuple[str, str]]:
    """One (label, value) per key metric the run recorded: its latest value and the epoch it was recorded at."""
    order = {name: index for index, name in enumerate(KEY_METRICS)}
    shown = sorted((row for row in rows if row.name in order), key=lambda row: (order[row.name], row.split))
    return [(f"latest {row.split} {row.name}", _number(row.value) + _epoch_text(row.epoch)) for row in shown]


def _epoch_text(epoch: int | None) -> str:
    return f" (epoch {epoch})" if epoch is not None else ""


def print_job(job: JobView, latest: Iterable[MetricView] = ()) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("job", str(job.id)),
        ("stage", job.stage),
        (
            "state",
            _state(job.state) + (" (cancel requested)" if job.cancel_requested and not job.state.finished else ""),
        ),
        ("progress", _progress_text(job)),
        ("attempts", str(job.attempts)),
        ("submitted", _when(job.submitted_at)),
        ("started", _when(job.started_at)),
        ("finished", _when(job.finished_at)),
        ("worker", job.worker_host or "-"),
        ("gpu", job.gpu_name or "-"),
        ("params", ", ".join(f"{k}={v}" for k, v in job.params.items()) or "-"),
        ("experiments", ", ".join(map(str, job.experiment_ids)) or "-"),
        ("parent", str(job.parent_id) if job.parent_id else "-"),
    ]
    rows += latest_rows(latest)
    rows += [(f"artifact {name}", path) for name, path in job.artifacts.items()]
    for name, value in rows:
        table.add_row(name, value)
    _console().print(table)
    if job.error:
        _console().print(f"[red]error:[/] {job.error}", markup=True)
    if job.children:
        _console().print("children:")
        print_jobs(job.children)


def print_jobs(jobs: Iterable[JobView]) -> None:
    table = Table("id", "stage", "peft", "state", "progress", "attempts", "submitted", "worker", "error")
    for job in jobs:
        error = (job.error or "").splitlines()[0][:60] if job.error else ""
        table.add_row(
            str(job.id),
            job.stage,
            _method(job),
            _state(job.state),
            _progress_text(job),
            str(job.attempts),
            _when(job.submitted_at),
            job.worker_host or "-",
            error,
        )
    _console().print(table)


def print_experiments(experiments: Iterable[ExperimentView]) -> None:
    from worker.metric_registry import result_columns  # lazily, like every use of worker in jobs

    columns = result_columns()
    table = Table("id", "job", "stage", "peft", "status", *(header for header, _ in columns))
    for experiment in experiments:
        table.add_row(
            str(experiment.id),
            str(experiment.job_id or "-"),
            experiment.stage,
            experiment.peft_method or "-",
            experiment.status,
            *(_number(experiment.metrics.get(name)) for _, name in columns),
        )
    _console().print(table)


def print_metrics(rows: Iterable[MetricView]) -> None:
    rows = list(rows)
    several = len({row.experiment_id for row in rows}) > 1  # a comparison's children: say whose each value is
    table = Table(*(["experiment"] if several else []), "split", "name", "epoch", "step", "value")
    for row in rows:
        first = [str(row.experiment_id)] if several else []
        table.add_row(*first, row.split, row.name, _number(row.epoch), _number(row.step), _number(row.value))
    _console().print(table)


class JobProgress:
    """A progress bar on stderr that follows a job's recorded progress (nothing when disabled)."""

    def __init__(self, enabled: bool) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True, highlight=False),
            transient=True,
            disable=not enabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> JobProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, job: JobView) -> None:
        progress = job.progress or {}
        description = f"job {job.id} {job.state.value}"
        detail = f"epoch {progress['epoch']}" if "epoch" in progress else ""
        total = float(progress.get("total") or 100)
        completed = float(progress.get("step") or 0) if progress.get("total") else 0.0
        if self._task is None:
            self._task = self._progress.add_task(description, total=total, detail=detail)
        self._progress.update(self._task, description=description, total=total, completed=completed, detail=detail)
