"""The commands about jobs: submit, run, status, list, logs, cancel, publish, results, report, metrics.

Starts without torch: stages are imported only when `jobs run` runs one (or a worker's child does).
"""

# No `from __future__ import annotations`: Typer reads each option from the evaluated annotation.
import contextlib
import json
import sys
import time
from typing import Annotated

import typer

from db.models import MAX_ROW_ID
from jobs import service
from jobs.cli import display
from jobs.cli.app import EXIT_FAILED, JobIdArg, JsonOpt, StageArg, command, die
from jobs.cli.options import STAGE_COMMAND_SETTINGS, StageOptions, with_stage_options
from jobs.cli.watch import JobWatch
from jobs.core import storage
from jobs.core.schemas import JobState, JobView, SubmitRequest
from jobs.core.settings import get_settings
from jobs.core.stages import ORCHESTRATED_STAGES, Stage
from jobs.service.queries import SORTABLE

AllowUnreadableOpt = Annotated[
    bool, typer.Option("--allow-unreadable", help="predict: exit 0 even when some files could not be read.")
]


@command(context_settings=STAGE_COMMAND_SETTINGS)
@with_stage_options
def submit(
    stage: StageArg,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress; exit non-zero unless it succeeds.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", help="Submitting the same key again returns the first job.")
    ] = None,
    gpu_class: Annotated[
        str | None,
        typer.Option("--gpu-class", help="Run GPU stages on workers of queue gpu.<class> (e.g. a100)."),
    ] = None,
    allow_unreadable: AllowUnreadableOpt = False,
    as_json: JsonOpt = False,
    *,
    options: StageOptions,
) -> None:
    """Queue a stage for a worker; prints the job id."""
    job = service.submit(options.to_request(stage, idempotency_key, gpu_class))
    if not wait:
        typer.echo(job.model_dump_json(indent=2) if as_json else str(job.id))
        return
    if not as_json:
        typer.echo(f"job {job.id} queued", err=True)
    final = _wait(job.id, quiet=as_json)
    typer.echo(final.model_dump_json(indent=2) if as_json else display.job_summary_line(final))
    if final.state is not JobState.SUCCEEDED:
        if final.error and not as_json:
            typer.echo(final.error, err=True)
        raise typer.Exit(EXIT_FAILED)
    for experiment_id in final.experiment_ids:
        _check_predict_counts(service.get_experiment(experiment_id).metrics, allow_unreadable, quiet=as_json)


NO_WORKER_HINT_S = 15.0


def _check_predict_counts(metrics: dict, allow_unreadable: bool, *, quiet: bool) -> None:
    """A predict run's counts on stderr; exit 1 when a file could not be read, unless that is allowed."""
    counts = display.predict_counts(metrics)
    if counts is None:
        return
    if not quiet:
        typer.echo(counts[0], err=True)
    if counts[1] and not allow_unreadable:
        raise typer.Exit(EXIT_FAILED)


def _wait(job_id: int, *, quiet: bool, poll_s: float = 0.5) -> JobView:
    """Follow the job to its end; give up, saying how to start a worker, once neither the job (its heartbeat,
    its state, its children) nor any worker has shown life for JOBS_STALE_AFTER_S (the job stays where it is
    and goes on once a worker starts)."""
    begun, hinted, watch = time.monotonic(), quiet, JobWatch(get_settings().stale_after_s)
    with display.JobProgress(enabled=not quiet) as progress:
        while True:
            job = service.get_job(job_id)
            progress.update(job)
            if job.state.finished:
                return job
            if not hinted and job.state is JobState.QUEUED and time.monotonic() - begun > NO_WORKER_HINT_S:
                typer.echo(f"job {job_id} is still queued: is a worker running? (`jobs worker`)", err=True)
                hinted = True
            if (silent := watch.silent_for(job)) > watch.patience_s:
                die(watch.gave_up_message(job, silent), EXIT_FAILED)
            time.sleep(poll_s)


@command(context_settings=STAGE_COMMAND_SETTINGS)
@with_stage_options
def run(
    stage: StageArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the StageResult as one JSON object.")] = False,
    allow_unreadable: AllowUnreadableOpt = False,
    *,
    options: StageOptions,
) -> None:
    """Run a stage in this process (no broker), recorded in the same tables as queued jobs."""
    from jobs.execution.claim import WorkerIdentity
    from jobs.execution.runner import execute_job

    if stage in ORCHESTRATED_STAGES:
        _run_comparison(options.to_request(stage), as_json)
        return
    job, _ = service.create_job(options.to_request(stage), runs_here=True)
    if not as_json:
        typer.echo(f"job {job.id}: running {stage.value} in this process", err=True)
    # The stage's prints go to stderr (and the job's log), so stdout carries only the result.
    with contextlib.redirect_stdout(sys.stderr):
        outcome = execute_job(job.id, WorkerIdentity.current())
    final = service.get_job(job.id)
    if as_json:
        payload = outcome.result.to_dict() if outcome.result else {"stage": stage.value, "status": final.state.lower()}
        typer.echo(json.dumps({**payload, "job_id": job.id, "state": final.state.value, "error": final.error}))
    else:
        typer.echo(display.job_summary_line(final))
        for line in display.artifact_lines(outcome.result.artifacts if outcome.result else {}):
            typer.echo(line)
        if final.error:
            typer.echo(final.error, err=True)
    if final.state is not JobState.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)
    _check_predict_counts(outcome.result.metrics if outcome.result else {}, allow_unreadable, quiet=as_json)


