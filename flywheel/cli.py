"""The ``flywheel`` command: a thin Typer CLI over the library, runnable without Airflow.

Commands live in ``flywheel/commands/<area>.py``; each module defines ``register(app)`` and is
listed in :data:`COMMANDS`. Errors derived from :class:`core.errors.FlywheelError` print one line
and exit 1.
"""

from __future__ import annotations

import sys

import typer

from core.errors import FlywheelError
from flywheel.commands import airflow, core, demo, features, ingest, models, serve, simulate, ui

app = typer.Typer(
    name="flywheel",
    help="Flywheel: the MLOps loop for recommenders (simulate, ingest, features, train, drift, serve).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: The command modules, in the order ``--help`` lists their commands.
COMMANDS = (airflow, core, demo, features, ingest, models, serve, simulate, ui)

for _module in COMMANDS:
    _module.register(app)


def main() -> None:
    """Console entry point."""
    try:
        # outside standalone mode click *returns* the code of a `typer.Exit(code)` (the airflow
        # passthrough, `dag test`) instead of exiting with it: pass it on to the shell
        code = app(standalone_mode=False)
    except FlywheelError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        # usage errors: Typer raises its own (vendored) click's ClickException, which has
        # show() and exit_code (2); print them as click does, without a traceback
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if not callable(show) or not isinstance(code, int):
            raise
        show()
        sys.exit(code)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
