"""The `jobs` command: submit and run stages, follow jobs, query results, start the services.

Starts without torch: stages are imported only when `jobs run` runs one (or a worker's child does).
"""

import contextlib
import functools
import inspect
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

# typer vendors click and exports only BadParameter; the base of every usage error lives here.
from typer._click.exceptions import UsageError

from db.models import MAX_ROW_ID
from jobs import display, queue, service
from jobs.celery_app import UnsupportedBroker
from jobs.localbroker import LocalBrokerError
from jobs.schemas import JobState, JobView, SubmitRequest
from jobs.settings import get_settings
from jobs.stages import ORCHESTRATED_STAGES, Stage, StageParams

app = typer.Typer(
    name="jobs",
    help="Batch jobs for LoRA/QLoRA fine-tuning: submit, run, follow, and compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _die(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _friendly_errors(function: F) -> F:
    """Bad input is one line on stderr and exit 2; a missing job exit 1; never a traceback for either."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from worker.config import ConfigError  # torch-free

        try:
            return function(*args, **kwargs)
        except (service.InvalidRequest, service.IdempotencyConflict, ConfigError) as exc:
            _die(str(exc), EXIT_BAD_INPUT)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            if key:
                _die(f"invalid value for '{key}': {first['msg']}", EXIT_BAD_INPUT)
            _die(str(first["msg"]).removeprefix("Value error, "), EXIT_BAD_INPUT)  # a check across fields
        except (service.JobNotFound, service.ExperimentNotFound, service.BrokerUnavailable) as exc:
            _die(str(exc), EXIT_FAILED)
        except (LocalBrokerError, UnsupportedBroker) as exc:
            _die(str(exc), EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def command(**kwargs: Any) -> Callable[[F], F]:
    def register(function: F) -> F:
        app.command(**kwargs)(_friendly_errors(function))
        return function

    return register


# --- stage options, shared by `run` and `submit` -------------------------------------------------------


@dataclass
class StageOptions:
    preset: str | None
    config: Path | None
    set_: list[str] | None
    peft: str | None
    epochs: int | None
    batch_size: int | None
    lr: float | None
    devices: int | None
    seed: int | None
    projection: str | None
    source: str | None
    data_dir: str | None
    resume: bool
    siglip_checkpoint: str | None
    checkpoint: str | None
    split: str
    num_samples: int
    with_generation: bool
    compare_job: int | None
    images: list[str] | None
    top_k: int
    merge: bool
    push_to_hub: str | None
    private: bool
    grid: list[str] | None
    seeds: int | None
    seed_list: str | None
    metric: str | None
    mode: str | None

    def to_request(
        self, stage: Stage, idempotency_key: str | None = None, gpu_class: str | None = None
    ) -> SubmitRequest:
        from worker.config import SHORTCUTS, parse_set_options  # torch-free

        overrides = parse_set_options(self.set_)
        values = asdict(self)
        for option, key in SHORTCUTS.items():
            value = values.get(option)
            if option == "data_dir":
                value = _from_here(value)
            if value is not None and value is not False:
                overrides[key] = str(value).lower() if isinstance(value, bool) else str(value)
        params = StageParams(
            siglip_checkpoint=_from_here(self.siglip_checkpoint),
            checkpoint=_from_here(self.checkpoint),
            split=self.split,  # type: ignore[arg-type]  # pydantic checks it
            num_samples=self.num_samples,
            with_generation=self.with_generation,
            compare_job=self.compare_job,
            images=self.images,
            top_k=self.top_k,
            merge=self.merge,
            push_to_hub=self.push_to_hub,
            private=self.private,
            grid=parse_grid(self.grid),
            seeds=self.seeds,
            seed_list=_parse_seed_list(self.seed_list),
            metric=self.metric,
            mode=self.mode,  # type: ignore[arg-type]  # pydantic checks it
        )
        return SubmitRequest(
            stage=stage,
            preset=None if self.config else self.preset,
            config_path=_from_here(str(self.config)) if self.config else None,
            overrides=overrides,
            params=params,
            idempotency_key=idempotency_key,
            gpu_class=gpu_class,
        )


def _from_here(raw: str | None) -> str | None:
    """A path option as the caller meant it: relative to the working directory of this command (the job
    system resolves relative paths from the repository, and a worker may run anywhere)."""
    if raw is None or raw.startswith(("job:", "~")) or "\x00" in raw:
        return raw  # a comparison child's reference, the home folder, or refused later with its field named
    return os.path.abspath(raw)


def parse_grid(items: list[str] | None) -> dict[str, list[str]] | None:
    """['peft.method=lora,qlora', 'peft.r=8,16'] -> {'peft.method': ['lora', 'qlora'], 'peft.r': ['8', '16']}."""
    if not items:
        return None
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        parts = [value.strip() for value in values.split(",")]
        if not sep or not key.strip() or not all(parts):
            raise service.InvalidRequest(f"--grid expects KEY=V1,V2,... (e.g. peft.r=8,16), got '{item}'")
        if key.strip() in grid:
            raise service.InvalidRequest(f"--grid names '{key.strip()}' twice; give all its values in one --grid")
        grid[key.strip()] = parts
    return grid


def _parse_seed_list(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    try:
        return [int(part) for part in raw.split(",")]
    except ValueError:
        message = f"--seed-list expects integers separated by commas (e.g. 1,2,3), got '{raw}'"
        raise service.InvalidRequest(message) from None


def _option(annotation: Any, default: Any, *flags: str, help: str) -> inspect.Parameter:
    name = flags[0].lstrip("-").replace("-", "_")
    if name == "set":
        name = "set_"
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*flags, help=help, rich_help_panel="Stage options")],
    )


STAGE_OPTIONS = [
    _option(str | None, "smoke", "--preset", help="Preset under configs/ (smoke, iu-xray, medsiglip)."),
    _option(Path | None, None, "--config", help="A YAML config file instead of a preset."),
    _option(list[str] | None, None, "--set", help="Override any config key: --set train.lr=3e-4 (repeatable)."),
    _option(str | None, None, "--peft", help="PEFT method: lora or qlora."),
    _option(int | None, None, "--epochs", help="Training epochs (train.epochs)."),
    _option(int | None, None, "--batch-size", help="Per-device batch size (train.batch_size)."),
    _option(float | None, None, "--lr", help="Peak learning rate (train.lr)."),
    _option(int | None, None, "--devices", help="Devices per node (train.devices)."),
    _option(int | None, None, "--seed", help="Seed for splits, init and data order."),
    _option(str | None, None, "--projection", help="Frontal, Lateral or both (data.projection)."),
    _option(str | None, None, "--source", help="synthetic, kaggle or local (data.source)."),
    _option(str | None, None, "--data-dir", help="Local IU-Xray copy in the Kaggle layout (data.data_dir)."),
    _option(bool, False, "--resume", help="Resume from the run's last checkpoint (train.resume)."),
    *(
        _option(annotation, default, flag, help=StageParams.model_fields[flag[2:].replace("-", "_")].description or "")
        for annotation, default, flag in (
            (str | None, None, "--siglip-checkpoint"),
            (str | None, None, "--checkpoint"),
            (str, "test", "--split"),
            (int, 10, "--num-samples"),
            (bool, False, "--with-generation"),
            (int | None, None, "--compare-job"),
            (list[str] | None, None, "--images"),
            (int, 5, "--top-k"),
            (bool, False, "--merge"),
            (str | None, None, "--push-to-hub"),
            (bool, False, "--private"),
            (int | None, None, "--seeds"),
            (str | None, None, "--metric"),
            (str | None, None, "--mode"),
        )
    ),
    _option(list[str] | None, None, "--grid", help="sweep: KEY=V1,V2 over any config key (repeatable)."),
    _option(str | None, None, "--seed-list", help="compare/sweep: these seeds, e.g. 1,2,3 (instead of --seeds)."),
]


# `--images a.png b.png` (a shell glob, typically): click options take one value each, so the paths after the
# first arrive as extra arguments; the commands with stage options accept them only as more images.
STAGE_COMMAND_SETTINGS = {"allow_extra_args": True}
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)


def with_stage_options(function: F) -> F:
    """Add the shared stage options to a command; the function receives them as `options: StageOptions`.

    Register the command with ``context_settings=STAGE_COMMAND_SETTINGS``."""
    signature = inspect.signature(function)
    own = [p for p in signature.parameters.values() if p.name != "options"]
    names = [p.name for p in STAGE_OPTIONS]

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        extra = kwargs.pop(CONTEXT.name).args
        options = StageOptions(**{name: kwargs.pop(name) for name in names})
        if extra and not options.images:
            raise UsageError(f"unexpected extra argument(s) {' '.join(extra)}; image paths go after --images")
        if extra:
            options.images = [*(options.images or []), *extra]
        return function(*args, options=options, **kwargs)

    parameters = [*own, *STAGE_OPTIONS, CONTEXT]
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]


StageArg = Annotated[Stage, typer.Argument(help="The stage to run.", case_sensitive=False, show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


# --- commands -------------------------------------------------------------------------------------------


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


NO_WORKER_HINT_S = 15.0
WORKER_PING_EVERY_S = 5.0


class WorkerWatch:
    """When a worker last answered a ping; asked often enough that a live worker is never missed."""

    def __init__(self, patience_s: float) -> None:
        self.every_s = min(WORKER_PING_EVERY_S, patience_s / 4)
        self.last_seen = self.last_asked = time.monotonic()

    def silent_for(self) -> float:
        now = time.monotonic()
        if now - self.last_asked >= self.every_s:
            self.last_asked = now
            if queue.workers_answering():
                self.last_seen = time.monotonic()
        return time.monotonic() - self.last_seen


def _wait(job_id: int, *, quiet: bool, poll_s: float = 0.5) -> JobView:
    """Follow the job to its end; give up, saying how to start a worker, once none has answered for
    JOBS_STALE_AFTER_S (the job stays queued and runs when one starts)."""
    patience = get_settings().stale_after_s
    begun, hinted, watch = time.monotonic(), quiet, WorkerWatch(patience)
    with display.JobProgress(enabled=not quiet) as progress:
        while True:
            job = service.get_job(job_id)
            progress.update(job)
            if job.state.finished:
                return job
            if not hinted and job.state is JobState.QUEUED and time.monotonic() - begun > NO_WORKER_HINT_S:
                typer.echo(f"job {job_id} is still queued: is a worker running? (`jobs worker`)", err=True)
                hinted = True
            if (silent := watch.silent_for()) > patience:
                _die(
                    f"no worker has answered for {silent:.0f}s (JOBS_STALE_AFTER_S={patience:g}); job {job_id} stays "
                    f"{job.state.value} and runs once a worker starts: `jobs worker` (same DATABASE_URL and "
                    f"CELERY_BROKER_URL), then `jobs status {job_id}`",
                    EXIT_FAILED,
                )
            time.sleep(poll_s)


@command(context_settings=STAGE_COMMAND_SETTINGS)
@with_stage_options
def run(
    stage: StageArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the StageResult as one JSON object.")] = False,
    *,
    options: StageOptions,
) -> None:
    """Run a stage in this process (no broker), recorded in the same tables as queued jobs."""
    from jobs.claim import WorkerIdentity
    from jobs.runner import execute_job

    if stage in ORCHESTRATED_STAGES:
        _run_comparison(options.to_request(stage), as_json)
        return
    job, _ = service.create_job(options.to_request(stage))
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
        if final.error:
            typer.echo(final.error, err=True)
    if final.state is not JobState.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)


def _run_comparison(request: SubmitRequest, as_json: bool) -> None:
    """`jobs run compare` (or sweep): every child in this process, one after another."""
    from jobs.compare import run_compare_inline

    config, runs = service.validate_runs(request)
    with contextlib.redirect_stdout(sys.stderr):
        final = run_compare_inline(request, config, runs)
    typer.echo(final.model_dump_json(indent=2) if as_json else display.job_summary_line(final))
    if final.state is not JobState.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)


JobIdArg = Annotated[int, typer.Argument(help="Job id.", min=1, max=MAX_ROW_ID)]


@command()
def status(job_id: JobIdArg, as_json: JsonOpt = False) -> None:
    """One job: state, progress, attempts, error, children and experiments."""
    job = service.get_job(job_id)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
    else:
        display.print_job(job)


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
def results(
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage.")] = None,
    peft: Annotated[str | None, typer.Option("--peft", help="Only lora or qlora.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Experiments with their key metrics."""
    if stage is not None and stage not in {s.value for s in Stage}:
        raise service.InvalidRequest(f"--stage: unknown stage '{stage}'; allowed: {', '.join(s.value for s in Stage)}")
    experiments = service.list_experiments(stage, peft, limit)
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
        typer.echo(Path(job.artifacts["json"]).read_text())
        return
    typer.echo(Path(job.artifacts["markdown"]).read_text())
    typer.echo(f"HTML report: {job.artifacts['html']}")


@command()
def metrics(
    experiment_id: Annotated[int, typer.Argument(help="Experiment id.", min=1, max=MAX_ROW_ID)],
    as_json: JsonOpt = False,
) -> None:
    """Every value an experiment recorded (per split, epoch and step)."""
    rows = service.experiment_metrics(experiment_id)
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
    else:
        display.print_metrics(rows)


@command()
def worker(
    queues: Annotated[
        str, typer.Option("--queues", "-Q", help="Comma-separated: gpu, cpu, gpu.<class> (e.g. gpu.a100).")
    ] = "gpu,cpu",
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Jobs at once; keep 1 per GPU (one worker per GPU).")
    ] = 1,
    gpu: Annotated[str | None, typer.Option("--gpu", help="Pin this worker to one GPU (CUDA_VISIBLE_DEVICES).")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", "-n", help="Worker name, unique per box.")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Worker log level.")] = "INFO",
) -> None:
    """Start a Celery worker for this project's broker and database."""
    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    from jobs.celery_app import CPU_QUEUE, GPU_QUEUE, declare_queues, ensure_broker, is_queue_name

    unknown = sorted(name for name in chosen if not is_queue_name(name))
    if not chosen or unknown:
        raise service.InvalidRequest(
            f"--queues: unknown queue {unknown or chosen}; allowed: gpu, cpu, gpu.<class> (e.g. gpu,cpu or gpu.a100)"
        )
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from jobs.tasks import app as celery_app

    ensure_broker()
    declare_queues(celery_app, [name for name in chosen if name not in (GPU_QUEUE, CPU_QUEUE)])
    name = hostname or f"{'-'.join(chosen)}{'-gpu' + gpu if gpu else ''}-{os.getpid()}@{socket.gethostname()}"
    celery_app.worker_main(
        [
            "worker",
            f"--queues={','.join(chosen)}",
            f"--concurrency={concurrency}",
            "--max-tasks-per-child=1",
            f"--loglevel={loglevel}",
            f"--hostname={name}",
        ]
    )


