"""Ingestion of one day: raw files → quality gate → pseudonymised, validated partitions.

:func:`ingest_day` is what the ``ingest_events`` DAG and ``flywheel ingest DAY`` run. For the day
``D`` (data interval ``[D 00:00, D+1 00:00)`` UTC):

1. find the raw files of ``items``, ``users`` and ``events`` under ``raw/<table>/dt=D/``;
2. read each (Parquet or UTF-8 CSV); an unreadable, empty or non-UTF-8 file is a gate failure;
3. conform types losslessly to the contract (ints → float, any timestamp unit → µs UTC);
4. validate all three tables with Great Expectations (:mod:`validation.gate`): the schema suite
   per file, then the data suite on the day's batch, with what it needs from earlier days
   (:mod:`validation.history`);
5. if every table passed: pseudonymise ``user_id``, write ``validated/<table>/dt=D/`` (items and
   users first, events last), each partition replaced atomically (the Parquet bytes are made in
   a thread while GX checks the events, and written only once the whole day has passed);
   if any failed: move the failing tables' raw files to ``quarantine/`` (their full result to
   ``quality/quarantined/``), publish nothing of ``D`` (passing tables stay in ``raw/`` for the
   re-run), and raise :class:`validation.gate.GateFailure`;
6. record each table's outcome under ``quality/results/dt=D/<table>.json`` (latest) and
   ``quality/runs/dt=D/<table>/<validation_id>.json`` (every run), with its HTML report at
   ``quality/reports/dt=D/<table>.html``, for the UI (:mod:`validation.results`).

The steps live in modules of their own: :mod:`ingestion.read` (1-2), :mod:`ingestion.conform`
(3), :mod:`ingestion.gate` (4), :mod:`ingestion.publish` (5); this module runs them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.contract import TABLES
from core.lake import VALIDATED, get_lake, partition_prefix
from core.privacy import pseudonym_key
from ingestion.conform import encode_strings, one_chunk
from ingestion.gate import TableCheck, check_event_values, check_files, check_table_values
from ingestion.publish import TABLE_ORDER, Pseudonyms, partition_files, publish, quarantine_failed
from ingestion.read import read_and_encode, read_files
from validation import results
from validation.config import DEFAULT
from validation.gate import Gate, GateFailure, failure_message

if TYPE_CHECKING:
    import pyarrow as pa

    from core.lake import Lake
    from validation.config import GateConfig

Partitions = dict[str, dict[str, bytes]]  # table -> file name -> Parquet bytes


def day_of(value: dt.date | dt.datetime | str) -> dt.date:
    """A day from a date, a datetime (its UTC date) or ``YYYY-MM-DD``."""
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


@dataclass(frozen=True)
class DayRun:
    """One run of :func:`ingest_day`: what its steps share."""

    day: dt.date
    lake: Lake
    gate: Gate
    now: dt.datetime  # bounds "not in the future"; the outcomes' ``validated_at``
    validation_id: str
    run_id: str | None


def ingest_day(
    day: dt.date | str,
    lake: Lake | None = None,
    config: GateConfig | None = None,
    now: dt.datetime | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Validate and publish one day; returns the summary (the asset metadata).

    Raises :class:`validation.gate.GateFailure` (nothing published) when any table fails.
    ``now`` bounds "not in the future" (the wall clock by default; tests pin it).
    """
    day = day_of(day)
    lake = lake or get_lake()
    now = now or dt.datetime.now(dt.UTC)
    key = pseudonym_key()  # fail fast (production without a secret) before touching data
    validation_id = f"{day.isoformat()}-{uuid.uuid4().hex[:12]}"
    run = DayRun(day, lake, Gate.cached(config or DEFAULT), now, validation_id, run_id)
    checks, files, encoded = _gate_day(run, key)
    failed = {t: c for t, c in checks.items() if c.findings}
    outcomes = {t: _outcome(run, c, published=not failed) for t, c in checks.items()}
    where = quarantine_failed(lake, day, failed, outcomes) if failed else {}
    if not failed:
        publish(lake, day, files)
    for outcome in outcomes.values():
        results.record(lake, outcome)
    if failed:
        findings = {t: c.findings for t, c in failed.items()}
        raise GateFailure(failure_message(day.isoformat(), validation_id, findings, where))
    return _summary(run, checks, encoded)


