"""The console script `jobs`: the app with every command registered, and usage errors as one line."""

# No `from __future__ import annotations`: Typer reads each option from the evaluated annotation.
import sys

import typer

# typer vendors click and exports only BadParameter; the base of every usage error lives here.
from typer._click.exceptions import UsageError

from jobs.cli import commands, servers
from jobs.cli.app import app

__all__ = ["app", "commands", "main", "servers"]


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
