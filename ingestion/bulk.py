"""Bulk history ingest: every day with raw data in a range, in one process.

:func:`ingest_range` runs :func:`ingestion.pipeline.ingest_day` (the same code, the same verdicts)
for each day in order, with one :class:`validation.history.MemoryHistory` shared by the days:
the event ids and item ids already validated and the volume of published days are loaded from
the lake once and kept up to date in memory, so day N does not re-read the N-1 days before it;
and the days' writes run in a thread of their own (:class:`Writes`) while the next day is checked.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from core.contract import TABLES
from core.lake import RAW, get_lake
from ingestion.pipeline import RawExpired, day_of, ingest_day
from validation.config import GateConfig
from validation.gate import GateFailure
from validation.history import MemoryHistory

if TYPE_CHECKING:
    from core.lake import Lake

log = logging.getLogger(__name__)


def raw_days(lake: Lake, start: dt.date, end: dt.date) -> list[dt.date]:
    """Days in ``[start, end]`` with at least one raw file of any table, oldest first."""
    days = {d for table in TABLES for d in lake.partitions(RAW, table) if start <= d <= end}
    return sorted(days)


def ingest_range(
    start: dt.date | str,
    end: dt.date | str,
    lake: Lake | None = None,
    config: GateConfig | None = None,
    now: dt.datetime | None = None,
    out: Callable[[str], Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Ingest every day with raw data in ``[start, end]`` (inclusive), oldest first.

    Days without raw files are skipped; a day that fails the gate is recorded and the next day
    runs (as separate runs would); a published day whose raw events are gone (past the raw
    retention, :class:`ingestion.pipeline.RawExpired`) is logged and skipped, its publication
    standing (a daily run of it raises). Returns ``{"days", "published", "quarantined_days"
    (ISO days with a failed table), "rows_quarantined" (rows split off published tables),
    "rows" (events published), "last_published" (ISO day or ``None``), "failures" (ISO day ->
    message), "skipped" (ISO day -> why: raw events expired), "seconds"}``. ``published`` counts the days whose events were published. ``out`` receives
    a progress line now and then.
    """
    start, end = day_of(start), day_of(end)
    lake = lake or get_lake()
    config = config or GateConfig.from_settings()
    if config.gx_every_batch is None:  # a history's thousands of clean days: screen first
        config = config.model_copy(update={"gx_every_batch": False})
    days = raw_days(lake, start, end)
    history = MemoryHistory.load(lake)
    began = time.monotonic()
    res: dict[str, Any] = {
        "days": len(days),
        "published": 0,
        "quarantined_days": [],
        "rows_quarantined": 0,
        "rows": 0,
        "last_published": None,
        "failures": {},
        "skipped": {},
    }
    with Writes() as writes:
        for i, day in enumerate(days):
            summary = _one_day(day, lake, config, now, run_id, history, writes, res)
            if summary.get("published"):
                res["published"] += 1
                res["rows"] += int(summary["rows"])
                res["last_published"] = day.isoformat()
            res["rows_quarantined"] += int(summary.get("rows_quarantined", 0))
            if out is not None and (i + 1) % 250 == 0:
                out(f"{i + 1}/{len(days)} days, {len(res['quarantined_days'])} quarantined")
    res["seconds"] = round(time.monotonic() - began, 1)
    if out is not None:
        out(
            f"{res['published']} of {len(days)} days published, "
            f"{len(res['quarantined_days'])} quarantined, {res['rows_quarantined']} rows "
            f"quarantined in {res['seconds']} s"
        )
    return res


def _one_day(day, lake, config, now, run_id, history, writes, res) -> dict[str, Any]:
    """``ingest_day`` of one day of the range; a gate failure is recorded in ``res``, a day
    whose raw events expired is skipped (``res["skipped"]``)."""
    try:
        return ingest_day(day, lake, config, now, run_id, history=history, writer=writes.submit)
    except GateFailure as exc:
        res["quarantined_days"].append(day.isoformat())
        res["failures"][day.isoformat()] = str(exc)
        return exc.summary or {}
    except RawExpired as exc:
        log.warning("skipped %s: %s", day, exc)
        res["skipped"][day.isoformat()] = str(exc)
        return {}


class Writes:
    """Threads that run the days' writes while the next days are checked: the local lake syncs
    every file to disk, most of a small day's time, and waiting on the disk needs no CPU. A
    day's writes run in order in one thread; days touch disjoint keys, so several days write
    at once. At most ``pending`` days wait; a failed write is raised by the next
    :meth:`submit` or on exit."""

    def __init__(self, threads: int = 4, pending: int = 32):
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest-writes")
        self.futures: deque[Future] = deque()
        self.pending = pending

    def submit(self, write: Callable[[], None]) -> None:
        while self.futures and (self.futures[0].done() or len(self.futures) >= self.pending):
            self.futures.popleft().result()
        self.futures.append(self.pool.submit(write))

    def __enter__(self) -> Writes:
        return self

    def __exit__(self, *exc) -> None:
        try:
            while self.futures:
                self.futures.popleft().result()
        finally:
            self.pool.shutdown(wait=True)