@app.command(name="_rank", hidden=True)
def rank_follower() -> None:
    """A DDP rank > 0 of a multi-device job (started by Lightning's launcher; see jobs/ranks.py)."""
    from jobs.ranks import run_follower

    run_follower()


@command()
def api(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port.")] = 8000,
) -> None:
    """Start the HTTP submit API (uvicorn api.app:app)."""
    import uvicorn

    uvicorn.run("api.app:app", host=host, port=port)


@command()
def flower(port: Annotated[int, typer.Option("--port", help="Port.")] = 5555) -> None:
    """Start Flower for this project's Celery app, behind basic auth from FLOWER_BASIC_AUTH (user:password)."""
    auth = get_settings().flower_basic_auth
    if not auth or ":" not in auth:
        raise service.InvalidRequest("FLOWER_BASIC_AUTH must be set to user:password (Flower is never started open)")
    from jobs.celery_app import app as celery_app
    from jobs.celery_app import ensure_broker

    ensure_broker()
    celery_app.start(["flower", f"--port={port}", f"--basic-auth={auth}"])


broker_app = typer.Typer(help="The local Redis broker the embedded default runs on (var/broker).", no_args_is_help=True)
app.add_typer(broker_app, name="broker")


def _local_broker():  # type: ignore[no-untyped-def]
    local = get_settings().local_broker
    if local is None:
        _die(
            f"CELERY_BROKER_URL is set ({queue.safe_url(get_settings().broker)}): that broker is not managed here; "
            "unset it to use the local one",
            EXIT_BAD_INPUT,
        )
    return local


@broker_app.command("start")
@_friendly_errors
def broker_start() -> None:
    """Start the local Redis (commands that need it start it anyway)."""
    from jobs import localbroker

    local = _local_broker()
    localbroker.ensure_running(local)
    typer.echo(f"local broker answering on {local.socket_path}")


@broker_app.command("stop")
@_friendly_errors
def broker_stop() -> None:
    """Stop the local Redis; queued messages stay in its append-only file for the next start."""
    from jobs import localbroker

    local = _local_broker()
    typer.echo("local broker stopped" if localbroker.stop(local) else "local broker was not running")


@broker_app.command("status")
@_friendly_errors
def broker_status(as_json: JsonOpt = False) -> None:
    """Where the broker is and whether it answers (exit 1 when it does not)."""
    from jobs import localbroker

    local = get_settings().local_broker
    if local is None:
        info: dict[str, Any] = {"url": queue.safe_url(get_settings().broker), "managed": False}
        info["answers"] = queue.broker_health() == "ok"
    else:
        info = {**localbroker.status(local), "managed": True}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            typer.echo(f"{key:16} {value}")
    if not info["answers"]:
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    """The console script: usage errors are one line too (click's own format is a boxed paragraph)."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    except UsageError as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
