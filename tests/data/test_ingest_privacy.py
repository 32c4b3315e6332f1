"""Raw ids after ingestion: a failing batch's reports, results and error name users only by
their pseudonym, and raw partitions past the retention window are deleted once validated."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from core.errors import ContractError
from core.lake import RAW
from core.privacy import pseudonymise
from ingestion.pipeline import ingest_day
from ingestion.retention import expire_raw
from tests.data.conftest import (
    DAY0,
    ITEMS,
    NOW,
    events_table,
    items_table,
    put,
    users_table,
    write_day,
)
from validation.gate import GateFailure
from validation.results import read_result

SECRET = "alice.secret@example.org"  # a raw user id nobody outside ingestion may see


def _everything_under(lake, prefix: str) -> str:
    return "\n".join(lake.read_bytes(k).decode("utf-8", "replace") for k in lake.list(prefix))


def test_a_failing_users_batch_shows_only_pseudonyms(lake):
    put(lake, "items", DAY0, items_table(DAY0, ITEMS))
    raw_users = put(lake, "users", DAY0, users_table(DAY0, [SECRET] * 6 + ["bob.raw@example.org"]))
    put(lake, "events", DAY0, events_table(DAY0, 40, ITEMS))
    digest = hashlib.sha256(lake.read_bytes(raw_users)).hexdigest()

    with pytest.raises(GateFailure) as failure:
        ingest_day(DAY0, lake=lake, now=NOW)

    assert SECRET not in str(failure.value)
    assert "bob.raw" not in str(failure.value)
    assert pseudonymise(SECRET) in str(failure.value)  # the example, as the validated data names it
    quality = _everything_under(lake, "quality/")
    assert lake.list("quality/quarantined/") and lake.list("quality/reports/")
    assert SECRET not in quality and "alice.secret" not in quality
    result = read_result(lake, DAY0, "users")
    (finding,) = [f for f in result["failed_expectations"] if f["column"] == "user_id"]
    assert set(finding["examples"]) == {pseudonymise(SECRET)}
    # the quarantined raw file itself is the evidence: kept byte-identical
    moved = lake.list("quarantine/users/")
    assert [hashlib.sha256(lake.read_bytes(k)).hexdigest() for k in moved] == [digest]


def test_an_unparseable_csv_row_is_not_quoted_in_the_error(lake):
    write_day(lake, DAY0)
    lake.delete(f"raw/users/dt={DAY0}/part-00000.parquet")
    text = "user_id,signup_ts,country,age_bucket\n" + f"{SECRET},2026-01-01T00:00:01Z,DE,25-34,x\n"
    put(lake, "users", DAY0, text.encode(), name="users.csv")

    with pytest.raises(GateFailure) as failure:
        ingest_day(DAY0, lake=lake, now=NOW)

    assert "users.csv" in str(failure.value) and "unreadable" in str(failure.value)
    assert SECRET not in str(failure.value)
    assert SECRET not in _everything_under(lake, "quality/")


def _raw_days(lake, table: str) -> list[dt.date]:
    return lake.partitions(RAW, table)


def test_retention_deletes_only_old_validated_raw_days(lake):
    days = [DAY0 + dt.timedelta(days=k) for k in range(4)]
    for day in days:
        write_day(lake, day)
        put(lake, "impressions", day, b"PAR1-not-really", name="batch-1.parquet")
    for day in days[:2]:
        ingest_day(day, lake=lake, now=NOW)
    # day 2 fails (its events quarantined); day 3 is never ingested
    put(lake, "events", days[2], b"", name="part-00000.parquet")
    with pytest.raises(GateFailure):
        ingest_day(days[2], lake=lake, now=NOW)

    today = days[3] + dt.timedelta(days=30)  # every day is past a 30-day window
    gone = expire_raw(lake, today=today, keep_days=30)

    assert _raw_days(lake, "events") == [days[3]]  # day 2's events are in quarantine
    assert _raw_days(lake, "impressions") == days[2:]  # their day is not validated
    assert _raw_days(lake, "items") == _raw_days(lake, "users") == []  # (only on day 0)
    expected = [f"raw/{t}/dt={DAY0}/part-00000.parquet" for t in ("items", "users")]
    expected += [f"raw/events/dt={d}/part-00000.parquet" for d in days[:2]]
    expected += [f"raw/impressions/dt={d}/batch-1.parquet" for d in days[:2]]
    assert sorted(gone) == sorted(expected)
    assert lake.list("quarantine/events/") == [f"quarantine/events/dt={days[2]}/part-00000.parquet"]
    assert lake.list("validated/events/")  # only raw/ is touched


def test_retention_keeps_days_inside_the_window_and_can_be_off(lake):
    write_day(lake, DAY0)
    ingest_day(DAY0, lake=lake, now=NOW)
    assert expire_raw(lake, today=DAY0 + dt.timedelta(days=30), keep_days=30) == []
    assert expire_raw(lake, today=DAY0 + dt.timedelta(days=900), keep_days=0) == []
    assert _raw_days(lake, "events") == [DAY0]
    assert len(expire_raw(lake, today=DAY0 + dt.timedelta(days=31), keep_days=30)) == 3
    assert _raw_days(lake, "events") == []
    # a re-run of the expired day has nothing to judge: it neither fails nor withdraws the day
    with pytest.raises(ContractError, match="past its retention"):
        ingest_day(DAY0, lake=lake, now=NOW)
    assert lake.read_parquet(f"validated/events/dt={DAY0}/").num_rows == 40
    assert read_result(lake, DAY0, "events")["published"] is True
