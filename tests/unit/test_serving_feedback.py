"""The impression/feedback buffer: validation, batch files in the contract, flush and retry."""

from __future__ import annotations

import datetime as dt
import json
import time

import pyarrow.parquet as pq
import pytest

from core.contract import EVENTS, IMPRESSIONS
from core.errors import LakeError
from serving.feedback import (
    FeedbackError,
    FeedbackLog,
    Impression,
    UnknownImpression,
    feedback_value,
)

TS = dt.datetime(2026, 2, 3, 10, 0, tzinfo=dt.UTC)


def _imp(request_id: str = "r1", ts: dt.datetime = TS) -> Impression:
    return Impression(request_id, "alice", ("i1", "i2"), (0.8, 0.4), "7", "champion", ts)


def test_feedback_values_follow_the_contract():
    assert feedback_value("click", None) == 1.0
    assert feedback_value("purchase", 1) == 1.0
    assert feedback_value("rating", 4.5) == 4.5
    with pytest.raises(FeedbackError, match="rating needs a value from 1 to 5"):
        feedback_value("rating", 6)
    with pytest.raises(FeedbackError, match="rating needs"):
        feedback_value("rating", None)
    with pytest.raises(FeedbackError, match="value must be 1.0 for click"):
        feedback_value("click", 3)
    with pytest.raises(FeedbackError, match="'view' is not one of"):
        feedback_value("view", 1)


def test_feedback_needs_a_served_impression_and_one_of_its_items(lake):
    log = FeedbackLog(lake)
    log.record_impression(_imp())
    with pytest.raises(UnknownImpression, match="unknown request_id 'nope'") as err:
        log.record_feedback("nope", "i1", "click")
    assert err.value.status == 404
    with pytest.raises(FeedbackError, match="item 'i9' was not in impression 'r1'") as err:
        log.record_feedback("r1", "i9", "click")
    assert err.value.status == 422
    a = log.record_feedback("r1", "i1", "click", now=TS)
    b = log.record_feedback("r1", "i1", "purchase", now=TS)
    assert a["event_id"] == "fb:r1:0" and b["event_id"] == "fb:r1:1"
    assert a["user_id"] == "alice"  # raw: the gate pseudonymises
    assert log.buffered == 3


def test_batches_are_contract_parquet_files_per_day(lake):
    log = FeedbackLog(lake, flush_rows=1000)
    log.record_impression(_imp("r1"))
    log.record_impression(_imp("r2", TS + dt.timedelta(days=1)))
    log.record_feedback("r1", "i2", "rating", 5, now=TS)
    assert log.flush() == 3 and log.buffered == 0
    assert log.flush() == 0  # nothing buffered: no empty files
    imp_keys = lake.list("raw/impressions/")
    ev_keys = lake.list("raw/events/")
    assert [k.split("/")[2] for k in imp_keys] == ["dt=2026-02-03", "dt=2026-02-04"]
    assert len(ev_keys) == 1 and ev_keys[0].startswith("raw/events/dt=2026-02-03/feedback-")
    imps = pq.read_table(lake.path(imp_keys[0]))
    assert imps.schema.equals(IMPRESSIONS.arrow_schema())
    row = imps.to_pylist()[0]
    assert json.loads(row["item_ids"]) == ["i1", "i2"] and json.loads(row["scores"]) == [0.8, 0.4]
    events = pq.read_table(lake.path(ev_keys[0]))
    assert events.schema.equals(EVENTS.arrow_schema())
    assert events.to_pylist()[0]["value"] == 5.0


class FlakyLake:
    """Fails the first write, then delegates."""

    def __init__(self, lake):
        self.lake, self.fail = lake, True

    def write(self, data, table, day, **where):
        if self.fail:
            self.fail = False
            raise LakeError("S3 endpoint unreachable")
        return self.lake.write(data, table, day, **where)


def test_a_failed_batch_stays_buffered_and_is_written_next_time(lake):
    log = FeedbackLog(FlakyLake(lake))
    log.record_impression(_imp())
    with pytest.raises(LakeError):
        log.flush()
    assert log.buffered == 1 and log.write_failures == 1
    assert log.flush() == 1
    assert len(lake.list("raw/impressions/")) == 1


def test_size_trigger_and_close_flush_everything(lake):
    log = FeedbackLog(lake, flush_rows=3, flush_s=60)
    log.start()
    for n in range(3):
        log.record_impression(_imp(f"r{n}"))
    deadline = time.monotonic() + 20
    while log.batches_written == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.batches_written == 1  # the size trigger woke the writer long before 60 s
    log.record_impression(_imp("last"))
    assert log.close() == 1  # shutdown flush
    assert lake.read_parquet("raw/impressions/").num_rows == 4
