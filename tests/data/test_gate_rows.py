"""Row-level breaches quarantine only their rows; each table of a day is judged on its own.

Small contract days from ``tests/data/conftest.py``: the first day holds the catalog, the users
and 40 events; later days 40 events (or more, to put a few bad rows under 1 %).
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from ingestion.pipeline import ingest_day
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
from validation.config import GateConfig
from validation.gate import GateFailure
from validation.results import read_result

DAY1 = DAY0 + dt.timedelta(days=1)
DAY2 = DAY0 + dt.timedelta(days=2)


def _with(tbl: pa.Table, column: str, rows: dict[int, object]) -> pa.Table:
    values = tbl.column(column).to_pylist()
    for i, v in rows.items():
        values[i] = v
    i = tbl.schema.get_field_index(column)
    field = tbl.schema.field(i).with_nullable(True)
    return tbl.set_column(i, field, pa.array(values, tbl.schema.field(i).type))


def test_bad_rows_under_the_threshold_are_split_off(lake):
    write_day(lake, DAY0)
    events = events_table(DAY1, 500, ITEMS)
    events = _with(events, "value", {2: 9.0})
    events = _with(events, "item_id", {5: "nope"})
    events = _with(events, "event_id", {7: events["event_id"][8].as_py()})  # rows 7 and 8
    events = _with(events, "user_id", {11: None})
    raw_key = put(lake, "events", DAY1, events)
    raw_bytes = lake.read_bytes(raw_key)
    ingest_day(DAY0, lake=lake, now=NOW)

    summary = ingest_day(DAY1, lake=lake, now=NOW)  # 5 of 500 rows = 1 %: published
    assert summary["published"] and summary["rows"] == 495 and summary["rows_quarantined"] == 5
    published = lake.read_parquet(f"validated/events/dt={DAY1}/")
    assert published.num_rows == 495
    bad = lake.read_parquet(f"quarantine/events_rows/dt={DAY1}/")
    ids = events["event_id"].to_pylist()
    assert sorted(
        zip(bad["event_id"].to_pylist(), bad["reason"].to_pylist(), strict=True)
    ) == sorted(
        [
            (ids[2], "value in the rating scale for ratings, 1.0 otherwise"),
            (ids[5], "item_id known from items (catalog so far or same day)"),
            (ids[8], "event_id unique in the batch"),  # row 7 (its copy) and row 8
            (ids[8], "event_id unique in the batch"),
            (ids[11], "not null (user_id)"),
        ]
    )
    assert bad.num_rows == 5  # both rows of the repeated id
    assert not set(bad["event_id"].to_pylist()) & set(published["event_id"].to_pylist())
    assert lake.read_bytes(raw_key) == raw_bytes  # the raw file stays, intact
    outcome = read_result(lake, DAY1, "events")
    assert outcome["success"] is False and outcome["published"] is True
    assert outcome["rows"] == 500 and outcome["rows_quarantined"] == 5
    assert outcome["quarantined_reasons"]["event_id unique in the batch"] == 2
    assert len(outcome["failed_expectations"]) == 4  # GX reported each rule
    assert outcome["quarantined_rows"] == lake.url(
        f"quarantine/events_rows/dt={DAY1}/part-00000.parquet"
    )


def test_above_the_threshold_the_table_fails_and_nothing_of_it_is_published(lake):
    write_day(lake, DAY0)
    events = _with(events_table(DAY1, 100, ITEMS), "value", {2: 9.0, 6: 0.0})  # 2 %
    put(lake, "events", DAY1, events)
    ingest_day(DAY0, lake=lake, now=NOW)
    with pytest.raises(GateFailure, match="value in the rating scale") as err:
        ingest_day(DAY1, lake=lake, now=NOW)
    assert err.value.summary["published"] is False
    assert lake.partition_files("validated", "events", DAY1) == []
    assert lake.list("quarantine/events_rows/") == []
    assert lake.list(f"quarantine/events/dt={DAY1}/")  # the raw file, byte-identical
    # a looser threshold for this run publishes the 98 good rows
    lake.move(f"quarantine/events/dt={DAY1}/part-00000.parquet", f"raw/events/dt={DAY1}/x.parquet")
    summary = ingest_day(DAY1, lake=lake, now=NOW, config=GateConfig(max_bad_row_share=0.05))
    assert summary["rows"] == 98 and summary["rows_quarantined"] == 2


def test_bad_events_do_not_withhold_the_days_items_and_users(lake):
    """The cascade of issue 14: a failed events batch used to keep the day's new items out of
    the catalog, so every later day rating them failed too."""
    write_day(lake, DAY0)
    ingest_day(DAY0, lake=lake, now=NOW)
    new_items = ["n1", "n2"]
    put(lake, "items", DAY1, items_table(DAY1, new_items))
    put(lake, "users", DAY1, users_table(DAY1, ["new-user"]))
    put(lake, "events", DAY1, events_table(DAY1, 3, new_items).slice(0, 0))  # zero rows: fails
    with pytest.raises(GateFailure, match=r"\[events\]") as err:
        ingest_day(DAY1, lake=lake, now=NOW)
    assert "[items]" not in str(err.value) and "[users]" not in str(err.value)
    assert lake.read_parquet(f"validated/items/dt={DAY1}/").column("item_id").to_pylist() == [
        "n1",
        "n2",
    ]
    assert lake.partition_files("validated", "users", DAY1)
    assert read_result(lake, DAY1, "items")["published"] is True
    assert read_result(lake, DAY1, "events")["published"] is False
    # the next day's events on those items pass
    put(lake, "events", DAY2, events_table(DAY2, 40, new_items + ITEMS))
    assert ingest_day(DAY2, lake=lake, now=NOW)["rows"] == 40


def test_events_are_judged_against_the_days_items_that_passed(lake):
    write_day(lake, DAY0)
    ingest_day(DAY0, lake=lake, now=NOW)
    items = _with(items_table(DAY1, ["n1", "n2"]), "price", {1: -5.0})  # n2: 50 % bad: fails
    put(lake, "items", DAY1, items)
    put(lake, "events", DAY1, events_table(DAY1, 40, ["n1", "n2"]))  # half rate n2
    with pytest.raises(GateFailure) as err:
        ingest_day(DAY1, lake=lake, now=NOW)
    msg = str(err.value)
    assert "[items]" in msg and "price >= 0" in msg
    assert "[events]" in msg and "item_id known from items" in msg
    # items that pass with a few bad rows: events on the rows kept pass, on the others not
    ids = [f"m{k}" for k in range(200)]
    items = _with(items_table(DAY2, ids), "price", {0: -1.0})  # 1 of 200 rows
    put(lake, "items", DAY2, items)
    put(lake, "events", DAY2, events_table(DAY2, 300, ids[1:]))
    summary = ingest_day(DAY2, lake=lake, now=NOW)
    assert summary["rows"] == 300
    assert read_result(lake, DAY2, "items")["rows_quarantined"] == 1
    assert "m0" not in lake.read_parquet(f"validated/items/dt={DAY2}/")["item_id"].to_pylist()


def test_rerun_is_idempotent(lake):
    write_day(lake, DAY0)
    events = _with(events_table(DAY1, 200, ITEMS), "value", {2: 9.0})
    put(lake, "events", DAY1, events)
    ingest_day(DAY0, lake=lake, now=NOW)
    first = ingest_day(DAY1, lake=lake, now=NOW)
    keys = {k: lake.read_bytes(k) for k in lake.list("validated/") + lake.list("quarantine/")}
    again = ingest_day(DAY1, lake=lake, now=NOW)
    assert {k: lake.read_bytes(k) for k in keys} == keys
    assert sorted(lake.list("validated/") + lake.list("quarantine/")) == sorted(keys)
    assert first["rows"] == again["rows"] == 199


def _case(name: str) -> pa.Table:
    """A 50-row events batch of DAY1 broken in one way (``name``), or clean."""
    t = events_table(DAY1, 50, ITEMS)  # rows 2, 6, 10, ... are ratings; 0, 4, ... views
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    early = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
    edits = {
        "clean": ("value", {}),
        "rating_nan": ("value", {2: float("nan")}),
        "rating_low": ("value", {2: 0.2, 6: 0.5}),  # 0.5: a half star, allowed
        "click_magnitude": ("value", {1: 3.0}),
        "view_nan": ("value", {0: float("nan")}),
        "unknown_type": ("event_type", {3: "like"}),
        "null_user": ("user_id", {4: None, 5: None}),
        "future": ("event_ts", {7: later}),
        "before_interval": ("event_ts", {8: early}),
        "duplicate": ("event_id", {9: t["event_id"][10].as_py()}),
        "seen": ("event_id", {11: "seen-before"}),
        "unknown_item": ("item_id", {12: "nope", 13: "nope"}),
    }
    column, rows = edits[name]
    return _with(t, column, rows) if rows else t


@pytest.mark.parametrize(
    "name",
    [
        "clean",
        "rating_nan",
        "rating_low",
        "click_magnitude",
        "view_nan",
        "unknown_type",
        "null_user",
        "future",
        "before_interval",
        "duplicate",
        "seen",
        "unknown_item",
    ],
)
def test_arrow_replica_agrees_with_gx(name):
    """The prescreen finds something exactly when GX does, and the rows set apart for each rule
    GX reports are as many as GX counted."""
    from ingestion.conform import encode_strings
    from ingestion.gate import gx_frame
    from validation.gate import Gate
    from validation.rows import is_row_level, offending_rows, prescreen

    config = GateConfig()
    data = _case(name)
    start = dt.datetime.combine(DAY1, dt.time(), tzinfo=dt.UTC)
    params = {
        "event_ids_seen": ["seen-before"],
        "unknown_item_ids": ["nope"],
        "ts_min": start - dt.timedelta(hours=1),
        "ts_max": start + dt.timedelta(hours=25),
        "now": NOW,
        "min_rows": 1,
        "max_rows": None,
    }
    frame = gx_frame(encode_strings(data, ("event_id",)), ("event_id",))
    findings, _ = Gate.cached(config).run("events", "data", frame, params)
    assert prescreen("events", data, params, config) == bool(findings)
    assert (name == "clean") == (not findings)
    split = offending_rows("events", data, findings, params, config)
    for f in findings:
        assert is_row_level("events", f)
        label = f"{f.rule} ({f.column})" if f.rule == "not null" else f.rule
        assert split.reasons[label] == int(f.message.split(" of ")[0]), (label, f.message)


@pytest.mark.parametrize(
    ("table", "column", "rows"),
    [
        ("items", "price", {1: -1.0}),
        ("items", "price", {1: float("nan")}),
        ("items", "created_ts", {2: dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}),
        ("items", "item_id", {3: "i0"}),
        ("users", "country", {1: "Germany"}),
        ("users", "age_bucket", {2: "old"}),
        ("users", "signup_ts", {0: dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}),
        ("users", "user_id", {3: None}),
    ],
)
def test_arrow_replica_agrees_with_gx_on_items_and_users(table, column, rows):
    from ingestion.gate import gx_frame
    from validation.gate import Gate
    from validation.history import table_parameters
    from validation.rows import offending_rows, prescreen

    config = GateConfig()
    ids = [f"i{k}" for k in range(6)]
    clean = items_table(DAY1, ids) if table == "items" else users_table(DAY1, ids)
    for data in (clean, _with(clean, column, rows)):
        params = table_parameters(table, DAY1, config, data)
        findings, _ = Gate.cached(config).run(table, "data", gx_frame(data), params)
        assert prescreen(table, data, params, config) == bool(findings)
        split = offending_rows(table, data, findings, params, config)
        assert split.rows_quarantined == (0 if data is clean else len(rows) + (column == "item_id"))
