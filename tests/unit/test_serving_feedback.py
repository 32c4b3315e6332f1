"""The impression/feedback buffer: validation, batch files in the contract, flush and retry."""

from __future__ import annotations

import datetime as dt
import json
import time

import pyarrow.parquet as pq
import pytest

from core.contract import EVENTS, IMPRESSIONS
from core.errors import ConfigError, LakeError
from serving.feedback import (
    FeedbackConflict,
    FeedbackError,
    FeedbackLog,
    Impression,
    SpoolFull,
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
    with pytest.raises(FeedbackError, match="rating needs a value from 0.5 to 5"):
        feedback_value("rating", 6)
    with pytest.raises(FeedbackError, match="rating needs"):
        feedback_value("rating", None)
    with pytest.raises(FeedbackError, match="value must be 1.0 for click"):
        feedback_value("click", 3)
    with pytest.raises(FeedbackError, match="event_type must be one of click"):
        feedback_value("view", 1)


def test_feedback_needs_a_served_impression_and_one_of_its_items(lake):
    log = FeedbackLog(lake)
    log.record_impression(_imp())
    with pytest.raises(UnknownImpression, match="unknown request_id: no impression") as err:
        log.record_feedback("nope", "i1", "click")
    assert err.value.status == 404
    with pytest.raises(FeedbackError, match="item_id was not in that impression") as err:
        log.record_feedback("r1", "i9", "click")
    assert err.value.status == 422
    a = log.record_feedback("r1", "i1", "click", now=TS)
    b = log.record_feedback("r1", "i1", "purchase", now=TS)
    c = log.record_feedback("r1", "i2", "click", now=TS)
    assert (a["event_id"], b["event_id"], c["event_id"]) == ("fb:r1:0", "fb:r1:2", "fb:r1:4")
    assert a["user_id"] == "alice"  # raw: the gate pseudonymises
    assert log.buffered == 4


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


def test_one_event_per_impression_item_and_type(lake):
    """Three purchases of one shown item are one purchase; a retry gets the first event's id."""
    log = FeedbackLog(lake)
    log.record_impression(_imp())
    first = log.record_feedback("r1", "i1", "purchase", now=TS)
    for _ in range(2):
        again = log.record_feedback("r1", "i1", "purchase", now=TS + dt.timedelta(seconds=5))
        assert again["duplicate"] and again["event_id"] == first["event_id"]
    assert not first["duplicate"]
    log.record_feedback("r1", "i1", "rating", 5, now=TS)
    assert log.record_feedback("r1", "i1", "rating", 5, now=TS)["duplicate"]
    with pytest.raises(FeedbackConflict, match="one rating per item and impression") as err:
        log.record_feedback("r1", "i1", "rating", 2, now=TS)
    assert err.value.status == 409
    log.record_feedback("r1", "i2", "purchase", now=TS)  # another item of the slate: fine
    log.flush()
    events = lake.read_parquet("raw/events/").to_pylist()
    assert sorted((e["item_id"], e["event_type"]) for e in events) == [
        ("i1", "purchase"),
        ("i1", "rating"),
        ("i2", "purchase"),
    ]
    assert len({e["event_id"] for e in events}) == 3


def test_feedback_only_between_serving_and_the_window(lake):
    log = FeedbackLog(lake, window=dt.timedelta(hours=1))
    log.record_impression(_imp())
    with pytest.raises(FeedbackError, match="before the impression was served"):
        log.record_feedback("r1", "i1", "click", now=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(FeedbackError, match="accepted up to 3600 s after serving"):
        log.record_feedback("r1", "i1", "click", now=TS + dt.timedelta(hours=1, seconds=1))
    log.record_feedback("r1", "i1", "click", now=TS + dt.timedelta(hours=1))
    log.flush()
    assert lake.partitions("raw", "events") == [TS.date()]  # no dt=1970-01-01


class DownAfter:
    """A lake that takes ``ok`` writes, then fails every write until ``up`` is set again."""

    def __init__(self, lake, ok: int):
        self.lake, self.ok, self.up = lake, ok, True

    def write(self, data, table, day, **where):
        if self.ok <= 0:
            self.up = False
        if not self.up:
            raise LakeError("S3 endpoint unreachable")
        self.ok -= 1
        return self.lake.write(data, table, day, **where)


def test_a_partly_written_batch_is_retried_under_the_same_names(lake, tmp_path):
    log = FeedbackLog(lake, spool_dir=tmp_path / "spool")
    log.open()
    log.record_impression(_imp("r1"))
    log.record_feedback("r1", "i1", "click", now=TS)
    log.lake = DownAfter(lake, ok=1)  # the impressions file is written, the events file is not
    with pytest.raises(LakeError):
        log.flush()
    assert len(lake.list("raw/impressions/")) == 1 and lake.list("raw/events/") == []
    log.record_impression(_imp("r2"))  # a new batch meanwhile
    log.record_feedback("r2", "i2", "click", now=TS)
    log.lake = lake
    assert log.flush() == 4  # the first batch again (whole, same names), then the second
    imps = lake.read_parquet("raw/impressions/").column("request_id").to_pylist()
    events = lake.read_parquet("raw/events/").column("event_id").to_pylist()
    assert sorted(imps) == ["r1", "r2"] and sorted(events) == ["fb:r1:0", "fb:r2:4"]
    assert len(lake.list("raw/impressions/")) == 2  # one file per batch: overwritten, not added
    assert log.buffered == 0 and not list((tmp_path / "spool").glob("*.jsonl"))
    log.close()


def test_shutdown_with_the_lake_down_keeps_the_rows_in_the_spool(lake, tmp_path):
    spool = tmp_path / "spool"
    log = FeedbackLog(DownAfter(lake, ok=0), spool_dir=spool)
    log.start()
    with pytest.raises(ConfigError, match="in use by another serving process"):
        FeedbackLog(lake, spool_dir=spool).open()
    log.record_impression(_imp("r1"))
    log.record_feedback("r1", "i1", "click", now=TS)
    log.record_feedback("r1", "i2", "rating", 4, now=TS)
    assert log.close() == 0  # no exception: the rows wait in the spool
    assert lake.list("raw/") == []
    # a cut-short last line (killed mid-write, never acknowledged) is skipped on replay
    with open(next(spool.glob("*.jsonl")), "ab") as fh:
        fh.write(b'{"kind":"event","event_id":"fb:r1:')

    again = FeedbackLog(lake, spool_dir=spool, flush_s=60)
    again.start()
    assert again.replayed_rows == 3
    # the replayed impression still takes feedback, and its taken slots stay taken
    assert again.record_feedback("r1", "i1", "click", now=TS)["duplicate"]
    again.record_feedback("r1", "i1", "purchase", now=TS)
    again.close()
    assert again.rows_written == 4  # replayed at start (woken at once), the rest at close
    events = lake.read_parquet("raw/events/").to_pylist()
    assert sorted(e["event_id"] for e in events) == ["fb:r1:0", "fb:r1:2", "fb:r1:7"]
    assert lake.read_parquet("raw/impressions/").num_rows == 1
    assert not list(spool.glob("*.jsonl"))


def test_a_full_spool_refuses_feedback_with_503(lake, tmp_path):
    log = FeedbackLog(DownAfter(lake, ok=0), spool_dir=tmp_path / "spool", spool_max_bytes=4096)
    log.open()
    assert log.record_impression(_imp("r0"))
    n = 1
    while log.record_impression(_imp(f"r{n}")):
        n += 1
    assert log.impressions_dropped == 1 and log.spooled_bytes <= 4096
    with pytest.raises(SpoolFull) as err:
        log.record_feedback("r0", "i1", "click", now=TS)
    assert err.value.status == 503
    log.close()
