"""Ingestion commands: ``import`` your own data, ``ingest`` one day, ``backfill`` a range."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import typer

from core.errors import FlywheelError
from core.lake import RAW, get_lake
from core.names import INGEST_DAG, TRAIN_DAG
from flywheel.backfill import DAYS_PER_RUN, airflow_backfill
from ingestion.bulk import ingest_range
from ingestion.importers import import_file
from ingestion.pipeline import ingest_day
from ingestion.retention import expire_raw
from validation.config import GateConfig, parse_overrides
from validation.gate import GateFailure
from validation.results import read_quality_history


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FlywheelError(f"{option} {value!r} is not a date (YYYY-MM-DD)") from None


def import_cmd(
    file: Path = typer.Argument(
        ..., help="ratings/events export (u.data, ratings.dat, ratings.csv, *.csv)"
    ),
    fmt: str = typer.Option("movielens", "--format", help="movielens | csv"),
    mapping: str = typer.Option(
        "",
        "--mapping",
        help="rename columns for --format csv: src=dst,… (dst = contract names)",
    ),
    movies: Path | None = typer.Option(
        None,
        "--movies",
        help="movies.csv, movies.dat or u.item: every genre of an item, as category A|B|…",
    ),
    users: Path | None = typer.Option(
        None,
        "--users",
        help="u.user or users.dat: each user's age band (ml-latest-small has no users file)",
    ),
    country: str = typer.Option(
        "US", "--country", help="ISO country given to imported users (MovieLens has no country)"
    ),
    age_bucket: str = typer.Option(
        "25-34", "--age-bucket", help="age band of users the --users file does not list"
    ),
) -> None:
    """Turn a ratings or events export into raw partitions (one per day) of the contract."""
    lake = get_lake()
    res = import_file(lake, file, fmt, mapping, movies, country, age_bucket, users=users)
    typer.echo(
        f"imported {res['events']} events, {res['items']} items ({res['items_with_genres']} "
        f"with genres), {res['users']} users ({res['users_with_age']} with an age) over "
        f"{res['days']} days ({res['first_day']} .. {res['last_day']}) into {lake.url(RAW + '/')}"
    )
    typer.echo(
        f"next: flywheel backfill {INGEST_DAG} --start {res['first_day']} --end {res['last_day']}"
    )
    w = res["window"]
    typer.echo(f"suggested training window: {w['window_days']} ({w['reason']})")
    typer.echo(f"  flywheel train --set data.window_days={w['window_days']}")
    typer.echo(f"  or the {TRAIN_DAG} DAG's Param window_days={w['window_days']}")


GATE_HELP = "gate threshold override key=value (repeatable; keys: flywheel gate-config)"


def _gate(pairs: list[str]) -> GateConfig:
    """The gate's config: defaults, then settings (FLYWHEEL_GATE), then ``--gate`` pairs."""
    return GateConfig.resolve(parse_overrides(pairs))


def ingest_cmd(
    day: str = typer.Argument(None, help="the day to ingest, YYYY-MM-DD"),
    start: str = typer.Option(None, "--start", help="ingest a range instead: first day"),
    end: str = typer.Option(None, "--end", help="last day of the range (inclusive)"),
    gate: list[str] = typer.Option([], "--gate", help=GATE_HELP),
) -> None:
    """Validate and publish one day, or every day with raw data in --start..--end in this one
    process, without Airflow (the same code as the DAG's task). Exits 1 if a table failed."""
    config = _gate(gate)
    if day and (start or end):
        raise FlywheelError("give either DAY or --start/--end, not both")
    if not day:
        if not (start and end):
            raise FlywheelError("give a DAY, or --start and --end for a range")
        _ingest_range(_date(start, "--start"), _date(end, "--end"), config)
        return
    try:
        summary = ingest_day(_date(day, "DAY"), config=config)
    except GateFailure as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(summary, indent=2))


def _ingest_range(start: dt.date, end: dt.date, config: GateConfig) -> None:
    if end < start:
        raise FlywheelError(f"range is empty: --end {end} is before --start {start}")
    res = ingest_range(start, end, config=config, out=typer.echo)
    for day, why in res["failures"].items():
        typer.echo(f"  {day} quarantined: {why}")
    for day, why in (res.get("skipped") or {}).items():
        typer.echo(f"  {day} skipped: {why}")
    if res["failures"]:
        raise typer.Exit(1)