def _run_comparison(request: SubmitRequest, as_json: bool) -> None:
    """`jobs run compare` (or sweep): every child in this process, one after another."""
    with contextlib.redirect_stdout(sys.stderr):
        final = service.run_comparison_inline(request)
    typer.echo(final.model_dump_json(indent=2) if as_json else display.job_summary_line(final))
    if final.state is not JobState.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)


@command()
def status(job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """One job: state, progress, attempts, error, children and experiments."""
    job = service.get_job(job_id)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    else:
        display.print_job(job, service.latest_metrics(job))


@command(name="list")
def list_(
    state: Annotated[
        JobState | None, typer.Option("--state", case_sensitive=False, help="Only jobs in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Jobs, newest first."""
    jobs = service.list_jobs(state, limit)
    if as_json:
        typer.echo(json.dumps([job.model_dump(mode="json") for job in jobs], indent=2))
    else:
        display.print_jobs(jobs)


@command()
def logs(
    job_id: JobIdArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", min=1, help="Only the last N lines.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The job's captured log: the stage's logging and Lightning's output."""
    text = service.read_logs(job_id, tail)
    if as_json:
        typer.echo(json.dumps({"job_id": job_id, "log": text}))
        return
    sys.stdout.write(text)
    if follow:
        _follow(job_id, already=len(service.read_logs(job_id)))


def _follow(job_id: int, already: int, poll_s: float = 0.5) -> None:
    shown = already
    while True:
        finished = service.get_job(job_id).state.finished
        text = service.read_logs(job_id)
        if len(text) < shown:  # the log started anew (the job was taken over from the start)
            shown = 0
        sys.stdout.write(text[shown:])
        sys.stdout.flush()
        shown = len(text)
        if finished:
            return
        time.sleep(poll_s)


@command()
def cancel(job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """Cancel a job: a queued one at once, a running one at its next step (keeping its metrics)."""
    job = service.cancel(job_id)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    elif job.state is JobState.RUNNING:
        typer.echo(f"job {job.id}: cancel requested; it stops at its next step")
    else:
        typer.echo(f"job {job.id}: {job.state.value}")


@command()
def publish(
    job_id: JobIdArg,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it; exit non-zero unless it succeeds.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish a finished run again: a job whose error says "publish pending" (the bucket was away) is queued to
    upload its files and record its result, without training again."""
    job = service.publish(job_id)
    if wait:
        job = _wait(job.id, quiet=as_json)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
        return
    if not wait:
        typer.echo(f"job {job.id}: queued to publish its finished run (no training); `jobs status {job.id}`")
        return
    typer.echo(display.job_summary_line(job))
    if job.state is not JobState.SUCCEEDED:
        if job.error:
            typer.echo(job.error, err=True)
        raise typer.Exit(EXIT_FAILED)


@command()
def results(
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage.")] = None,
    peft: Annotated[str | None, typer.Option("--peft", help="Only lora or qlora.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")] = 20,
    sort: Annotated[
        str | None,
        typer.Option("--sort", help=f"Best first by one of: {', '.join(SORTABLE)} (succeeded runs only)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Experiments with their key metrics (best_val_loss is per image-text pair for train, per token for
    train-full: compare it within one --stage)."""
    if stage is not None and stage not in {s.value for s in Stage}:
        raise service.InvalidRequest(f"--stage: unknown stage '{stage}'; allowed: {', '.join(s.value for s in Stage)}")
    if sort is not None and sort not in SORTABLE:
        raise service.InvalidRequest(f"--sort: unknown column '{sort}'; allowed: {', '.join(SORTABLE)}")
    experiments = service.list_experiments(stage, peft, limit, sort)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in experiments], indent=2))
    else:
        display.print_experiments(experiments)


@command()
def report(
    job_id: Annotated[
        int | None, typer.Option("--job", min=1, max=MAX_ROW_ID, help="A report job's id (default: the newest).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a comparison or sweep report: its tables and conclusions, and where its HTML page is."""
    job = service.get_job(job_id) if job_id else service.latest_report_job()
    if job.stage != Stage.report.value or "json" not in job.artifacts:
        raise service.JobNotFound(f"job {job.id} is not a finished report job; `jobs list` shows the jobs")
    if as_json:
        typer.echo(storage.local_copy(job.artifacts["json"]).read_text())
        return
    typer.echo(storage.local_copy(job.artifacts["markdown"]).read_text())
    typer.echo(f"HTML report: {job.artifacts['html']}")


@command()
def metrics(
    run_id: Annotated[int, typer.Argument(help="Job id (or experiment id with --experiment).", min=1, max=MAX_ROW_ID)],
    experiment: Annotated[
        bool, typer.Option("--experiment", help="The id is an experiment id (`jobs results` lists them).")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="Only this metric, e.g. val_loss.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Only this split, e.g. val or train.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every value a job (or one experiment) recorded, per split, epoch and step."""
    read = service.experiment_metrics if experiment else service.job_metrics
    rows = read(run_id, name, split)
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    else:
        display.print_metrics(rows)


@command()
def bucket(
    create: Annotated[
        bool, typer.Option("--create", help="Create the bucket first if it does not exist (a server of your own).")
    ] = False,
) -> None:
    """Check the artifacts bucket (JOBS_ARTIFACTS_URL): that it exists and these credentials may list it."""
    store = storage.bucket()
    if store is None:
        die("JOBS_ARTIFACTS_URL is not set: artifacts stay in the local artifacts folder", EXIT_FAILED)
    if create:
        store.create()
    store.check()
    at = f" at {store.endpoint}" if store.endpoint else ""
    typer.echo(f"{store.url}{at}: the bucket answers; every host mirrors it in {store.artifacts} and {store.logs}")
