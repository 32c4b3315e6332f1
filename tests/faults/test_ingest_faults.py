"""Ingestion under a real S3 outage: the lake on the moto S3 server over HTTP, stopped in the
middle of ``ingest_day`` and started again.

* S3 goes down after the first table of the day is published (or right after the events'
  partition is written): the run fails with a one-line ``LakeError``, no partition is half
  written and no quality result claims the day; once S3 is back, the re-run completes the day
  exactly once (every input row published once, nothing duplicated).
* S3 goes down while a failed re-run withdraws the day's earlier publication (after the copy
  aside, or after the removal from ``validated/``): no verdict is recorded half way, and the
  next run finishes the withdrawal and records it.
"""

from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc
import pytest

from core.errors import LakeError
from core.lake import get_lake
from ingestion.pipeline import ingest_day
from tests.data.conftest import DAY0, ITEMS, NOW, events_table, put, write_day
from tests.faults.conftest import Moto
from validation.gate import GateFailure
from validation.results import read_result

D1 = DAY0 + dt.timedelta(days=1)


def _fail_after(lake, moto: Moto, method: str, prefix: str) -> list[str]:
    """Stop S3 right after the lake's first ``method`` call on a key under ``prefix``."""
    done: list[str] = []
    real = getattr(type(lake), method)

    def then_fail(key: str, *args) -> None:
        real(lake, key, *args)
        if key.startswith(prefix) and not done:
            done.append(key)
            moto.stop()

    setattr(lake, method, then_fail)
    return done


@pytest.mark.parametrize(
    "after", ["validated/items/", "validated/events/"], ids=["first-table", "events-partition"]
)
def test_s3_outage_in_the_middle_of_ingest(moto, after):
    lake = get_lake()
    write_day(lake, DAY0)  # items, users and 40 events
    hit = _fail_after(lake, moto, "write_bytes", after)

    with pytest.raises(LakeError, match="S3 endpoint unreachable"):
        ingest_day(DAY0, lake=lake, now=NOW)
    assert hit  # S3 went down in the middle of the day's writes

    moto.start()  # back, with what was written before the outage
    lake = get_lake()
    validated = lake.list("validated/")
    assert all(k.endswith("/part-00000.parquet") for k in validated)  # whole files only
    for key in validated:  # each one readable whole
        assert lake.read_parquet(key).num_rows > 0
    assert read_result(lake, DAY0, "events") is None  # no verdict claims the day yet
    assert not lake.list("quarantine/")
    assert len(lake.list(f"raw/events/dt={DAY0}/")) == 1  # the input is untouched

    summary = ingest_day(DAY0, lake=lake, now=NOW)  # the next run recovers by itself

    assert summary["published"] and summary["rows"] == 40
    events = lake.read_parquet(f"validated/events/dt={DAY0}/")
    assert events.num_rows == 40 == pc.count_distinct(events.column("event_id")).as_py()
    assert lake.read_parquet(f"validated/items/dt={DAY0}/").num_rows == len(ITEMS)
    assert lake.read_parquet(f"validated/users/dt={DAY0}/").num_rows == 7
    assert lake.list("validated/") == [
        f"validated/{t}/dt={DAY0}/part-00000.parquet" for t in ("events", "items", "users")
    ]
    result = read_result(lake, DAY0, "events")
    assert result["published"] is True and result["rows"] == 40
    assert not lake.list("quarantine/")


@pytest.mark.parametrize("after", ["copy", "delete"], ids=["copied-aside", "removed"])
def test_s3_outage_while_a_failed_rerun_withdraws_the_day(moto, after):
    lake = get_lake()
    write_day(lake, DAY0)
    write_day(lake, D1)
    ingest_day(DAY0, lake=lake, now=NOW)
    ingest_day(D1, lake=lake, now=NOW)
    published = lake.read_bytes(f"validated/events/dt={D1}/part-00000.parquet")
    put(lake, "events", D1, events_table(D1, 40, ["no-such-item"]))  # redelivered, broken
    hit = _fail_after(lake, moto, after, f"validated/events/dt={D1}/")

    with pytest.raises(LakeError, match="S3 endpoint unreachable"):
        ingest_day(D1, lake=lake, now=NOW)
    assert hit

    moto.start()
    lake = get_lake()
    # nothing recorded yet: the verdict is the earlier pass; its partition is there whole (the
    # copy aside done) or withdrawn (training refuses a published day without its partition)
    assert read_result(lake, D1, "events")["published"] is True
    still = lake.list(f"validated/events/dt={D1}/")
    assert still == ([f"validated/events/dt={D1}/part-00000.parquet"] if after == "copy" else [])
    assert len(lake.list(f"raw/events/dt={D1}/")) == 1  # not quarantined yet

    with pytest.raises(GateFailure, match="withdrawn"):
        ingest_day(D1, lake=lake, now=NOW)

    assert lake.partitions("validated", "events") == [DAY0]
    aside = f"quarantine/events_withdrawn/dt={D1}/part-00000.parquet"
    assert lake.list("quarantine/events_withdrawn/") == [aside]
    assert lake.read_bytes(aside) == published
    result = read_result(lake, D1, "events")
    assert result["published"] is False and result["withdrawn"] == [lake.url(aside)]
    assert lake.list(f"quarantine/events/dt={D1}/") == [
        f"quarantine/events/dt={D1}/part-00000.parquet"
    ]
    assert not lake.list(f"raw/events/dt={D1}/")
