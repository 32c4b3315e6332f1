"""The data suite's inputs from outside the batch: the data interval and earlier days.

The rules of :func:`validation.suites.data_suite` that need more than the batch take GX suite
parameters, computed here when a day is validated:

* the data interval of the day ``D`` (``[D 00:00, D+1 00:00)`` UTC) widened by the tolerance;
* event ids of the batch already validated on another day (:func:`seen_event_ids`);
* item ids of the batch absent from the catalog so far (:func:`unknown_item_ids`);
* the band of event rows from the trailing days' recorded outcomes (:func:`volume_bounds`).

Cross-day rules read only what they need from earlier validated partitions: the ``event_id``
column of the other days and the ``item_id`` column of earlier items. This is linear in the
history, fine for months of days at this scale; past that, keep a per-day sorted id index or a
Bloom filter next to each partition and bound the look-back window.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from core.contract import ISO_COUNTRIES
from core.lake import VALIDATED
from validation.results import read_result

if TYPE_CHECKING:
    import pyarrow as pa

    from core.lake import Lake
    from validation.config import GateConfig


def interval(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The data interval of ``day``: ``[D 00:00, D+1 00:00)`` UTC."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def seen_event_ids(
    lake: Lake, day: dt.date, batch_ids: pa.ChunkedArray | pa.Array, distinct: bool = False
) -> list[str]:
    """Batch event ids already present in validated events of OTHER days (not ``day`` itself).

    ``distinct``: ``batch_ids`` are already the batch's distinct non-null ids.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    found: list[pa.Array] = []
    batch = None
    for other in lake.partitions(VALIDATED, "events"):
        if other == day:
            continue  # a re-run replaces its own partition: its ids are not duplicates
        known = lake.read("events", [other], ["event_id"])
        if known is None:
            continue
        if batch is None:  # only when there is history to compare with
            batch = batch_ids if distinct else pc.unique(batch_ids.drop_null())
        hit = pc.filter(batch, pc.is_in(batch, value_set=known.column("event_id")))
        found += hit.chunks if isinstance(hit, pa.ChunkedArray) else [hit]
    if not found:
        return []
    return pc.unique(pa.chunked_array(found, type=pa.string())).to_pylist()


def unknown_item_ids(
    lake: Lake, day: dt.date, batch_items: pa.Array, same_day: pa.ChunkedArray | None
) -> list[str]:
    """Which of ``batch_items`` (the batch's distinct non-null item ids: the column's
    dictionary) are absent from validated items before ``day`` and from the day's items."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = batch_items
    sources = [same_day] if same_day is not None else []
    for other in lake.partitions(VALIDATED, "items"):
        if other < day:
            known = lake.read("items", [other], ["item_id"])
            if known is not None:
                sources.append(known.column("item_id"))
    for known in sources:
        if len(missing) == 0:
            break
        known = known.cast(pa.string())
        missing = pc.filter(missing, pc.invert(pc.is_in(missing, value_set=known)))
    return missing.to_pylist()


def volume_bounds(lake: Lake, day: dt.date, config: GateConfig) -> tuple[int, int | None]:
    """Row band for events of ``day`` from the trailing days' validated counts."""
    counts = []
    for back in range(1, config.volume_window_days + 1):
        rec = read_result(lake, day - dt.timedelta(days=back), "events")
        if rec and rec.get("success") and rec.get("published", True):
            counts.append(int(rec["rows"]))
    if len(counts) < config.volume_min_history_days:
        return config.min_event_rows, None
    avg = sum(counts) / len(counts)
    low = max(config.min_event_rows, int(avg * config.volume_min_ratio))
    return low, int(avg * config.volume_max_ratio) + 1


def table_parameters(
    table: str, day: dt.date, config: GateConfig, data: pa.Table
) -> dict[str, Any]:
    """Suite parameters of the ``items`` or ``users`` data suite for the batch ``data``."""
    import pyarrow.compute as pc

    end = interval(day)[1] + dt.timedelta(minutes=config.ts_tolerance_minutes)
    if table == "users":
        present = pc.unique(data.column("country").drop_null()).to_pylist()
        return {"ts_max": end, "iso_countries": sorted(set(present) & ISO_COUNTRIES)}
    return {"ts_max": end}


def events_parameters(
    lake: Lake,
    day: dt.date,
    config: GateConfig,
    now: dt.datetime,
    event_ids: pa.Array | pa.ChunkedArray,
    item_ids: pa.Array,
    same_day_items: pa.ChunkedArray | None,
    ids_distinct: bool = False,
) -> dict[str, Any]:
    """Suite parameters of the ``events`` data suite.

    ``event_ids``: the batch's event ids (``ids_distinct``: already its distinct non-null ids);
    ``item_ids``: the batch's distinct item ids; ``same_day_items``: the day's items, if any.
    """
    start, end = interval(day)
    tol = dt.timedelta(minutes=config.ts_tolerance_minutes)
    low, high = volume_bounds(lake, day, config)
    return {
        "event_ids_seen": seen_event_ids(lake, day, event_ids, distinct=ids_distinct),
        "unknown_item_ids": unknown_item_ids(lake, day, item_ids, same_day_items),
        "ts_min": start - tol,
        "ts_max": end + tol,
        "now": now,
        "min_rows": low,
        "max_rows": high,
    }
