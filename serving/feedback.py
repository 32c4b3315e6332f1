"""Impressions and feedback: buffered in memory, written to the raw lake in atomic batches.

Every recommendation response becomes an impression (table ``impressions``, see
:data:`core.contract.IMPRESSIONS`); every ``POST /feedback`` becomes a raw event in the data
contract (``events``: ``event_id`` = ``fb:<request_id>:<n>``, the RAW user id -- raw data is
pre-ingestion, the gate pseudonymises it -- ``item_id``, ``event_type``, ``value``,
``event_ts`` = when the feedback arrived). Both are buffered and written together:

* a batch is written when ``flush_rows`` rows are buffered, every ``flush_s`` seconds, and on
  shutdown (the FastAPI lifespan calls :meth:`FeedbackLog.close`);
* each batch is one Parquet file per table and day, ``raw/impressions/dt=D/impressions-<batch>``
  and ``raw/events/dt=D/feedback-<batch>.parquet`` with a unique batch id, written with
  ``Lake.write`` (atomic: a file appears complete or not at all), so the next
  ``ingest_events`` run for day D validates and learns from them;
* feedback is acknowledged (``202``) only once it is in the buffer. A clean stop loses nothing
  acknowledged; **a crash (kill -9, power loss) loses at most the unflushed buffer**, that is at
  most ``flush_rows`` rows or ``flush_s`` seconds of traffic. A batch whose write fails stays in
  the buffer and is retried at the next flush.

Feedback must name a ``request_id`` served by this process (kept for the last ``max_known``
impressions) and an item of that impression; served items come from the validated catalog, so
the events pass the gate's "item exists" rule.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from core.contract import EVENTS, IMPRESSIONS, RATING_MAX, RATING_MIN
from core.errors import FlywheelError
from core.lake import RAW, Lake
from core.names import FEEDBACK_EVENT_TYPES

log = logging.getLogger(__name__)

#: ``event_id`` of a feedback event: ``fb:<request_id>:<n>``.
EVENT_ID_PREFIX = "fb:"
#: File names of a batch: ``raw/impressions/dt=D/impressions-<batch>.parquet`` and
#: ``raw/events/dt=D/feedback-<batch>.parquet`` (the A/B report reads them by these prefixes).
IMPRESSIONS_FILE_PREFIX = "impressions-"
EVENTS_FILE_PREFIX = "feedback-"


class FeedbackError(FlywheelError):
    """Feedback that cannot be recorded; ``status`` is the HTTP status the API answers."""

    status = 422


class UnknownImpression(FeedbackError):
    status = 404


@dataclass(frozen=True)
class Impression:
    request_id: str
    user_id: str  # raw
    item_ids: tuple[str, ...]
    scores: tuple[float, ...]
    model_version: str
    variant: str
    served_ts: dt.datetime


def feedback_value(event_type: str, value: float | None) -> float:
    """The contract's value: 1–5 for ``rating``, else 1.0; raises :class:`FeedbackError`."""
    if event_type not in FEEDBACK_EVENT_TYPES:
        raise FeedbackError(
            f"event_type {event_type!r} is not one of {', '.join(FEEDBACK_EVENT_TYPES)}"
        )
    if event_type == "rating":
        if value is None or not (RATING_MIN <= float(value) <= RATING_MAX):
            raise FeedbackError(
                f"a rating needs a value from {RATING_MIN:g} to {RATING_MAX:g}, got {value}"
            )
        return float(value)
    if value is not None and float(value) != 1.0:
        raise FeedbackError(
            f"value must be 1.0 for {event_type} (only ratings carry 1–5), got {value}"
        )
    return 1.0


class FeedbackLog:
    """The buffer of impressions and feedback events, and its batch writer."""

    def __init__(
        self,
        lake: Lake,
        flush_rows: int = 500,
        flush_s: float = 10.0,
        max_known: int = 200_000,
    ):
        self.lake = lake
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.max_known = max_known
        self._impressions: list[Impression] = []
        self._events: list[dict] = []
        self._known: OrderedDict[str, tuple[str, frozenset[str], itertools.count]] = OrderedDict()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches_written = 0
        self.rows_written = 0
        self.write_failures = 0

    # --- recording ----------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._impressions) + len(self._events)

    def record_impression(self, imp: Impression) -> None:
        with self._lock:
            self._impressions.append(imp)
            self._known[imp.request_id] = (imp.user_id, frozenset(imp.item_ids), itertools.count())
            while len(self._known) > self.max_known:
                self._known.popitem(last=False)
            full = self.buffered >= self.flush_rows
        if full:
            self._wake.set()

    def record_feedback(
        self,
        request_id: str,
        item_id: str,
        event_type: str,
        value: float | None = None,
        now: dt.datetime | None = None,
    ) -> dict:
        """Buffer one feedback event for a served impression; returns the event row."""
        val = feedback_value(event_type, value)
        ts = now or dt.datetime.now(dt.UTC)
        with self._lock:
            known = self._known.get(request_id)
            if known is None:
                raise UnknownImpression(
                    f"unknown request_id {request_id!r}: no impression with that id was served "
                    f"(recently) by this service"
                )
            user_id, items, counter = known
            if item_id not in items:
                raise FeedbackError(f"item {item_id!r} was not in impression {request_id!r}")
            event = {
                "event_id": f"{EVENT_ID_PREFIX}{request_id}:{next(counter)}",
                "user_id": user_id,
                "item_id": item_id,
                "event_type": event_type,
                "value": val,
                "event_ts": ts,
            }
            self._events.append(event)
            full = self.buffered >= self.flush_rows
        if full:
            self._wake.set()
        return event

    def user_of(self, request_id: str) -> str | None:
        known = self._known.get(request_id)
        return known[0] if known else None

    # --- writing ------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write everything buffered now as one batch per table and day; returns rows written.

        On a failed write the batch goes back to the buffer (and the error is raised).
        """
        with self._flush_lock:
            with self._lock:
                imps, self._impressions = self._impressions, []
                events, self._events = self._events, []
            if not imps and not events:
                return 0
            try:
                written = self._write(imps, events)
            except Exception:
                self.write_failures += 1
                with self._lock:
                    self._impressions[:0] = imps
                    self._events[:0] = events
                raise
            self.batches_written += 1
            self.rows_written += written
            return written

    def _write(self, imps: list[Impression], events: list[dict]) -> int:
        import pyarrow as pa

        batch = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:12]
        by_day: dict[dt.date, list[Impression]] = {}
        for imp in imps:
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
            name = f"{IMPRESSIONS_FILE_PREFIX}{batch}.parquet"
            self.lake.write(table, IMPRESSIONS.name, day, zone=RAW, name=name)
        ev_by_day: dict[dt.date, list[dict]] = {}
        for ev in events:
            ev_by_day.setdefault(ev["event_ts"].date(), []).append(ev)
        schema = EVENTS.arrow_schema()
        for day, rows in sorted(ev_by_day.items()):
            table = pa.Table.from_pylist(rows, schema=schema)
            name = f"{EVENTS_FILE_PREFIX}{batch}.parquet"
            self.lake.write(table, EVENTS.name, day, zone=RAW, name=name)
        return len(imps) + len(events)

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
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="feedback-flush", daemon=True)
            self._thread.start()

    def close(self) -> int:
        """Stop the background writer and flush what is left (called on shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        return self.flush()
