"""The gate's GX Data Docs, its log and its findings: every validation's Data Docs page in the
lake under ``quality/data_docs/`` (raw user ids never on it), a failing day's log that opens with
the verdict, two rules on one column told apart, and a bulk range that skips a day whose raw
events expired."""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import subprocess
import sys
import textwrap

import pyarrow as pa

from core.privacy import pseudonymise
from ingestion.bulk import ingest_range
from ingestion.pipeline import ingest_day
from tests.data.conftest import (
    DAY0,
    ITEMS,
    NOW,
    events_table,
    items_table,
    put,
    ts,
    users_table,
    write_day,
)
from validation.gate import evaluation_error, redact_gx_result
from validation.results import read_result

SECRET = "alice.secret@example.org"  # a raw user id nobody outside ingestion may see


def _bad_event_types(day: dt.date, n: int = 40, bad: int = 3) -> pa.Table:
    tbl = events_table(day, n, ITEMS)
    types = ["bogus"] * bad + tbl["event_type"].to_pylist()[bad:]
    return tbl.set_column(3, "event_type", pa.array(types))


def _failing_day(lake) -> None:
    """DAY0: users with a duplicated raw id, events with unknown event types."""
    put(lake, "items", DAY0, items_table(DAY0, ITEMS))
    put(lake, "users", DAY0, users_table(DAY0, [SECRET] * 3 + [f"user{k}" for k in range(4)]))
    put(lake, "events", DAY0, _bad_event_types(DAY0))


def _run(lake, day=DAY0) -> None:
    try:
        ingest_day(day, lake=lake, now=NOW)
    except Exception as exc:  # the gate failure is what these tests look past
        assert "failed the quality gate" in str(exc)


def test_every_validation_has_gx_data_docs_in_the_lake(lake):
    _failing_day(lake)
    _run(lake)

    for table in ("items", "users", "events"):
        key = read_result(lake, DAY0, table)["data_docs_key"]
        assert key.startswith(f"quality/data_docs/dt={DAY0}/{table}/validations/{table}_data/")
        assert key.endswith(f"/{table}.html")
        page = lake.read_text(key)
        assert "Expectation Validation Result" in page  # GX's own validation result page
        # its "home" link (relative, as GX writes it) reaches the site's index in the lake
        home = posixpath.normpath(posixpath.join(posixpath.dirname(key), "../../../../index.html"))
        assert '"../../../../index.html"' in page and lake.exists(home)
        site = f"quality/data_docs/dt={DAY0}/{table}/"
        assert key.removeprefix(site) in lake.read_text(home)  # the index links the page
    events = lake.read_text(read_result(lake, DAY0, "events")["data_docs_key"])
    assert "Failed" in events and "bogus" in events
    # only .html reaches the lake (the UI serves .html/.json under quality/)
    assert all(k.endswith(".html") for k in lake.list("quality/data_docs/"))


def test_data_docs_show_user_ids_only_as_pseudonyms(lake):
    _failing_day(lake)
    _run(lake)

    users = read_result(lake, DAY0, "users")
    assert not users["success"]
    page = lake.read_text(users["data_docs_key"])
    assert pseudonymise(SECRET) in page  # the offending value, as validated/ names it
    everything = "\n".join(lake.read_text(k) for k in lake.list("quality/data_docs/"))
    assert SECRET not in everything and "alice.secret" not in everything


def test_a_rerun_keeps_each_runs_page_and_indexes_the_latest(lake):
    write_day(lake, DAY0)
    ingest_day(DAY0, lake=lake, now=NOW)
    first = read_result(lake, DAY0, "events")["data_docs_key"]
    ingest_day(DAY0, lake=lake, now=NOW)
    second = read_result(lake, DAY0, "events")["data_docs_key"]

    assert first != second and lake.exists(first) and lake.exists(second)
    index = lake.read_text(f"quality/data_docs/dt={DAY0}/events/index.html")
    run_of = lambda key: key.split("/")[-3]  # noqa: E731 (.../<validation_id>/<time>/x.html)
    assert run_of(second) in index and run_of(first) not in index


def test_bulk_range_builds_data_docs_only_for_the_batches_gx_ran_on(lake):
    for k in range(3):
        write_day(lake, DAY0 + dt.timedelta(days=k), n=400)
    bad_day = DAY0 + dt.timedelta(days=1)
    put(lake, "events", bad_day, _bad_event_types(bad_day, n=400, bad=1))  # 1 row: split

    res = ingest_range(DAY0, DAY0 + dt.timedelta(days=2), lake=lake, now=NOW)

    assert res["published"] == 3
    flagged = read_result(lake, bad_day, "events")
    assert flagged["rows_quarantined"] == 1 and lake.exists(flagged["data_docs_key"])
    for day in (DAY0, DAY0 + dt.timedelta(days=2)):
        assert read_result(lake, day, "events")["data_docs_key"] is None  # GX did not run
        assert not lake.list(f"quality/data_docs/dt={day}/events/")


