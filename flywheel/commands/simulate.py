"""``flywheel simulate``: simulated raw data into the lake, or simulated users against the service."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import replace

import typer

from core.lake import RAW, get_lake
from simulation.config import PRESETS, parse_start, resolve_preset
from simulation.simulator import SimSummary, simulate
from simulation.traffic import TrafficSummary, play


def simulate_cmd(
    days: int = typer.Option(14, "--days", help="Number of days to simulate"),
    preset: str = typer.Option(
        "default",
        "--preset",
        help=f"World size: {' | '.join(PRESETS)} (large: ~1M users, 100k items, "
        "~1.5M events a day)",
    ),
    users: int | None = typer.Option(None, "--users", help="Initial users (default: preset's)"),
    items: int | None = typer.Option(None, "--items", help="Initial items (default: preset's)"),
    events_per_day: int | None = typer.Option(
        None, "--events-per-day", help="About this many events a day (scales the visit rate)"
    ),
    scenario: str = typer.Option(
        "stable",
        "--scenario",
        help="stable | taste_shift | catalog_shift | population_shift | faults; "
        "a shift may be combined with faults: taste_shift+faults",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: same seed, same bytes"),
    start: str = typer.Option("2026-01-01", "--start", help="First day (YYYY-MM-DD, UTC)"),
    shift_day: int | None = typer.Option(
        None, "--shift-day", help="0-based day index the shift starts on (default: days // 2)"
    ),
    fmt: str = typer.Option("parquet", "--format", help="parquet | csv"),
    fault_every: int = typer.Option(
        3, "--fault-every", help="faults: one broken batch per this many eligible days"
    ),
    serve_url: str | None = typer.Option(
        None, "--serve-url", help="Play simulated users against the serving API at this URL"
    ),
    k: int = typer.Option(10, "--k", help="--serve-url: recommendations per request"),
    max_requests: int = typer.Option(
        2000, "--max-requests", help="--serve-url: at most this many requests"
    ),
    time_limit: float = typer.Option(
        300.0, "--time-limit", help="--serve-url: stop after this many seconds"
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Progress bar (default: on a terminal)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full summary as JSON"),
) -> None:
    """Write simulated raw events, items and users (and the ground truth under sim/).

    --preset large: about 1M users, 100k items and 1.5M events a day, one day at a time.

    With --serve-url, play the simulated users against the serving API instead: they ask for
    recommendations and click, buy and rate by their true tastes (needs a simulation first).
    """
    show = sys.stderr.isatty() if progress is None else progress
    if serve_url is not None:
        traffic = play(
            serve_url,
            days,
            seed=seed,
            k=k,
            max_requests=max_requests,
            time_limit_s=time_limit,
            progress=show,
        )
        _echo_traffic(traffic, as_json)
        return
    n_users, n_items, cfg = resolve_preset(preset, users, items, None, events_per_day)
    lake = get_lake()
    summary = simulate(
        lake,
        days=days,
        users=n_users,
        items=n_items,
        scenario=scenario,
        seed=seed,
        start=parse_start(start),
        shift_day=shift_day,
        progress=show,
        fmt=fmt,
        config=replace(cfg, fault_every=fault_every),
        preset=preset,
    )
    _echo_simulation(summary, lake.url(f"{RAW}/"), as_json)


def _echo_traffic(t: TrafficSummary, as_json: bool) -> None:
    """What the simulated users did: one line, or the whole summary as JSON."""
    if as_json:
        typer.echo(json.dumps(t.as_dict(), indent=2))
        return
    typer.echo(
        f"{t.requests} requests over {len(t.days)} day(s) to {t.url}: "
        f"{t.clicks_per_slate:.2f} clicks per slate, feedback {t.feedback}, errors {t.errors}, "
        f"served relevance {t.served_relevance:.3f} (oracle {t.oracle_relevance:.3f})"
        + (f"; stopped: {t.stopped}" if t.stopped else "")
    )


def _echo_simulation(s: SimSummary, raw_url: str, as_json: bool) -> None:
    """What the simulation wrote (to ``raw_url``): totals, the shift day, each broken batch."""
    if as_json:
        typer.echo(json.dumps(s.as_dict(), indent=2))
        return
    last = s.start + dt.timedelta(days=s.days - 1)
    typer.echo(
        f"simulated {s.scenario} {s.start}..{last}: {s.total_events:,} events, "
        f"{sum(s.items_per_day.values()):,} items, {sum(s.users_per_day.values()):,} users "
        f"→ {raw_url}"
    )
    if s.shift_day is not None:
        typer.echo(f"shift starts {s.start + dt.timedelta(days=s.shift_day)} (day {s.shift_day})")
    for f in s.faults:
        typer.echo(f"fault {f['date']} {f['table']}: {f['kind']} ({f['file']})")


def register(app: typer.Typer) -> None:
    """Add ``flywheel simulate`` to the CLI."""
    app.command("simulate")(simulate_cmd)
