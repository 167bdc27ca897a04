"""The commands that start things: a worker, the API, Flower, and the local Redis broker.

`_rank` (hidden) is a DDP follower rank of a multi-device job, started by Lightning's launcher.
"""

# No `from __future__ import annotations`: Typer reads each option from the evaluated annotation.
import json
import os
import socket
from typing import Annotated, Any

import typer

from jobs import service
from jobs.broker import localbroker, queue
from jobs.broker.celery_app import CPU_QUEUE, GPU_QUEUE, declare_queues, ensure_broker, is_queue_name
from jobs.broker.celery_app import app as celery_app
from jobs.cli.app import EXIT_BAD_INPUT, EXIT_FAILED, JsonOpt, app, command, die, friendly_errors
from jobs.core.settings import get_settings


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
    unknown = sorted(name for name in chosen if not is_queue_name(name))
    if not chosen or unknown:
        raise service.InvalidRequest(
            f"--queues: unknown queue {unknown or chosen}; allowed: gpu, cpu, gpu.<class> (e.g. gpu,cpu or gpu.a100)"
        )
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from jobs.execution.tasks import app as worker_app  # the app with its tasks and the sweep registered

    ensure_broker()
    declare_queues(worker_app, [name for name in chosen if name not in (GPU_QUEUE, CPU_QUEUE)])
    name = hostname or f"{'-'.join(chosen)}{'-gpu' + gpu if gpu else ''}-{os.getpid()}@{socket.gethostname()}"
    worker_app.worker_main(
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
    """A DDP rank > 0 of a multi-device job (started by Lightning's launcher; see jobs/execution/ranks.py)."""
    from jobs.execution.ranks import run_follower

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
    ensure_broker()
    celery_app.start(["flower", f"--port={port}", f"--basic-auth={auth}"])


broker_app = typer.Typer(help="The local Redis broker the embedded default runs on (var/broker).", no_args_is_help=True)
app.add_typer(broker_app, name="broker")


def _local_broker():  # type: ignore[no-untyped-def]
    local = localbroker.configured()
    if local is None:
        die(
            f"CELERY_BROKER_URL is set ({queue.safe_url(get_settings().broker)}): that broker is not managed here; "
            "unset it to use the local one",
            EXIT_BAD_INPUT,
        )
    return local


@broker_app.command("start")
@friendly_errors
def broker_start() -> None:
    """Start the local Redis (commands that need it start it anyway)."""
    local = _local_broker()
    localbroker.ensure_running(local)
    typer.echo(f"local broker answering on {local.socket_path}")


@broker_app.command("stop")
@friendly_errors
def broker_stop() -> None:
    """Stop the local Redis; queued messages stay in its append-only file for the next start."""
    local = _local_broker()
    typer.echo("local broker stopped" if localbroker.stop(local) else "local broker was not running")


@broker_app.command("status")
@friendly_errors
def broker_status(as_json: JsonOpt = False) -> None:
    """Where the broker is and whether it answers (exit 1 when it does not)."""
    local = localbroker.configured()
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