def test_two_rules_on_one_column_are_named_apart(lake):
    write_day(lake, DAY0)
    tbl = events_table(DAY0, 40, ITEMS)
    far = [ts(DAY0, 10**8)] + tbl["event_ts"].to_pylist()[1:]  # after the day and after "now"
    put(lake, "events", DAY0, tbl.set_column(5, "event_ts", pa.array(far, tbl["event_ts"].type)))
    _run(lake)

    found = [
        f
        for f in read_result(lake, DAY0, "events")["failed_expectations"]
        if f["column"] == "event_ts"
    ]
    assert len(found) == 2
    assert {f["expectation"] for f in found} == {"expect_column_values_to_be_between"}
    assert found[0]["message"] == found[1]["message"]  # "1 of 40 rows": the title tells apart
    assert len({f["title"] for f in found}) == 2
    assert any("min_value=2025-12-31" in f["title"] for f in found)
    assert any("max_value=2026-06-01" in f["title"] for f in found)


_TASK = textwrap.dedent(
    """
    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    from ingestion.pipeline import ingest_day
    from tests.data.conftest import DAY0, NOW
    ingest_day(DAY0, now=NOW)
    """
)


def test_a_failing_days_log_opens_with_the_verdict(lake, fw_home):
    _failing_day(lake)
    env = {**os.environ, "FLYWHEEL_HOME": str(fw_home), "PYTHONPATH": os.getcwd()}

    proc = subprocess.run(
        [sys.executable, "-c", _TASK], capture_output=True, text=True, env=env, timeout=600
    )

    assert proc.returncode != 0 and "GateFailure" in proc.stderr
    lines = proc.stderr.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("WARNING ingestion.gate"))
    assert first < 20, lines[:first]
    verdict = lines[first]
    assert "gate users 2026-01-01: FAILED" in verdict and pseudonymise(SECRET) in verdict
    events = next(ln for ln in lines if "gate events 2026-01-01" in ln)
    assert "FAILED" in events and "expect_column_values_to_be_in_set(event_type" in events
    assert "3 of 40 rows" in events
    assert not any("great_expectations" in ln for ln in lines[:first])
    assert "Calculating Metrics" not in proc.stderr and SECRET not in proc.stderr


def test_a_range_skips_a_day_whose_raw_events_expired(lake):
    days = [DAY0 + dt.timedelta(days=k) for k in range(3)]
    for day in days[:2]:
        write_day(lake, day, with_catalog=True)
        ingest_day(day, lake=lake, now=NOW)
    lake.delete(f"raw/events/dt={days[1]}/part-00000.parquet")  # past retention (or removed)
    write_day(lake, days[2])

    res = ingest_range(days[0], days[2], lake=lake, now=NOW)

    assert list(res["skipped"]) == [days[1].isoformat()]
    assert "past its retention" in res["skipped"][days[1].isoformat()]
    assert res["published"] == 2 and res["last_published"] == days[2].isoformat()
    assert res["failures"] == {}
    assert read_result(lake, days[1], "events")["published"] is True  # the day stands


def test_an_exception_on_user_id_is_not_quoted():
    trace = f"Traceback (most recent call last):\n  ...\nValueError: bad id {SECRET!r}"
    info = {"raised_exception": True, "exception_message": f"bad id {SECRET!r}"}
    info["exception_traceback"] = trace
    result = {
        "results": [
            {
                "expectation_config": {
                    "type": "expect_column_values_to_be_unique",
                    "kwargs": {"column": "user_id"},
                },
                "result": {},
                "exception_info": dict(info),
            }
        ]
    }

    assert SECRET not in str(redact_gx_result(result, key=b"k" * 32))
    message = evaluation_error(info, "user_id")
    assert message.startswith("could not be evaluated: ValueError") and SECRET not in message
    assert SECRET in evaluation_error(info, "country")  # other columns keep GX's message


def test_data_docs_reach_an_s3_lake(s3_lake):
    _failing_day(s3_lake)
    _run(s3_lake)

    key = read_result(s3_lake, DAY0, "users")["data_docs_key"]
    assert s3_lake.url(key).startswith("s3://flywheel-test/lake/quality/data_docs/")
    assert pseudonymise(SECRET) in s3_lake.read_text(key)
    assert SECRET not in "".join(s3_lake.read_text(k) for k in s3_lake.list("quality/data_docs/"))


def test_a_resent_export_does_not_print_every_seen_id(lake):
    write_day(lake, DAY0, n=200)
    ingest_day(DAY0, lake=lake, now=NOW)
    day = DAY0 + dt.timedelta(days=1)
    put(lake, "events", day, events_table(day, 200, ITEMS, prefix=f"e{DAY0.isoformat()}-"))
    _run(lake, day)

    result = read_result(lake, day, "events")
    assert not result["published"]
    page = lake.read_text(result["data_docs_key"])
    assert "150 more" in page  # the 200 ids already validated: 50 shown
    assert f"e{DAY0.isoformat()}-199<" not in page and f"'e{DAY0.isoformat()}-199'" not in page
