"""Small pure helpers of the ``build_features`` DAG (kept here so they are unit-testable)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from core.contract import EVENTS
from core.lake import VALIDATED, Lake
from features.compute import FeatureError, featurised_days


def days_from_events(
    extras: Iterable[Mapping[str, Any] | None],
    param_day: str | None,
    validated: Collection[dt.date] | None = None,
    param_end: str | None = None,
) -> list[str]:
    """Sorted distinct ISO days to build from asset-event metadata, else from the params.

    An event names one day (``date``, else ``day``), a list (``days``) or a range (``start`` and
    ``end``, both included: a bulk ingest of a history). A range expands to its days with
    validated events when ``validated`` is given (a history has days without any), else to every
    day. Without events, the ``day`` param, or the range ``day`` .. ``end`` when ``end`` is set.
    """
    days: set[str] = set()
    for extra in extras:
        extra = extra or {}
        value = extra.get("date") or extra.get("day")
        if value:
            days.add(_iso_day(value))
        listed = extra.get("days")
        if isinstance(listed, list | tuple):  # a bulk ingest's "days" is a count, not a list
            days.update(_iso_day(v) for v in listed)
        if extra.get("start") and extra.get("end"):
            days.update(_expand(extra["start"], extra["end"], validated))
    if not days and param_day:
        days.update(_expand(param_day, param_end or param_day, validated if param_end else None))
    return sorted(days)


def _expand(start: Any, end: Any, validated: Collection[dt.date] | None) -> list[str]:
    first, last = (dt.date.fromisoformat(_iso_day(v)) for v in (start, end))
    if last < first:
        raise FeatureError(f"range {first} .. {last}: the end is before the start")
    if validated is not None:
        return [d.isoformat() for d in validated if first <= d <= last]
    return [(first + dt.timedelta(days=k)).isoformat() for k in range((last - first).days + 1)]


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


def asset_metadata(
    materialized: list[dict], freshness: dict, computed: dict | None = None
) -> dict[str, Any]:
    """Metadata of the ``flywheel://features`` event.

    ``date`` is the newest day this run built (what downstream DAGs act on), ``days`` all of
    them (a run over a range lists its ``first``, ``last`` and count instead, in ``range``); a
    newer day only re-materialized to keep the online store current is ``restored``.
    """
    built = [m for m in materialized if not m.get("restored")]
    newest = max(built, key=lambda m: m["day"])
    extra: dict[str, Any] = {
        "date": newest["day"],
        "days": [m["day"] for m in built],
        "rows": newest["rows"],
        "rows_total": sum(sum(m["rows"].values()) for m in built),
        "interval": newest["interval"],
        "restored": [m["day"] for m in materialized if m.get("restored")],
        "freshness": freshness,
    }
    if computed is not None and computed.get("days", 1) > 1:
        extra["range"] = {k: computed[k] for k in ("first", "last", "days")}
    return extra