def ingest_range_cmd(
    start: str = typer.Option(..., "--start", help="first day, YYYY-MM-DD"),
    end: str = typer.Option(..., "--end", help="last day, YYYY-MM-DD (inclusive)"),
    gate: list[str] = typer.Option([], "--gate", help=GATE_HELP),
) -> None:
    """Ingest every day with raw data in a range in one process (a history, without Airflow)."""
    _ingest_range(_date(start, "--start"), _date(end, "--end"), _gate(gate))


def gate_config_cmd() -> None:
    """Every gate threshold: its value now (defaults + FLYWHEEL_GATE settings) and its reason."""
    now = GateConfig.from_settings()
    for key, info in GateConfig.describe().items():
        typer.echo(f"{key} = {getattr(now, key)!r}  (default {info['default']!r})")
        typer.echo(f"    {info['description']}")


def backfill_cmd(
    dag_id: str = typer.Argument(INGEST_DAG, help=f"only {INGEST_DAG} is supported"),
    start: str = typer.Option(..., "--start", help="first day, YYYY-MM-DD"),
    end: str = typer.Option(..., "--end", help="last day, YYYY-MM-DD (inclusive)"),
    reprocess: str = typer.Option(
        "completed",
        "--reprocess",
        help="with --days-per-run 1, days that already ran: completed (all) | failed | none",
    ),
    days_per_run: int = typer.Option(
        DAYS_PER_RUN,
        "--days-per-run",
        min=1,
        help="calendar days ingested by one DAG run (one Airflow task); 1: Airflow's own "
        "backfill, one run per day",
    ),
    gate: list[str] = typer.Option([], "--gate", help=GATE_HELP),
) -> None:
    """Ingest a range of days through Airflow: runs of many days each (the DAG's start/end
    Params), or Airflow's own backfill of one run per day (--days-per-run 1)."""
    if dag_id != INGEST_DAG:
        raise FlywheelError(f"backfill supports {INGEST_DAG} only (got {dag_id!r})")
    if reprocess not in {"completed", "failed", "none"}:
        raise FlywheelError(f"--reprocess {reprocess!r}: use completed, failed or none")
    overrides = parse_overrides(gate)
    GateConfig.resolve(overrides)  # a bad key fails here, before Airflow starts
    res = airflow_backfill(
        _date(start, "--start"),
        _date(end, "--end"),
        out=typer.echo,
        reprocess=reprocess,
        days_per_run=days_per_run,
        gate=overrides,
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
        split = not r["success"] and r.get("published")
        status = "pass" if r["success"] else ("part" if split else "FAIL")
        why = "; ".join(f"{f['rule']}" for f in r["failed_expectations"])
        if split:
            why = f"{r.get('rows_quarantined', 0)} rows quarantined: {why}"
        typer.echo(f"{r['date']}  {r['table']:<7} {status}  {r['rows']:>9} rows  {why}")


def expire_raw_cmd(
    keep_days: int | None = typer.Option(
        None,
        "--keep-days",
        help="keep this many days of raw data (default: FLYWHEEL_RAW_RETENTION_DAYS)",
    ),
    today: str = typer.Option("", "--today", help="count back from this day (default: today, UTC)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="list what would be deleted, delete nothing"
    ),
) -> None:
    """Delete raw files (they hold raw user ids) of days validated and older than the retention.

    Only files a published validation covered go; quarantined, unvalidated or late files stay.
    """
    day = _date(today, "--today") if today else None
    expired = expire_raw(today=day, keep_days=keep_days, dry_run=dry_run)
    for key in expired:
        typer.echo(key)
    verb = "would expire" if dry_run else "expired"
    typer.echo(f"{verb} {len(expired)} raw file(s)")


def register(app: typer.Typer) -> None:
    """Add ``flywheel import|ingest|ingest-range|gate-config|backfill|quality|expire-raw``."""
    app.command("import")(import_cmd)
    app.command("ingest")(ingest_cmd)
    app.command("ingest-range")(ingest_range_cmd)
    app.command("gate-config")(gate_config_cmd)
    app.command("backfill")(backfill_cmd)
    app.command("quality")(quality_cmd)
    app.command("expire-raw")(expire_raw_cmd)
