"""Impressions and feedback: spooled to local disk, then written to the raw lake in batches.

Every recommendation response becomes an impression (table ``impressions``, see
:data:`core.contract.IMPRESSIONS`); every accepted ``POST /feedback`` becomes a raw event in the
data contract (``events``: ``event_id`` = ``fb:<request_id>:<n>``, the RAW user id -- raw data
is pre-ingestion, the gate pseudonymises it -- ``item_id``, ``event_type``, ``value``,
``event_ts`` = when the feedback arrived).

What is accepted (everything else is refused with a reason, never with the input echoed):

* feedback names a ``request_id`` served by this process (the last ``max_known`` impressions,
  and those replayed from the spool) and an item of that impression;
* at most one event per impression, item and type: one click, one add to cart, one purchase,
  one rating of an item shown once. The same event again (a client retrying) is answered as a
  duplicate with the first event's id and not recorded twice; a different value for the same
  slot (a second rating of 2 after a 5) is a conflict (409). ``n`` in the event id is the
  slot (item position x types + type), so the id itself is unique by construction;
* ``served_ts <= event_ts <= served_ts + window`` (``FLYWHEEL_SERVE_FEEDBACK_WINDOW_S``, default
  one day): no events before their impression, none on a slate served long ago.

Durability (see :mod:`serving.spool`): each row is appended to the spool before the API
answers, and feedback is ``fsync``\\ ed before its ``202``. Rows are written to the lake as one
batch of files per table and day, ``raw/impressions/dt=D/impressions-<batch>.parquet`` and
``raw/events/dt=D/feedback-<batch>.parquet``, with ``Lake.write`` (atomic per file): when
``flush_rows`` rows are buffered, every ``flush_s`` seconds, and on shutdown. The batch id is
fixed when the batch starts, so a batch that failed half-way is retried as the same batch under
the same names (no duplicate rows), and the next rows go into a new batch. A batch leaves the
spool only once all its files are written. So: a clean stop loses nothing; a stop with the lake
down leaves the rows in the spool; a crash (``kill -9``) loses nothing acknowledged -- the next
start replays the spool. Past ``spool_max_bytes`` not yet in the lake, feedback gets ``503``
(and impressions are served but not logged, counted in ``impressions_dropped``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from core.contract import EVENTS, IMPRESSIONS, RATING_MAX, RATING_MIN
from core.errors import FlywheelError
from core.lake import RAW, Lake
from core.names import FEEDBACK_EVENT_TYPES
from serving.spool import Spool

log = logging.getLogger(__name__)

#: ``event_id`` of a feedback event: ``fb:<request_id>:<n>``.
EVENT_ID_PREFIX = "fb:"
#: File names of a batch: ``raw/impressions/dt=D/impressions-<batch>.parquet`` and
#: ``raw/events/dt=D/feedback-<batch>.parquet`` (the A/B report reads them by these prefixes).
IMPRESSIONS_FILE_PREFIX = "impressions-"
EVENTS_FILE_PREFIX = "feedback-"
DEFAULT_WINDOW = dt.timedelta(days=1)
DEFAULT_SPOOL_MAX_BYTES = 256 * 2**20


class FeedbackError(FlywheelError):
    """Feedback that cannot be recorded; ``status`` is the HTTP status the API answers."""

    status = 422


class UnknownImpression(FeedbackError):
    status = 404


class FeedbackConflict(FeedbackError):
    status = 409


class SpoolFull(FeedbackError):
    """The spool holds more than its cap (the lake has been unreachable for long)."""

    status = 503


@dataclass(frozen=True)
class Impression:
    request_id: str
    user_id: str  # raw
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    model_version: str
    variant: str
    served_ts: dt.datetime


@dataclass
class _Shown:
    """What feedback on one impression is checked against, and the events already taken."""

    user_id: str
    items: dict[str, int]  # item -> position
    served_ts: dt.datetime
    events: dict[tuple[str, str], dict] = field(default_factory=dict)


@dataclass
class Batch:
    """Rows written to the lake together, under file names made from ``id``."""

    id: str
    impressions: list[Impression] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    nbytes: int = 0

    @property
    def rows(self) -> int:
        return len(self.impressions) + len(self.events)


def new_batch_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:12]


def feedback_value(event_type: str, value: float | None) -> float:
    """The contract's value: 0.5–5 for ``rating``, else 1.0; raises :class:`FeedbackError`."""
    if event_type not in FEEDBACK_EVENT_TYPES:
        raise FeedbackError(f"event_type must be one of {', '.join(FEEDBACK_EVENT_TYPES)}")
    if event_type == "rating":
        if value is None or not (RATING_MIN <= float(value) <= RATING_MAX):
            raise FeedbackError(f"a rating needs a value from {RATING_MIN:g} to {RATING_MAX:g}")
        return float(value)
    if value is not None and float(value) != 1.0:
        raise FeedbackError(f"value must be 1.0 for {event_type} (only ratings carry 0.5–5)")
    return 1.0


