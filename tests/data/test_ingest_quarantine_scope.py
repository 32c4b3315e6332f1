"""Quarantine is as narrow as the fault: a junk file beside a good export is set aside alone and
the export published; a failed re-run withdraws the day's earlier publication."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from ingestion.pipeline import ingest_day
from tests.data.conftest import DAY0, ITEMS, NOW, events_table, put, write_day
from validation.gate import GateFailure
from validation.results import read_result

D1 = DAY0 + dt.timedelta(days=1)


def _digest(lake, key: str) -> str:
    return hashlib.sha256(lake.read_bytes(key)).hexdigest()


@pytest.mark.parametrize(
    "name, junk",
    [
        ("notes.txt", b"exported by cron, see ticket 42\n"),  # unsupported type
        ("part-00001.parquet", b"PAR1 truncated\x00"),  # unreadable
        ("extra.csv", b"colour,size\nred,4\n"),  # readable, not the contract's columns
    ],
)
def test_a_junk_file_is_quarantined_alone_and_the_export_published(lake, name, junk):
    write_day(lake, DAY0)
    junk_key = put(lake, "events", DAY0, junk, name=name)
    main_key = f"raw/events/dt={DAY0}/part-00000.parquet"

    summary = ingest_day(DAY0, lake=lake, now=NOW)  # no GateFailure: the day was published

    assert summary["published"] and summary["rows"] == 40
    assert summary["files_quarantined"] == 1
    assert lake.read_parquet(f"validated/events/dt={DAY0}/").num_rows == 40
    moved = f"quarantine/events/dt={DAY0}/{name}"
    assert lake.list("quarantine/events/") == [moved]
    assert lake.read_bytes(moved) == junk  # byte-identical
    assert lake.list(f"raw/events/dt={DAY0}/") == [main_key]  # the export stays in raw/
    result = read_result(lake, DAY0, "events")
    assert result["published"] is True and result["success"] is False
    assert result["quarantined"] == [moved]
    assert {tuple(f["files"]) for f in result["failed_expectations"]} == {(junk_key,)}
    assert lake.exists(f"quality/quarantined/dt={DAY0}/events.json")
    # a re-run (the junk gone from raw/) publishes the same day cleanly
    again = ingest_day(DAY0, lake=lake, now=NOW)
    assert again["rows"] == 40 and again["files_quarantined"] == 0
    assert lake.list("quarantine/events/") == [moved]


def test_a_junk_file_beside_a_failing_export_goes_to_quarantine_with_it(lake):
    write_day(lake, DAY0)
    bad = events_table(DAY0, 40, ["no-such-item"] * 3)  # every row has an unknown item
    put(lake, "events", DAY0, bad)
    put(lake, "events", DAY0, b"junk", name="notes.txt")

    with pytest.raises(GateFailure) as failure:
        ingest_day(DAY0, lake=lake, now=NOW)

    assert "notes.txt" in str(failure.value) and "item_id known from items" in str(failure.value)
    assert sorted(lake.list("quarantine/events/")) == [
        f"quarantine/events/dt={DAY0}/notes.txt",
        f"quarantine/events/dt={DAY0}/part-00000.parquet",
    ]
    assert not lake.list("validated/events/")
    assert read_result(lake, DAY0, "events")["published"] is False


def test_a_failed_rerun_withdraws_the_earlier_publication(lake):
    write_day(lake, DAY0)
    write_day(lake, D1)
    ingest_day(DAY0, lake=lake, now=NOW)
    ingest_day(D1, lake=lake, now=NOW)
    published = lake.read_bytes(f"validated/events/dt={D1}/part-00000.parquet")
    # the day is delivered again, broken (every event on an unknown item), and re-run
    put(lake, "events", D1, events_table(D1, 40, ["no-such-item"]))

    with pytest.raises(GateFailure) as failure:
        ingest_day(D1, lake=lake, now=NOW)

    assert "withdrawn" in str(failure.value)
    assert failure.value.summary["withdrawn"] == ["events"]
    assert lake.list(f"validated/events/dt={D1}/") == []  # downstream cannot read it any more
    assert lake.partitions("validated", "events") == [DAY0]
    aside = f"quarantine/events_withdrawn/dt={D1}/part-00000.parquet"
    assert lake.read_bytes(aside) == published  # kept, not lost
    result = read_result(lake, D1, "events")
    assert result["published"] is False and result["withdrawn"] == [lake.url(aside)]
    # the fixed day is re-run: published again, nothing left aside
    put(lake, "events", D1, events_table(D1, 40, ITEMS))
    assert ingest_day(D1, lake=lake, now=NOW)["rows"] == 40
    assert lake.read_parquet(f"validated/events/dt={D1}/").num_rows == 40
    assert not lake.list("quarantine/events_withdrawn/")
    assert not read_result(lake, D1, "events").get("withdrawn")


def test_a_failed_first_run_withdraws_nothing(lake):
    write_day(lake, DAY0)
    put(lake, "events", DAY0, b"")

    with pytest.raises(GateFailure) as failure:
        ingest_day(DAY0, lake=lake, now=NOW)

    assert failure.value.summary["withdrawn"] == []
    assert "withdrawn" not in str(failure.value)
    assert not lake.list("quarantine/events_withdrawn/")
