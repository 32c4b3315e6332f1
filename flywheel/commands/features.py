"""``flywheel features …``: the feature store without Airflow (get, apply, compute, materialize,
build a range)."""

from __future__ import annotations

import datetime as dt
import json
import time

import typer

from core.contract import EVENTS
from core.lake import VALIDATED, get_lake
from core.privacy import pseudonymise
from features.compute import FeatureError
from features.pipeline import days_from_events
from features.store import (
    apply_if_changed,
    check_freshness,
    compute_day,
    compute_days,
    materialize_days,
    materialize_range,
    online_features,
    render_yaml,
    require_online,
)


def _day(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise FeatureError(f"--day must be YYYY-MM-DD, got {value!r}") from None


def _records(frame) -> dict:
    """First row of a frame as JSON-ready values (NaN → null, numpy scalars → Python)."""
    row = json.loads(frame.head(1).to_json(orient="records", date_format="iso"))
    return row[0] if row else {}


def get_cmd(
    user: str = typer.Option(None, "--user", help="Raw user id (always hashed)"),
    pseudonym: str = typer.Option(
        None, "--pseudonym", help="A pseudonym (p_…) as stored in validated data, used as is"
    ),
    item: str = typer.Option(None, "--item", help="Item id"),
) -> None:
    """Print the online features of recommender_v1 for a user and/or an item as JSON."""
    if user is not None and pseudonym is not None:
        raise FeatureError("give --user (a raw id) or --pseudonym, not both")
    if user is None and pseudonym is None and item is None:
        raise FeatureError("give --user or --pseudonym, and/or --item")
    uid = pseudonymise(user) if user is not None else pseudonym
    frames = online_features(
        user_ids=[uid] if uid is not None else None,
        item_ids=[item] if item is not None else None,
    )
    out = {}
    if "users" in frames:
        require_online(frames["users"], "user_id")
        out["user"] = _records(frames["users"])
    if "items" in frames:
        require_online(frames["items"], "item_id")
        out["item"] = _records(frames["items"])
    typer.echo(json.dumps(out, indent=2))


def apply_cmd() -> None:
    """`feast apply` feature_repo/ when it differs from the registry; render the store yaml."""
    result = apply_if_changed()
    result["feature_store_yaml"] = str(render_yaml())
    typer.echo(json.dumps(result, indent=2))


def compute_cmd(day: str = typer.Option(..., "--day", help="YYYY-MM-DD")) -> None:
    """Compute a day's feature partitions from validated data."""
    typer.echo(json.dumps(compute_day(_day(day)), indent=2))


def materialize_cmd(day: str = typer.Option(..., "--day", help="YYYY-MM-DD")) -> None:
    """Apply if needed, materialize a day into the online store, check freshness."""
    apply_if_changed()
    done = materialize_days([_day(day)])
    newest = max(dt.date.fromisoformat(m["day"]) for m in done)
    typer.echo(json.dumps({"materialized": done, "freshness": check_freshness(newest)}, indent=2))


def build_cmd(
    start: str = typer.Option(..., "--start", help="first day, YYYY-MM-DD"),
    end: str = typer.Option(None, "--end", help="last day, YYYY-MM-DD (default: --start)"),
) -> None:
    """Compute, apply, materialize and check a range of days in one pass (what the DAG does)."""
    first, last = _day(start), _day(end or start)
    lake = get_lake()
    days = days_from_events(
        [], first.isoformat(), lake.partitions(VALIDATED, EVENTS.name), last.isoformat()
    )
    if not days:
        raise FeatureError(
            f"no validated events between {first} and {last} "
            f"({lake.url(f'{VALIDATED}/{EVENTS.name}/')}); ingest that range first"
        )
    began = time.monotonic()
    computed = compute_days([dt.date.fromisoformat(d) for d in days])
    seconds = {"compute": round(time.monotonic() - began, 1)}
    apply_if_changed()
    began = time.monotonic()
    done = materialize_range(first, last)
    seconds["materialize"] = round(time.monotonic() - began, 1)
    newest = max(dt.date.fromisoformat(m["day"]) for m in done)
    out = {"computed": computed, "materialized": done, "freshness": check_freshness(newest)}
    typer.echo(json.dumps({**out, "seconds": seconds}, indent=2))


def register(app: typer.Typer) -> None:
    """Add ``flywheel features get|apply|compute|materialize|build`` to ``app``."""
    features = typer.Typer(
        help="Feast feature store: online lookups, apply, compute, materialize, build a range.",
        no_args_is_help=True,
    )
    features.command("get")(get_cmd)
    features.command("apply")(apply_cmd)
    features.command("compute")(compute_cmd)
    features.command("materialize")(materialize_cmd)
    features.command("build")(build_cmd)
    app.add_typer(features, name="features")
