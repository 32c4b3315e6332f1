"""Serving commands: ``flywheel serve`` (the recommendation API) and ``flywheel ab-report``."""

from __future__ import annotations

import datetime as dt
import json
import logging

import typer

from core.errors import FlywheelError
from core.lake import get_lake
from core.settings import get_settings
from serving.ab import ab_report, format_report
from serving.app import create_app
from serving.redact import install_on_root, uvicorn_log_config


def serve_cmd(
    host: str = typer.Option(None, "--host", help="Bind address (default: settings.serve_host)"),
    port: int = typer.Option(None, "--port", help="Port (default: settings.serve_port)"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve recommendations from the champion model (FastAPI on uvicorn).

    Starts from the last-known champion cached under FLYWHEEL_HOME and follows the
    champion/challenger aliases in MLflow in the background; spools impressions and feedback
    locally before answering and writes them to the raw lake in batches (what a crash or a lake
    outage leaves in the spool is written by the next start). Credentials in URIs are redacted
    from every log line.
    """
    import uvicorn

    s = get_settings()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_on_root()
    uvicorn.run(
        create_app(s),
        host=host or s.serve_host,
        port=port or s.serve_port,
        log_level=log_level,
        log_config=uvicorn_log_config(),
        access_log=False,
    )


def _day(value: str | None, name: str) -> dt.date | None:
    """``--start``/``--end`` as a date (None when not given)."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FlywheelError(f"--{name} {value!r} is not a date (YYYY-MM-DD)") from None


def ab_report_cmd(
    start: str = typer.Option(None, "--start", help="First day YYYY-MM-DD (default: all)"),
    end: str = typer.Option(None, "--end", help="Last day YYYY-MM-DD (default: all)"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    """Per-variant click-through (champion vs challenger) with Wilson 95% intervals."""
    report = ab_report(get_lake(), _day(start, "start"), _day(end, "end"))
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def register(app: typer.Typer) -> None:
    """Add ``flywheel serve`` and ``flywheel ab-report`` to ``app``."""
    app.command("serve")(serve_cmd)
    app.command("ab-report")(ab_report_cmd)
