"""The data suite's inputs from outside the batch: the data interval and earlier days.

The rules of :func:`validation.suites.data_suite` that need more than the batch take GX suite
parameters, computed here when a day is validated:

* the data interval of the day ``D`` (``[D 00:00, D+1 00:00)`` UTC) widened by the tolerance;
* event ids of the batch already validated on another day (:meth:`History.seen_event_ids`);
* item ids of the batch absent from the catalog so far (:meth:`History.unknown_item_ids`);
* the band of event rows learnt from earlier published days (:func:`volume_band`).

Two sources answer the same questions: :class:`LakeHistory` reads the lake when asked (one day
at a time: what ``flywheel ingest DAY`` and the daily DAG run use), :class:`MemoryHistory` loads
the lake once and is kept up to date as days are published (a bulk ingest of thousands of days,
:mod:`ingestion.bulk`; reading every earlier partition per day would be quadratic). Both give the
same answers, so a day gets the same verdict either way.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import statistics
from typing import TYPE_CHECKING, Any

from core.contract import ISO_COUNTRIES
from core.lake import VALIDATED
from validation.results import read_result

if TYPE_CHECKING:
    import pyarrow as pa

    from core.lake import Lake
    from validation.config import GateConfig

#: 1.4826 x MAD estimates a normal standard deviation.
MAD_TO_SD = 1.4826


def interval(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The data interval of ``day``: ``[D 00:00, D+1 00:00)`` UTC."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _counted(rec: dict[str, Any] | None) -> int | None:
    """The event rows of a recorded events outcome that was published, else ``None``."""
    if rec and rec.get("published", rec.get("success")) and rec.get("rows") is not None:
        return int(rec["rows"])
    return None


class History:
    """What earlier days validated: the questions the cross-day rules ask."""

    def seen_event_ids(self, day: dt.date, batch_ids: pa.Array) -> list[str]:
        """Which of ``batch_ids`` (distinct, non-null) were validated on another day."""
        raise NotImplementedError

    def unknown_item_ids(
        self, day: dt.date, batch_items: pa.Array, same_day: pa.ChunkedArray | None
    ) -> list[str]:
        """Which of ``batch_items`` (distinct, non-null) are neither in validated items before
        ``day`` nor in ``same_day`` (the day's items that passed)."""
        raise NotImplementedError

    def volume_history(self, day: dt.date, n: int) -> list[tuple[dt.date, int]]:
        """``(day, rows)`` of the latest ``n`` days before ``day`` whose events were published."""
        raise NotImplementedError

    def published(self, day: dt.date, table: str, data: pa.Table | None, rows: int) -> None:
        """``table`` of ``day`` was published as ``data`` (``rows``: the batch's rows)."""

    def withheld(self, day: dt.date, table: str) -> None:
        """``table`` of ``day`` failed: it is not in the validated data (an earlier run's
        partition of it is withdrawn, see :func:`ingestion.publish.withdraw`)."""


def _filter_unknown(missing: pa.Array, sources: list) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    for known in sources:
        if len(missing) == 0:
            break
        known = known.cast(pa.string())
        missing = pc.filter(missing, pc.invert(pc.is_in(missing, value_set=known)))
    return missing.to_pylist()


class LakeHistory(History):
    """Answers from the lake's validated partitions and recorded outcomes, read when asked."""

    def __init__(self, lake: Lake):
        self.lake = lake

    def seen_event_ids(self, day: dt.date, batch_ids: pa.Array) -> list[str]:
        import pyarrow as pa
        import pyarrow.compute as pc

        found: list[pa.Array] = []
        for other in self.lake.partitions(VALIDATED, "events"):
            if other == day:
                continue  # a re-run replaces its own partition: its ids are not duplicates
            known = self.lake.read("events", [other], ["event_id"])
            if known is None:
                continue
            hit = pc.filter(batch_ids, pc.is_in(batch_ids, value_set=known.column("event_id")))
            found += hit.chunks if isinstance(hit, pa.ChunkedArray) else [hit]
        if not found:
            return []
        return pc.unique(pa.chunked_array(found, type=pa.string())).to_pylist()

    def unknown_item_ids(
        self, day: dt.date, batch_items: pa.Array, same_day: pa.ChunkedArray | None
    ) -> list[str]:
        sources = [same_day] if same_day is not None else []
        for other in self.lake.partitions(VALIDATED, "items"):
            if other < day:
                known = self.lake.read("items", [other], ["item_id"])
                if known is not None:
                    sources.append(known.column("item_id"))
        return _filter_unknown(batch_items, sources)

    def volume_history(self, day: dt.date, n: int) -> list[tuple[dt.date, int]]:
        out: list[tuple[dt.date, int]] = []
        for other in reversed(self.lake.partitions(VALIDATED, "events")):
            if other >= day:
                continue
            rows = _counted(read_result(self.lake, other, "events"))
            if rows is not None:
                out.append((other, rows))
                if len(out) == n:
                    break
        return out[::-1]


class MemoryHistory(History):
    """The lake's history loaded once, then kept up to date by :meth:`published`.

    Holds the day of every validated event id and the first day of every validated item id
    (Python dicts: a lookup per id of the batch, whatever the length of the history) and the
    published event rows per day.
    """

    def __init__(self) -> None:
        self.event_day: dict[str, dt.date] = {}
        self.events_of: dict[dt.date, list[str]] = {}
        self.item_days: dict[str, list[dt.date]] = {}
        self.items_of: dict[dt.date, list[str]] = {}
        self.volume: dict[dt.date, int] = {}
        self._days: list[dt.date] = []  # sorted keys of volume

    @classmethod
    def load(cls, lake: Lake) -> MemoryHistory:
        """Everything the lake validated so far (one read per partition, once)."""
        out = cls()
        for day in lake.partitions(VALIDATED, "events"):
            known = lake.read("events", [day], ["event_id"])
            if known is not None:
                out._set_events(day, known.column("event_id").to_pylist())
            rows = _counted(read_result(lake, day, "events"))
            if rows is not None:
                out._set_volume(day, rows)
        for day in lake.partitions(VALIDATED, "items"):
            known = lake.read("items", [day], ["item_id"])
            if known is not None:
                out._set_items(day, known.column("item_id").to_pylist())
        return out

    def _set_events(self, day: dt.date, ids: list[str]) -> None:
        for old in self.events_of.pop(day, []):
            if self.event_day.get(old) == day:
                del self.event_day[old]
        self.events_of[day] = ids
        for i in ids:
            self.event_day[i] = day

    def _set_items(self, day: dt.date, ids: list[str]) -> None:
        for old in self.items_of.pop(day, []):
            days = self.item_days.get(old, [])
            if day in days:
                days.remove(day)
        self.items_of[day] = ids
        for i in ids:
            self.item_days.setdefault(i, []).append(day)

    def _set_volume(self, day: dt.date, rows: int | None) -> None:
        if day in self.volume:
            self._days.remove(day)
            del self.volume[day]
        if rows is not None:
            self.volume[day] = rows
            bisect.insort(self._days, day)

    def seen_event_ids(self, day: dt.date, batch_ids: pa.Array) -> list[str]:
        get = self.event_day.get
        return [i for i in batch_ids.to_pylist() if (d := get(i)) is not None and d != day]

    def unknown_item_ids(
        self, day: dt.date, batch_items: pa.Array, same_day: pa.ChunkedArray | None
    ) -> list[str]:
        get = self.item_days.get
        missing = [i for i in batch_items.to_pylist() if not any(d < day for d in get(i, ()))]
        if not missing or same_day is None:
            return missing
        import pyarrow as pa

        return _filter_unknown(pa.array(missing, pa.string()), [same_day])

    def volume_history(self, day: dt.date, n: int) -> list[tuple[dt.date, int]]:
        end = bisect.bisect_left(self._days, day)
        return [(d, self.volume[d]) for d in self._days[max(0, end - n) : end]]

    def published(self, day: dt.date, table: str, data: pa.Table | None, rows: int) -> None:
        ids = [] if data is None else data.column(f"{table[:-1]}_id").to_pylist()
        if table == "events":
            self._set_events(day, ids)
            self._set_volume(day, rows)
        elif table == "items":
            self._set_items(day, ids)

    def withheld(self, day: dt.date, table: str) -> None:
        if table == "events":  # the band counts days whose latest outcome was published
            self._set_events(day, [])  # (an earlier publication of the day is withdrawn)
            self._set_volume(day, None)
        elif table == "items":
            self._set_items(day, [])


def volume_band(
    counts: list[tuple[dt.date, int]], day: dt.date, config: GateConfig
) -> tuple[int, int | None]:
    """``(min_rows, max_rows)`` for the events of ``day`` from earlier published ``counts``.

    Robust on log counts: the centre is the median of ``log1p(rows)`` (of the same weekday when
    the window holds ``volume_weekday_min_days`` of them), the spread 1.4826 x the median absolute
    deviation (at least ``volume_min_spread``), the band from the centre - ``volume_k_low`` to
    + ``volume_k_high`` spreads.
    Until ``volume_min_history_days`` days were published only ``min_event_rows`` applies.
    """
    if len(counts) < config.volume_min_history_days:
        return config.min_event_rows, None
    logs = [math.log1p(rows) for _, rows in counts]
    centre = statistics.median(logs)
    spread = MAD_TO_SD * statistics.median(abs(x - centre) for x in logs)
    same = [x for (d, _), x in zip(counts, logs, strict=True) if d.weekday() == day.weekday()]
    if len(same) >= config.volume_weekday_min_days:
        centre = statistics.median(same)
    spread = max(spread, config.volume_min_spread)
    low = math.floor(math.expm1(centre - config.volume_k_low * spread))
    high = math.ceil(math.expm1(centre + config.volume_k_high * spread))
    return max(config.min_event_rows, low), high


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
    history: History,
    day: dt.date,
    config: GateConfig,
    now: dt.datetime,
    event_ids: pa.Array,
    item_ids: pa.Array,
    same_day_items: pa.ChunkedArray | None,
) -> dict[str, Any]:
    """Suite parameters of the ``events`` data suite.

    ``event_ids``: the batch's distinct non-null event ids; ``item_ids``: its distinct non-null
    item ids; ``same_day_items``: the day's items that passed, if any.
    """
    start, end = interval(day)
    tol = dt.timedelta(minutes=config.ts_tolerance_minutes)
    low, high = volume_band(history.volume_history(day, config.volume_window_days), day, config)
    return {
        "event_ids_seen": history.seen_event_ids(day, event_ids),
        "unknown_item_ids": history.unknown_item_ids(day, item_ids, same_day_items),
        "ts_min": start - tol,
        "ts_max": end + tol,
        "now": now,
        "min_rows": low,
        "max_rows": high,
    }