def _gate_day(run: DayRun, key: bytes) -> tuple[dict[str, TableCheck], Partitions, pa.Table | None]:
    """Gate the day's three tables: their checks, the validated partitions' bytes (empty unless
    every table passed) and the events' batch through :func:`encode_strings`.

    GX is pure Python (it holds the GIL); Arrow encoding and Parquet writing release it. So one
    worker thread does the Arrow work while GX checks data: the events' dictionary encoding
    during the items and users suites, then the pseudonymised Parquet bytes of each table once
    every earlier suite passed (the events' while their own data suite runs). Those bytes are
    published only if the whole day passed; until then nothing is written.
    """
    lake, day, gate = run.lake, run.day, run.gate
    files: dict[str, Future[dict[str, bytes]]] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest") as worker:
        raw = {t: read_files(lake, day, t) for t in ("items", "users")}  # small: read first
        reading = worker.submit(read_and_encode, lake, day, "events")  # (Arrow's pool is shared)
        checks: dict[str, TableCheck] = {}
        for table in ("items", "users"):
            checks[table] = check_files(gate, day, table, raw[table])
            check_table_values(gate, day, checks[table])
        pseudonyms = None
        if not any(c.findings for c in checks.values()):
            # hash the users' ids while the worker reads and encodes the events
            users = checks["users"].data
            pseudonyms = Pseudonyms([users["user_id"]] if users is not None else [], key)
            for table in ("items", "users"):
                data = checks[table].data
                files[table] = worker.submit(partition_files, table, data, pseudonyms)
        raw_events, encoded = reading.result()
        checks["events"] = check_files(gate, day, "events", raw_events)
        encoded = _gate_events(run, worker, checks, encoded, pseudonyms, files)
        if any(c.findings for c in checks.values()):
            for future in files.values():
                future.cancel()
            return checks, {}, encoded
        return checks, {t: files[t].result() for t in TABLE_ORDER}, encoded


def _gate_events(
    run: DayRun,
    worker: ThreadPoolExecutor,
    checks: dict[str, TableCheck],
    encoded: pa.Table | None,
    pseudonyms: Pseudonyms | None,
    files: dict[str, Future[dict[str, bytes]]],
) -> pa.Table | None:
    """The events' data suite (when their schema passed); returns their encoded batch.

    With ``pseudonyms`` (every earlier table passed), the worker makes the events' Parquet
    bytes into ``files`` while GX checks them.
    """
    events = checks["events"]
    if events.data is None:
        return encoded
    if encoded is None:
        encoded = encode_strings(events.data, TABLES["events"].unique)
    if pseudonyms is not None:
        user_ids = one_chunk(encoded.column("user_id"))
        pseudonyms = pseudonyms.extended(user_ids.dictionary)
        files["events"] = worker.submit(
            partition_files, "events", events.data, pseudonyms, user_ids
        )
    check_event_values(run.gate, run.lake, run.day, run.now, events, encoded, checks["items"])
    return encoded


def _outcome(run: DayRun, check: TableCheck, published: bool) -> dict[str, Any]:
    """The outcome record of one table of the run (see :mod:`validation.results`)."""
    return results.outcome(
        run.day,
        check.table,
        check.findings,
        published=published,
        rows=check.rows,
        files=check.keys,
        validation_id=run.validation_id,
        validated_at=run.now.isoformat(),
        run_id=run.run_id,
    )


def _summary(run: DayRun, checks: dict[str, TableCheck], encoded: pa.Table) -> dict[str, Any]:
    """What a published day returns (and the DAG emits as the asset event's metadata)."""
    return {
        "date": run.day.isoformat(),
        "rows": encoded.num_rows,
        "distinct_users": len(one_chunk(encoded.column("user_id")).dictionary),
        "distinct_items": len(one_chunk(encoded.column("item_id")).dictionary),
        "validation_id": run.validation_id,
        "items": checks["items"].rows,
        "users": checks["users"].rows,
        "partition": run.lake.url(partition_prefix(VALIDATED, "events", day=run.day)),
    }
