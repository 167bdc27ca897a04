"""The `jobs` Typer app and what every command shares: exit codes, one-line errors, common arguments.

The commands register themselves on `app` (commands.py, servers.py); main.py is the console script.
"""

# No `from __future__ import annotations`: Typer reads each option from the evaluated annotation.
import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from db.models import MAX_ROW_ID
from jobs import service
from jobs.broker.celery_app import UnsupportedBroker
from jobs.broker.localbroker import LocalBrokerError
from jobs.core.stages import Stage

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


def die(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly_errors(function: F) -> F:
    """Bad input is one line on stderr and exit 2; a missing job exit 1; never a traceback for either."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from worker.config import ConfigError  # torch-free

        try:
            return function(*args, **kwargs)
        except (service.InvalidRequest, service.IdempotencyConflict, ConfigError) as exc:
            die(str(exc), EXIT_BAD_INPUT)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            if key:
                die(f"invalid value for '{key}': {first['msg']}", EXIT_BAD_INPUT)
            die(str(first["msg"]).removeprefix("Value error, "), EXIT_BAD_INPUT)  # a check across fields
        except (service.JobNotFound, service.ExperimentNotFound) as exc:
            die(str(exc), EXIT_FAILED)
        except (service.BrokerUnavailable, service.StorageError) as exc:
            die(str(exc), EXIT_FAILED)
        except (LocalBrokerError, UnsupportedBroker) as exc:
            die(str(exc), EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def command(**kwargs: Any) -> Callable[[F], F]:
    def register(function: F) -> F:
        app.command(**kwargs)(friendly_errors(function))
        return function

    return register


StageArg = Annotated[Stage, typer.Argument(help="The stage to run.", case_sensitive=False, show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
JobIdArg = Annotated[int, typer.Argument(help="Job id.", min=1, max=MAX_ROW_ID)]
