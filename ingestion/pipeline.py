"""Ingestion of one day: raw files → quality gate → pseudonymised, validated partitions.

:func:`ingest_day` is what the ``ingest_events`` DAG and ``flywheel ingest DAY`` run. For the day
``D`` (data interval ``[D 00:00, D+1 00:00)`` UTC):

1. find the raw files of ``items``, ``users`` and ``events`` under ``raw/<table>/dt=D/``;
2. read each (Parquet or UTF-8 CSV); an unreadable, empty or non-UTF-8 file is a gate failure;
3. conform types losslessly to the contract (ints → float, any timestamp unit → µs UTC);
4. validate each table with Great Expectations (:mod:`validation.gate`): the schema suite
   per file, then the data suite on the day's batch, with what it needs from earlier days
   (:mod:`validation.history`); the events against the catalog so far and the day's items
   that passed. Each table gets its own verdict (:func:`ingestion.gate.judge`):

   * **passed**: published;
   * **split**: its only breaches are row-level (values, nulls, unknown items, duplicate ids)
     on at most ``max_bad_row_share`` of its rows: those rows go to
     ``quarantine/<table>_rows/dt=D/`` with a ``reason`` column, the rest is published (the
     raw file stays in ``raw/``);
   * **failed** (file, schema or volume breaches, or too many bad rows): its raw files move
     to ``quarantine/`` (the full result to ``quality/quarantined/``), it is not published,
     an earlier run's publication of it is withdrawn from ``validated/`` (to
     ``quarantine/<table>_withdrawn/``, so nothing downstream reads a day whose latest verdict
     is "fail"), and :class:`validation.gate.GateFailure` is raised once the day's other
     tables are done.

   A file that fails on its own (unreadable, not the contract's schema) beside files that pass
   is set aside: it moves to ``quarantine/`` alone and the table is judged without it (a
   junk file does not take the day's export with it); offending ``user_id`` values are shown
   as their pseudonyms in every finding, result, report and message;
5. publish: pseudonymise ``user_id``, write ``validated/<table>/dt=D/`` (items and users first,
   events last), each partition replaced atomically (the Parquet bytes are made in a thread
   while GX checks the events);
6. record each delivered table's outcome (the events' always) under ``quality/results/dt=D/<table>.json`` (latest) and
   ``quality/runs/dt=D/<table>/<validation_id>.json`` (every run), with its HTML report at
   ``quality/reports/dt=D/<table>.html`` and GX's Data Docs of the run under
   ``quality/data_docs/dt=D/<table>/`` (``data_docs_key``: :mod:`validation.docs`), for the UI
   (:mod:`validation.results`).

Each table's verdict is logged in one line as soon as it is known
(:func:`ingestion.gate.log_verdict`); GX's own logging is kept to warnings
(:func:`validation.gate.quiet_gx`), so a failing task's log opens with the reason.

The steps live in modules of their own: :mod:`ingestion.read` (1-2), :mod:`ingestion.conform`
(3), :mod:`ingestion.gate` (4), :mod:`ingestion.publish` (5); this module runs them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.contract import TABLES
from core.errors import ContractError
from core.lake import VALIDATED, get_lake, partition_prefix
from core.privacy import pseudonym_key
from ingestion.conform import encode_strings, one_chunk
from ingestion.gate import (
    TableCheck,
    check_event_values,
    check_files,
    check_table_values,
    log_verdict,
)
from ingestion.publish import (
    TABLE_ORDER,
    Pseudonyms,
    aside_after,
    partition_files,
    publish,
    quarantine_files,
    quarantine_rows,
    to_withdraw,
    withdraw,
)
from ingestion.read import read_and_encode, read_files
from validation import docs, results
from validation.config import GateConfig
from validation.gate import Gate, GateFailure, failure_message
from validation.history import LakeHistory
from validation.quarantine import quarantine_prefix, withdrawn_prefix

if TYPE_CHECKING:
    import pyarrow as pa

    from core.lake import Lake
    from validation.history import History

Partitions = dict[str, dict[str, bytes]]  # table -> file name -> Parquet bytes


class RawExpired(ContractError):
    """A re-run of a published day whose raw events are gone (:func:`_refuse_expired`)."""


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
    history: History


def ingest_day(
    day: dt.date | str,
    lake: Lake | None = None,
    config: GateConfig | None = None,
    now: dt.datetime | None = None,
    run_id: str | None = None,
    history: History | None = None,
    writer: Callable[[Callable[[], None]], Any] | None = None,
) -> dict[str, Any]:
    """Validate and publish one day; returns the summary (the asset metadata).

    Each table is judged on its own: it is published when it passed, or when its only breaches
    are row-level ones on at most ``max_bad_row_share`` of its rows (those rows quarantined).
    Raises :class:`validation.gate.GateFailure` when any table failed (that table not
    published; its ``summary`` says what was), :class:`RawExpired` when the day was published
    and its raw events are gone (nothing is judged or written). ``config``: the gate's thresholds (default:
    :meth:`GateConfig.from_settings`); ``now`` bounds "not in the future" (the wall clock by
    default; tests pin it); ``history``: what earlier days validated (default: read from the
    lake; :mod:`ingestion.bulk` passes one kept in memory across days). ``writer``: runs the
    day's writes (quarantine, publish, outcomes), by default here and now; :mod:`ingestion.bulk`
    hands them to a thread that writes day N while day N+1 is checked.
    """
    day = day_of(day)
    lake = lake or get_lake()
    now = now or dt.datetime.now(dt.UTC)
    key = pseudonym_key()  # fail fast (production without a secret) before touching data
    validation_id = f"{day.isoformat()}-{uuid.uuid4().hex[:12]}"
    gate = Gate.cached(config or GateConfig.from_settings())
    history = history or LakeHistory(lake)
    run = DayRun(day, lake, gate, now, validation_id, run_id, history)
    checks, files = _gate_day(run, key)
    _refuse_expired(run, checks["events"])
    failed = {t: c for t, c in checks.items() if c.failed}
    for c in failed.values():
        c.reject_all()  # a failed table is quarantined whole
    # what an earlier run published of the tables that failed on what was delivered now
    judged = [t for t, c in failed.items() if c.keys]
    withdrawing = to_withdraw(lake, day, judged)
    aside = aside_after(lake, day, judged, withdrawing)  # where it is once withdrawn
    pages, entries = _data_docs(run, checks)
    outcomes = {t: _outcome(run, c, aside.get(t), entries.get(t)) for t, c in checks.items()}
    for table, c in checks.items():
        if c.failed:
            history.withheld(day, table)
        else:
            history.published(day, table, c.published, c.rows)
    (writer or _now)(lambda: _write(run, checks, files, outcomes, withdrawing, pages))
    summary = _summary(run, checks, aside)
    if failed:
        findings = {t: c.findings for t, c in failed.items()}
        where = {t: quarantine_prefix(t, day) for t, c in failed.items() if c.keys}
        passed = [t for t in TABLE_ORDER if t not in failed and checks[t].rows]
        gone = {t: withdrawn_prefix(t, day) for t in aside}
        msg = failure_message(day.isoformat(), validation_id, findings, where, passed, gone)
        raise GateFailure(msg, summary)
    return summary


def _refuse_expired(run: DayRun, events: TableCheck) -> None:
    """A re-run of a published day whose raw events are gone (past the raw retention, see
    :mod:`ingestion.retention`, or removed) has nothing to judge: it must neither record a
    failure nor withdraw the publication. Raises :class:`RawExpired`, writing nothing."""
    if events.files or events.rejected:
        return
    published = partition_prefix(VALIDATED, "events", run.day)
    if run.lake.list(published):
        raise RawExpired(
            f"no raw events for {run.day}, but {run.lake.url(published)} holds the day's "
            "published events (raw data past its retention, or removed): nothing was "
            "re-validated and the publication stands"
        )


def _write(
    run: DayRun,
    checks: dict[str, TableCheck],
    files: Partitions,
    outcomes: dict[str, dict[str, Any]],
    withdrawing: dict[str, list[str]],
    pages: dict[str, bytes],
) -> None:
    """The day's writes, in the order that keeps a crash between any two of them safe: the
    failed tables' earlier publications withdrawn first (downstream never reads a day whose
    verdict is "fail", even before the verdict is recorded), then quarantine, the validated
    partitions, the Data Docs ``pages``, and the outcomes last (an outcome never claims what
    is not in the lake)."""
    lake, day = run.lake, run.day
    withdraw(lake, day, withdrawing)
    quarantine_files(lake, day, checks, outcomes)
    quarantine_rows(lake, day, checks, outcomes)
    publish(lake, day, files)
    for key, page in pages.items():
        lake.write_bytes(key, page)
    for table, outcome in outcomes.items():
        c = checks[table]
        if c.files or c.rejected or table == "events":  # no items/users delivered: no outcome
            results.record(lake, outcome)


def _now(write: Callable[[], None]) -> None:
    write()


def _data_docs(run: DayRun, checks: dict[str, TableCheck]) -> tuple[dict[str, bytes], dict]:
    """GX's Data Docs of the run's results per table (:mod:`validation.docs`): the pages to
    write (lake key -> HTML) and each table's entry page (table -> lake key); tables GX did
    not run on (no files, or a bulk range's prescreen found nothing) have none."""
    site = docs.for_gate(run.gate)
    pages: dict[str, bytes] = {}
    entries: dict[str, str] = {}
    for table, c in checks.items():
        ran = list(zip(c.gx_batches, c.gx_results, strict=True))
        entry, files = site.render(run.day, table, run.validation_id, ran)
        if entry is not None:
            entries[table] = entry
            pages.update(files)
    return pages, entries


def _gate_day(run: DayRun, key: bytes) -> tuple[dict[str, TableCheck], Partitions]:
    """Gate the day's three tables: their checks and the validated partitions' bytes of those
    that were not failed.

    GX is pure Python (it holds the GIL); Arrow encoding and Parquet writing release it. So one
    worker thread does the Arrow work while the gate checks data: the events' dictionary
    encoding during the items and users suites, then the pseudonymised Parquet bytes of each
    table that passed (the events' while their own data suite runs; made again without the
    offending rows when the events are split). Nothing is written here.
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
            log_verdict(day, checks[table], gate.config)
        users = checks["users"].published
        # hash the users' ids while the worker reads and encodes the events
        pseudonyms = Pseudonyms([users["user_id"]] if users is not None else [], key)
        for table in ("items", "users"):
            if not checks[table].failed:
                data = checks[table].published
                files[table] = worker.submit(partition_files, table, data, pseudonyms)
        raw_events, encoded = reading.result()
        checks["events"] = check_files(gate, day, "events", raw_events)
        _gate_events(run, worker, checks, encoded, pseudonyms, files)
        log_verdict(day, checks["events"], gate.config)
        return checks, {t: f.result() for t, f in files.items() if not checks[t].failed}


def _gate_events(
    run: DayRun,
    worker: ThreadPoolExecutor,
    checks: dict[str, TableCheck],
    encoded: pa.Table | None,
    pseudonyms: Pseudonyms,
    files: dict[str, Future[dict[str, bytes]]],
) -> None:
    """The events' data suite (when their schema passed), against the day's items that passed.

    The worker makes the events' Parquet bytes into ``files`` while the gate checks them; when
    the gate splits the batch those bytes are made again from the rows kept.
    """
    events = checks["events"]
    if events.data is None:
        return
    if encoded is None:
        encoded = encode_strings(events.data, TABLES["events"].unique)
    user_ids = one_chunk(encoded.column("user_id"))
    pseudonyms = pseudonyms.extended(user_ids.dictionary)
    files["events"] = worker.submit(partition_files, "events", events.data, pseudonyms, user_ids)
    items = checks["items"].published
    same_day = items.column("item_id") if items is not None else None
    check_event_values(run.gate, run.history, run.day, run.now, events, encoded, same_day)
    events.encoded = encoded
    if events.split is not None:
        files["events"].cancel()
        files["events"] = worker.submit(partition_files, "events", events.published, pseudonyms)


def _outcome(
    run: DayRun, check: TableCheck, withdrawn: list[str] | None, data_docs_key: str | None
) -> dict[str, Any]:
    """The outcome record of one table of the run (see :mod:`validation.results`); with
    ``withdrawn``: the keys of the table's earlier publication of the day, withdrawn (as URIs);
    ``data_docs_key``: the table's GX Data Docs page of the run."""
    out = results.outcome(
        run.day,
        check.table,
        check.all_findings,
        published=not check.failed,
        rows=check.rows,
        files=sorted(check.keys + check.rejected_keys),
        validation_id=run.validation_id,
        validated_at=run.now.isoformat(),
        run_id=run.run_id,
        rows_quarantined=check.rows_quarantined,
        quarantined_reasons=check.split.reasons if check.split is not None else None,
        data_docs_key=data_docs_key,
    )
    if withdrawn:
        out["withdrawn"] = [run.lake.url(k) for k in withdrawn]
    return out


def _summary(
    run: DayRun, checks: dict[str, TableCheck], withdrawn: dict[str, list[str]]
) -> dict[str, Any]:
    """What a run returns (and the DAG emits as the asset event's metadata): the published
    events' rows and distinct users and items (``published``: whether the events were),
    ``files_quarantined`` (junk files set aside from published tables) and ``withdrawn`` (the
    failed tables whose earlier publication of the day was withdrawn)."""
    import pyarrow.compute as pc

    events = checks["events"]
    data = events.published
    if data is None or events.split is not None or events.encoded is None:
        users = pc.count_distinct(data["user_id"]).as_py() if data is not None else 0
        items = pc.count_distinct(data["item_id"]).as_py() if data is not None else 0
    else:
        users = len(one_chunk(events.encoded.column("user_id")).dictionary)
        items = len(one_chunk(events.encoded.column("item_id")).dictionary)
    return {
        "date": run.day.isoformat(),
        "published": data is not None,
        "rows": 0 if data is None else data.num_rows,
        "rows_quarantined": sum(c.rows_quarantined for c in checks.values()),
        "files_quarantined": sum(len(c.rejected) for c in checks.values()),
        "withdrawn": sorted(withdrawn),
        "distinct_users": users,
        "distinct_items": items,
        "validation_id": run.validation_id,
        "items": checks["items"].rows,
        "users": checks["users"].rows,
        "partition": run.lake.url(partition_prefix(VALIDATED, "events", day=run.day)),
    }
