"""Small pure helpers of the ``build_features`` DAG (kept here so they are unit-testable)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from core.contract import EVENTS
from core.lake import VALIDATED, Lake
from features.compute import FeatureError, featurised_days


def days_from_events(
    extras: Iterable[Mapping[str, Any] | None], param_day: str | None
) -> list[str]:
    """Sorted distinct ISO days from asset-event metadata (``date``, else ``day``), else the param."""
    days = set()
    for extra in extras:
        value = (extra or {}).get("date") or (extra or {}).get("day")
        if value:
            days.add(_iso_day(value))
    if not days and param_day:
        days.add(_iso_day(param_day))
    return sorted(days)


def unbuilt_days(lake: Lake, after: dt.date) -> list[str]:
    """Validated event days after ``after`` that lack a feature partition in some view.

    Airflow folds asset events that arrive while a queued trigger is pending into that trigger
    without handing them to the run it creates (they reach only a later run, if another event
    comes); those days come after the run's newest event day. Building them too, oldest first,
    means no day is left behind by that.
    """
    validated = set(lake.partitions(VALIDATED, EVENTS.name))
    return sorted(d.isoformat() for d in validated - featurised_days(lake) if d > after)


def _iso_day(value: Any) -> str:
    try:
        return dt.date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        raise FeatureError(f"not a day (YYYY-MM-DD): {value!r}") from None


def asset_metadata(materialized: list[dict], freshness: dict) -> dict[str, Any]:
    """Metadata of the ``flywheel://features`` event.

    ``date`` is the newest day this run built (what downstream DAGs act on), ``days`` all of
    them; a newer day only re-materialized to keep the online store current is ``restored``.
    """
    built = [m for m in materialized if not m.get("restored")]
    newest = max(built, key=lambda m: m["day"])
    return {
        "date": newest["day"],
        "days": [m["day"] for m in built],
        "rows": newest["rows"],
        "rows_total": sum(sum(m["rows"].values()) for m in built),
        "interval": newest["interval"],
        "restored": [m["day"] for m in materialized if m.get("restored")],
        "freshness": freshness,
    }
