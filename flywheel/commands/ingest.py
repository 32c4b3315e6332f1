"""Ingestion commands: ``import`` your own data, ``ingest`` one day, ``backfill`` a range."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from core.errors import FlywheelError
from core.lake import RAW, get_lake
from core.names import INGEST_DAG
from flywheel.backfill import airflow_backfill
from ingestion.importers import import_file
from ingestion.pipeline import ingest_day
from validation.results import read_quality_history


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FlywheelError(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None


def import_cmd(
    file: Path = typer.Argument(..., help="ratings/events export (u.data, ratings.csv, *.csv)"),
    fmt: str = typer.Option("movielens", "--format", help="movielens | csv"),
    mapping: str = typer.Option(
        "",
        "--mapping",
        help="rename columns for --format csv: src=dst,… (dst = contract names)",
    ),
    movies: Path | None = typer.Option(
        None, "--movies", help="movies.csv or u.item: item categories (first genre)"
    ),
    country: str = typer.Option("US", "--country", help="ISO country given to imported users"),
    age_bucket: str = typer.Option(
        "25-34", "--age-bucket", help="age band given to imported users"
    ),
) -> None:
    """Turn a ratings or events export into raw partitions (one per day) of the contract."""
    lake = get_lake()
    res = import_file(lake, file, fmt, mapping, movies, country, age_bucket)
    typer.echo(
        f"imported {res['events']} events, {res['items']} items, {res['users']} users over "
        f"{res['days']} days ({res['first_day']} .. {res['last_day']}) into {lake.url(RAW + '/')}"
    )
    typer.echo(
        f"next: flywheel backfill {INGEST_DAG} --start {res['first_day']} --end {res['last_day']}"
    )


def ingest_cmd(day: str = typer.Argument(..., help="the day to ingest, YYYY-MM-DD")) -> None:
    """Validate and publish one day without Airflow (same code as the DAG's task)."""
    summary = ingest_day(_date(day, "DAY"))
    typer.echo(json.dumps(summary, indent=2))


def backfill_cmd(
    dag_id: str = typer.Argument(INGEST_DAG, help=f"only {INGEST_DAG} is supported"),
    start: str = typer.Option(..., "--start", help="first day, YYYY-MM-DD"),
    end: str = typer.Option(..., "--end", help="last day, YYYY-MM-DD (inclusive)"),
    reprocess: str = typer.Option(
        "completed",
        "--reprocess",
        help="days that already ran: completed (all) | failed | none",
    ),
) -> None:
    """Ingest a range of days through Airflow's own backfill (scheduler-driven)."""
    if dag_id != INGEST_DAG:
        raise FlywheelError(f"backfill supports {INGEST_DAG} only (got {dag_id!r})")
    if reprocess not in {"completed", "failed", "none"}:
        raise FlywheelError(f"--reprocess {reprocess!r}: use completed, failed or none")
    res = airflow_backfill(
        _date(start, "--start"), _date(end, "--end"), out=typer.echo, reprocess=reprocess
    )
    typer.echo(f"{len(res['succeeded'])} of {res['days']} days validated")
    for day, why in res["failed"].items():
        typer.echo(f"  {day} quarantined: {why}")
    if res["failed"]:
        raise typer.Exit(1)


def quality_cmd(
    every_run: bool = typer.Option(False, "--all", help="every run, not only the latest per day"),
    limit: int = typer.Option(30, help="rows to show"),
) -> None:
    """List the validation history (newest first)."""
    for r in read_quality_history(every_run=every_run)[:limit]:
        status = "pass" if r["success"] else "FAIL"
        why = "; ".join(f"{f['rule']}" for f in r["failed_expectations"])
        typer.echo(f"{r['date']}  {r['table']:<7} {status}  {r['rows']:>9} rows  {why}")


def register(app: typer.Typer) -> None:
    """Add ``flywheel import|ingest|backfill|quality`` to ``app``."""
    app.command("import")(import_cmd)
    app.command("ingest")(ingest_cmd)
    app.command("backfill")(backfill_cmd)
    app.command("quality")(quality_cmd)
