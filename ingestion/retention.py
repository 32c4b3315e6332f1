"""Retention of raw data: ``raw/`` holds raw user ids, so its partitions are deleted once they
are older than ``FLYWHEEL_RAW_RETENTION_DAYS`` (:attr:`core.settings.Settings.raw_retention_days`)
and their day was validated.

What is deleted, per raw partition ``raw/<table>/dt=D/`` with ``D`` before the window:

* a gated table (``events``, ``items``, ``users``): only the files its latest quality result
  (``quality/results/dt=D/<table>.json``) validated, and only when that result says the table
  was published (and not withdrawn since). A day never ingested, a table that failed (its files
  are in ``quarantine/``, kept as evidence) or a file delivered after the validation stays;
* a side table (``impressions``, written by serving): every file, once the events of ``D`` (the
  feedback on those impressions) were published.

``validated/`` (pseudonymised) and ``quarantine/`` are not touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from core.contract import SIDE_TABLES, TABLES
from core.lake import RAW, get_lake
from core.settings import get_settings
from validation.results import read_result

if TYPE_CHECKING:
    from core.lake import Lake

log = logging.getLogger(__name__)


def _validated_keys(lake: Lake, table: str, day: dt.date, keys: list[str]) -> list[str]:
    """The ``keys`` of ``raw/<table>/dt=day/`` whose validation allows deleting them."""
    gated = table if table in TABLES else "events"  # impressions: judged with their feedback
    rec = read_result(lake, day, gated)
    if not rec or rec.get("published") is not True or rec.get("withdrawn"):
        return []
    if table not in TABLES:
        return keys
    validated = set(rec.get("files") or [])
    return [k for k in keys if k in validated]


def expire_raw(
    lake: Lake | None = None,
    today: dt.date | None = None,
    keep_days: int | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Delete the raw files of validated days older than ``keep_days`` before ``today``.

    ``keep_days``: default the setting ``raw_retention_days``; ``0`` or ``None`` keeps
    everything. ``today``: the UTC date by default (a DAG passes its data interval's end).
    Days strictly before ``today - keep_days`` are expired. Returns the keys deleted (that
    would be, with ``dry_run``).
    """
    lake = lake or get_lake()
    if keep_days is None:
        keep_days = get_settings().raw_retention_days
    if not keep_days:
        return []
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = today - dt.timedelta(days=keep_days)
    expired: list[str] = []
    for table in (*TABLES, *SIDE_TABLES):
        for day in lake.partitions(RAW, table):
            if day >= cutoff:
                break  # (partitions are sorted)
            keys = _validated_keys(lake, table, day, lake.partition_files(RAW, table, day))
            for key in keys:
                if not dry_run:
                    lake.delete(key)
            expired += keys
    log.info("raw retention (%s days before %s): %d files expired", keep_days, today, len(expired))
    return expired