def _impression_record(imp: Impression) -> dict:
    return {
        "kind": "impression",
        "request_id": imp.request_id,
        "user_id": imp.user_id,
        "item_ids": list(imp.item_ids),
        "scores": list(imp.scores),
        "model_version": imp.model_version,
        "variant": imp.variant,
        "served_ts": imp.served_ts.isoformat(),
    }


def _event_record(event: dict) -> dict:
    return {"kind": "event", **event, "event_ts": event["event_ts"].isoformat()}


def _encode(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


class FeedbackLog:
    """Impressions and feedback events: checked, spooled, and written to the lake in batches.

    ``spool_dir`` None keeps rows in memory only (library tests); serving always spools.
    """

    def __init__(
        self,
        lake: Lake,
        flush_rows: int = 500,
        flush_s: float = 10.0,
        max_known: int = 200_000,
        *,
        spool_dir: Path | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        window: dt.timedelta = DEFAULT_WINDOW,
    ):
        self.lake = lake
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.max_known = max_known
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self.window = window
        self._spool: Spool | None = None
        self._current = Batch(new_batch_id())
        self._pending: list[Batch] = []  # closed batches not yet (completely) in the lake
        self._known: OrderedDict[str, _Shown] = OrderedDict()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches_written = 0
        self.rows_written = 0
        self.write_failures = 0
        self.impressions_dropped = 0
        self.replayed_rows = 0

    # --- state --------------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Rows accepted and not yet in the lake."""
        return self._current.rows + sum(b.rows for b in self._pending)

    @property
    def spooled_bytes(self) -> int:
        return self._current.nbytes + sum(b.nbytes for b in self._pending)

    @property
    def pending_batches(self) -> int:
        return len(self._pending) + (1 if self._current.rows else 0)

    def open(self) -> int:
        """Take the spool folder and replay what a previous process left; returns rows replayed."""
        if self.spool_dir is None or self._spool is not None:
            return 0
        spool = Spool(self.spool_dir)
        with self._lock:
            self._spool = spool
            for batch_id, records in spool.leftovers():
                self._pending.append(self._replay(batch_id, records))
            replayed = sum(b.rows for b in self._pending)
        self.replayed_rows += replayed
        if replayed:
            log.warning(
                "replaying %d rows (%d batches) from the feedback spool %s",
                replayed,
                len(self._pending),
                self.spool_dir,
            )
        return replayed

    def _replay(self, batch_id: str, records: list[dict]) -> Batch:
        batch = Batch(batch_id, nbytes=(self._spool.path(batch_id).stat().st_size))
        for rec in records:
            kind = rec.pop("kind", None)
            if kind == "impression":
                imp = Impression(
                    **{**rec, "item_ids": tuple(rec["item_ids"]), "scores": tuple(rec["scores"])}
                    | {"served_ts": dt.datetime.fromisoformat(rec["served_ts"])}
                )
                batch.impressions.append(imp)
                self._remember(imp)
            elif kind == "event":
                event = rec | {"event_ts": dt.datetime.fromisoformat(rec["event_ts"])}
                batch.events.append(event)
                shown = self._known.get(event["request_id"])
                if shown is not None:
                    shown.events[(event["item_id"], event["event_type"])] = event
        return batch

    # --- recording ----------------------------------------------------------------------------
    def _remember(self, imp: Impression) -> None:
        items = {item: n for n, item in reversed(list(enumerate(imp.item_ids)))}
        self._known[imp.request_id] = _Shown(imp.user_id, items, imp.served_ts)
        while len(self._known) > self.max_known:
            self._known.popitem(last=False)

    def _append(self, record: dict) -> int:
        """Spool one record into the current batch (caller holds the lock); its sequence no."""
        data = _encode(record)
        if self.spooled_bytes + len(data) > self.spool_max_bytes:
            raise SpoolFull(
                "feedback spool full: the lake has not taken the buffered rows yet; retry later"
            )
        self._current.nbytes += len(data)
        if self._spool is None:
            return 0
        return self._spool.append(self._current.id, data)

    def record_impression(self, imp: Impression) -> bool:
        """Log one served slate; False when the spool is full (served but not logged)."""
        with self._lock:
            try:
                self._append(_impression_record(imp))
            except SpoolFull:
                self.impressions_dropped += 1
                return False
            self._current.impressions.append(imp)
            self._remember(imp)
            full = self.buffered >= self.flush_rows
        if full:
            self._wake.set()
        return True

    def record_feedback(
        self,
        request_id: str,
        item_id: str,
        event_type: str,
        value: float | None = None,
        now: dt.datetime | None = None,
    ) -> dict:
        """Accept one feedback event; returns the event row, ``duplicate`` True for a repeat.

        Durable (spooled and synced) when this returns.
        """
        val = feedback_value(event_type, value)
        ts = now or dt.datetime.now(dt.UTC)
        with self._lock:
            shown = self._check(request_id, item_id, ts)
            slot = (item_id, event_type)
            earlier = shown.events.get(slot)
            if earlier is not None:
                if earlier["value"] != val:
                    raise FeedbackConflict(
                        f"this impression already has a {event_type} of that item with "
                        f"another value: one {event_type} per item and impression"
                    )
                # answered only once the first one is on disk (it may be syncing right now)
                seq = self._spool.appended if self._spool is not None else 0
                event, duplicate, full = earlier, True, False
            else:
                event, seq, full = self._new_event(shown, request_id, item_id, event_type, val, ts)
                duplicate = False
        if self._spool is not None:
            self._spool.sync(seq)
        if full:
            self._wake.set()
        return event | {"duplicate": duplicate}

    def _new_event(
        self, shown: _Shown, request_id: str, item_id: str, event_type: str, val: float, ts
    ) -> tuple[dict, int, bool]:
        """Spool and buffer a new event (caller holds the lock): (event, seq, buffer full)."""
        n = shown.items[item_id] * len(FEEDBACK_EVENT_TYPES)
        event = {
            "event_id": f"{EVENT_ID_PREFIX}{request_id}:{n + FEEDBACK_EVENT_TYPES.index(event_type)}",
            "user_id": shown.user_id,
            "item_id": item_id,
            "event_type": event_type,
            "value": val,
            "event_ts": ts,
            "request_id": request_id,
        }
        seq = self._append(_event_record(event))
        self._current.events.append(event)
        shown.events[(item_id, event_type)] = event
        return event, seq, self.buffered >= self.flush_rows

    def _check(self, request_id: str, item_id: str, ts: dt.datetime) -> _Shown:
        shown = self._known.get(request_id)
        if shown is None:
            raise UnknownImpression(
                "unknown request_id: no impression with that id was served (recently) here"
            )
        if item_id not in shown.items:
            raise FeedbackError("item_id was not in that impression")
        if ts < shown.served_ts:
            raise FeedbackError("event_ts is before the impression was served")
        if ts > shown.served_ts + self.window:
            raise FeedbackError(
                f"feedback on this impression is closed: it is accepted up to "
                f"{self.window.total_seconds():g} s after serving"
            )
        return shown

    def user_of(self, request_id: str) -> str | None:
        shown = self._known.get(request_id)
        return shown.user_id if shown else None

    # --- writing ------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write every batch not yet in the lake, oldest first; returns the rows written.

        The rows buffered now close the current batch (new rows start the next one). A batch
        whose write fails stays pending under its id and is written again, whole, next time
        (the error is raised); later batches wait behind it.
        """
        with self._flush_lock:
            with self._lock:
                if self._current.rows:
                    self._pending.append(self._current)
                    self._current = Batch(new_batch_id())
                pending = list(self._pending)
            written = 0
            for batch in pending:
                try:
                    self._write(batch)
                except Exception:
                    self.write_failures += 1
                    raise
                with self._lock:
                    self._pending.remove(batch)
                    if self._spool is not None:
                        self._spool.remove(batch.id)
                self.batches_written += 1
                self.rows_written += batch.rows
                written += batch.rows
            return written

    def _write(self, batch: Batch) -> None:
        """The batch's files, one per table and day, named after the batch (rewrites are safe)."""
        import pyarrow as pa

        by_day: dict[dt.date, list[Impression]] = {}
        for imp in batch.impressions:
            by_day.setdefault(imp.served_ts.date(), []).append(imp)
        for day, rows in sorted(by_day.items()):
            table = pa.table(
                {
                    "request_id": [r.request_id for r in rows],
                    "user_id": [r.user_id for r in rows],
                    "item_ids": [json.dumps(list(r.item_ids)) for r in rows],
                    "scores": [json.dumps([round(s, 6) for s in r.scores]) for r in rows],
                    "model_version": [r.model_version for r in rows],
                    "variant": [r.variant for r in rows],
                    "served_ts": [r.served_ts for r in rows],
                },
                schema=IMPRESSIONS.arrow_schema(),
            )
            name = f"{IMPRESSIONS_FILE_PREFIX}{batch.id}.parquet"
            self.lake.write(table, IMPRESSIONS.name, day, zone=RAW, name=name)
        ev_by_day: dict[dt.date, list[dict]] = {}
        for ev in batch.events:
            ev_by_day.setdefault(ev["event_ts"].date(), []).append(ev)
        schema = EVENTS.arrow_schema()
        for day, rows in sorted(ev_by_day.items()):
            table = pa.Table.from_pylist(rows, schema=schema)  # only the contract's columns
            name = f"{EVENTS_FILE_PREFIX}{batch.id}.parquet"
            self.lake.write(table, EVENTS.name, day, zone=RAW, name=name)

    # --- background ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.flush()
            except Exception as exc:
                log.error("feedback batch not written, kept for the next flush: %s", exc)

    def start(self) -> None:
        """Open the spool (replaying leftovers, written at the first flush) and start writing."""
        self.open()
        if self._pending:
            self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="feedback-flush", daemon=True)
            self._thread.start()

    def close(self) -> int:
        """Stop the background writer and flush what is left (called on shutdown).

        With a spool, a lake that cannot take the rows now leaves them in the spool for the
        next start (logged, not raised); without one, the error is raised.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        try:
            return self.flush()
        except Exception as exc:
            if self._spool is None:
                raise
            log.error(
                "lake unavailable at shutdown (%s): %d rows stay in the spool %s and are "
                "written by the next start",
                exc,
                self.buffered,
                self.spool_dir,
            )
            return 0
        finally:
            if self._spool is not None:
                with self._lock:
                    self._spool.close()
                    self._spool = None
