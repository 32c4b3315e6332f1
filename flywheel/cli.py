"""The ``flywheel`` command: a thin Typer CLI over the library, runnable without Airflow.

Commands live in ``flywheel/commands/<area>.py``; each module defines ``register(app)``.
Errors derived from :class:`core.errors.FlywheelError` print one line and exit 1.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from core.errors import FlywheelError

app = typer.Typer(
    name="flywheel",
    help="Flywheel: the MLOps loop for recommenders (simulate, ingest, features, train, drift, serve).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    import flywheel.commands as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"flywheel.commands.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    """Console entry point."""
    try:
        app(standalone_mode=False)
    except FlywheelError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
