"""The console script `jobs`: the app with every command registered, and usage errors as one line.

The commands are imported when first needed (`main()`, or `app` through the module's __getattr__): importing
them builds the Celery app from the settings, and a setting that does not validate must be one line naming
it, not a traceback out of an import.
"""

# No `from __future__ import annotations`: Typer reads each option from the evaluated annotation.
import sys
from typing import Any

import typer

__all__ = ["main"]


def _app() -> typer.Typer:
    from jobs.cli import commands, servers  # noqa: F401  (they register the commands)
    from jobs.cli.app import app

    return app


def main() -> None:
    """The console script: usage errors are one line too (click's own format is a boxed paragraph)."""
    from jobs.core.settings import export_env_file, settings_problem

    export_env_file()  # the worker, API and Flower this command may start, and their libraries, read it too
    if problem := settings_problem():
        typer.echo(f"error: {problem}", err=True)
        sys.exit(2)
    # typer vendors click and exports only BadParameter; the base of every usage error lives here.
    from typer._click.exceptions import UsageError

    try:
        code = _app()(standalone_mode=False)
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    except UsageError as exc:
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)


def __getattr__(name: str) -> Any:
    if name == "app":
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
