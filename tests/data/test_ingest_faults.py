"""One test per fault kind through ``ingest_day``: with any bad row failing the table, the table
fails, the broken raw file is in quarantine byte-identical (its result and report in
``quality/``), the message names the rule, file and examples, and the table is not published;
with the defaults every kind is still caught (failed, or its bad rows quarantined). Plus: a later day is unaffected, the fixed day
re-runs cleanly, and a raw file named like the pipeline's report cannot take its place. The
simulator breaks the batches (``inject_fault``), the same code the ``faults`` scenario uses."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil

import pytest

from core.lake import Lake
from ingestion.pipeline import ingest_day
from simulation.simulator import inject_fault, repair_fault, simulate
from validation.config import GateConfig
from validation.gate import GateFailure
from validation.quarantine import quarantine
from validation.results import read_quality_history, read_result, report_key

D0 = dt.date(2026, 1, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
HISTORY = 8  # days ingested before the fault day: more than the volume band needs (7)
FAULT_DAY = D0 + dt.timedelta(days=HISTORY)

# kind -> (table it breaks, text the failure message must contain: the rule)
EXPECTED = {
    "empty_file": ("events", "file is empty"),
    "zero_rows": ("events", "row volume within the band"),
    "missing_column": ("events", "missing column(s)"),
    "extra_column": ("events", "unexpected column(s)"),
    "wrong_type": ("events", "contract says"),
    "null_keys": ("events", "(not null)"),
    "duplicate_event_id": ("events", "event_id unique in the batch"),
    "duplicate_event_id_earlier": ("events", "event_id not already in validated data"),
    "unknown_event_type": ("events", "allowed event_type"),
    "rating_out_of_range": ("events", "value in the rating scale for ratings, 1.0 otherwise"),
    "future_timestamps": ("events", "event_ts not in the future"),
    "unknown_items": ("events", "item_id known from items"),
    "corrupt_parquet": ("items", "unreadable"),
    "non_utf8_csv": ("users", "not valid UTF-8"),
    "volume_collapse": ("events", "row volume within the band"),
}


@pytest.fixture(scope="module")
def base_lake(tmp_path_factory):
    """Ten simulated days; the first eight ingested (history for the cross-day rules)."""
    root = tmp_path_factory.mktemp("ingest-base") / "lake"
    lake = Lake.from_uri(str(root))
    simulate(lake, days=HISTORY + 2, users=120, items=40, seed=3)
    for k in range(HISTORY):
        ingest_day(D0 + dt.timedelta(days=k), lake=lake, now=NOW)
    return root


@pytest.fixture
def fresh(base_lake, tmp_path):
    root = tmp_path / "lake"
    shutil.copytree(base_lake, root)
    return Lake.from_uri(str(root))


def _snapshot(lake: Lake, prefix: str) -> dict[str, str]:
    return {k: hashlib.sha256(lake.read_bytes(k)).hexdigest() for k in lake.list(prefix)}


def test_every_simulator_fault_kind_is_covered():
    from simulation.simulator import FAULT_KINDS

    assert set(EXPECTED) == set(FAULT_KINDS)


#: Kinds that break rows, not the file, schema or volume: the gate may quarantine only the
#: offending rows (when they are at most ``max_bad_row_share`` of the batch) and publish the rest.
ROW_LEVEL = {
    "null_keys",
    "duplicate_event_id",
    "duplicate_event_id_earlier",
    "unknown_event_type",
    "rating_out_of_range",
    "future_timestamps",
    "unknown_items",
}
STRICT = GateConfig(max_bad_row_share=0.0)  # any bad row fails the table (the old gate)
LENIENT = GateConfig(max_bad_row_share=0.5)  # every row-level fault of the simulator splits


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_fault_fails_the_table_and_quarantines(fresh, kind):
    """With any bad row failing the table, every kind fails it: raw file quarantined
    byte-identical, the message names rule, file and table, the table is not published."""
    table, rule = EXPECTED[kind]
    record = inject_fault(fresh, FAULT_DAY, kind, seed=1)
    assert record["table"] == table
    broken = record["file"]
    digest = hashlib.sha256(fresh.read_bytes(broken)).hexdigest()
    validated_before = _snapshot(fresh, "validated/")
    raw = f"raw/{table}/dt={FAULT_DAY}/"
    raw_names = [k[len(raw) :] for k in fresh.list(raw)]

    with pytest.raises(GateFailure) as err:
        ingest_day(FAULT_DAY, lake=fresh, now=NOW, config=STRICT)
    msg = str(err.value)
    assert rule in msg, msg
    assert broken in msg  # names the file
    assert f"[{table}]" in msg
    blamed = {t for t in ("events", "items", "users") if f"[{t}]" in msg}
    # only the broken table is blamed; with the items of the day broken, events rating the
    # day's new items reference items nobody validated (that rule only)
    assert blamed == {table} or (
        table == "items" and blamed == {"items", "events"} and "item_id known from items" in msg
    )

    name = broken.rsplit("/", 1)[-1]
    qprefix = f"quarantine/{table}/dt={FAULT_DAY}/"
    assert hashlib.sha256(fresh.read_bytes(qprefix + name)).hexdigest() == digest
    assert not fresh.exists(broken)
    assert fresh.list(qprefix) == [qprefix + n for n in raw_names]  # what came from raw, only
    result = json.loads(fresh.read_text(f"quality/quarantined/dt={FAULT_DAY}/{table}.json"))
    assert result["outcome"]["success"] is False and result["great_expectations"] is not None
    assert "<html>" in fresh.read_text(report_key(FAULT_DAY, table))
    # the broken table is not published, earlier days are untouched; the day's other tables
    # are judged on their own (published when they passed)
    after = _snapshot(fresh, "validated/")
    assert not fresh.partition_files("validated", table, FAULT_DAY)
    assert {k: v for k, v in after.items() if k in validated_before} == validated_before
    assert {k.split("/")[1] for k in set(after) - set(validated_before)} <= {
        "events",
        "items",
        "users",
    } - blamed
    latest = {(r["date"], r["table"]): r for r in read_quality_history(fresh)}
    assert latest[(FAULT_DAY.isoformat(), table)]["success"] is False
    assert latest[(FAULT_DAY.isoformat(), table)]["published"] is False
    assert latest[(FAULT_DAY.isoformat(), table)]["failed_expectations"]


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_fault_is_caught_with_the_defaults(fresh, kind):
    """With the defaults every kind is still caught: the table fails, or (row-level kinds on
    at most 1 % of the rows) exactly the offending rows are quarantined with their rule."""
    table, rule = EXPECTED[kind]
    inject_fault(fresh, FAULT_DAY, kind, seed=1)
    raw_rows = None
    if table == "events" and fresh.partition_files("raw", "events", FAULT_DAY):
        try:
            raw_rows = fresh.read_parquet(f"raw/events/dt={FAULT_DAY}/").num_rows
        except Exception:  # an unreadable file: the table fails below
            raw_rows = None
    try:
        summary = ingest_day(FAULT_DAY, lake=fresh, now=NOW)
    except GateFailure as err:
        assert rule in str(err)
        assert not fresh.partition_files("validated", table, FAULT_DAY)
        return
    assert kind in ROW_LEVEL, f"{kind} published"
    _assert_split(fresh, rule, summary, raw_rows)


def _assert_split(lake: Lake, rule: str, summary: dict, raw_rows: int | None) -> None:
    """The events of FAULT_DAY were split: the rows file holds the offending rows with
    ``rule`` as their reason, validated/ the rest, and nothing is lost."""
    assert summary["published"] and summary["rows_quarantined"] > 0
    rows = lake.read_parquet(f"quarantine/events_rows/dt={FAULT_DAY}/")
    assert rows.num_rows == summary["rows_quarantined"]
    assert all(rule.strip("()") in r for r in rows.column("reason").to_pylist())
    published = lake.read_parquet(f"validated/events/dt={FAULT_DAY}/")
    assert published.num_rows == summary["rows"] == raw_rows - rows.num_rows
    bad_ids = {i for i in rows.column("event_id").to_pylist() if i is not None}
    kept_ids = set(published.column("event_id").to_pylist())
    assert not (bad_ids & kept_ids) or "already in validated" in rule
    outcome = read_result(lake, FAULT_DAY, "events")
    assert outcome["success"] is False and outcome["published"] is True
    assert outcome["rows_quarantined"] == rows.num_rows
    assert sum(outcome["quarantined_reasons"].values()) >= rows.num_rows
    assert lake.partition_files("raw", "events", FAULT_DAY)  # the raw file stays, intact


@pytest.mark.parametrize("kind", sorted(ROW_LEVEL))
def test_row_level_fault_under_the_threshold_publishes_the_rest(fresh, kind):
    table, rule = EXPECTED[kind]
    inject_fault(fresh, FAULT_DAY, kind, seed=1)
    raw_rows = fresh.read_parquet(f"raw/events/dt={FAULT_DAY}/").num_rows
    summary = ingest_day(FAULT_DAY, lake=fresh, now=NOW, config=LENIENT)
    _assert_split(fresh, rule, summary, raw_rows)
    # re-running the fixed day clears the rows file and publishes every row
    repair_fault(fresh, FAULT_DAY, "events")
    again = ingest_day(FAULT_DAY, lake=fresh, now=NOW, config=LENIENT)
    assert again["rows_quarantined"] == 0
    assert not fresh.list(f"quarantine/events_rows/dt={FAULT_DAY}/")


def test_examples_name_offending_values(fresh):
    inject_fault(fresh, FAULT_DAY, "unknown_event_type", seed=1)
    with pytest.raises(GateFailure) as err:
        ingest_day(FAULT_DAY, lake=fresh, now=NOW, config=STRICT)
    msg = str(err.value)
    assert "column 'event_type'" in msg and "expect_column_values_to_be_in_set" in msg
    assert "e.g. [" in msg


def test_later_day_unaffected_and_fixed_day_reruns(fresh):
    inject_fault(fresh, FAULT_DAY, "rating_out_of_range", seed=1)
    with pytest.raises(GateFailure):
        ingest_day(FAULT_DAY, lake=fresh, now=NOW, config=STRICT)
    later = ingest_day(FAULT_DAY + dt.timedelta(days=1), lake=fresh, now=NOW)
    assert later["rows"] > 0
    # the producer re-delivers a valid batch: the day now passes, items/users of the day too
    repair_fault(fresh, FAULT_DAY, "events")
    fixed = ingest_day(FAULT_DAY, lake=fresh, now=NOW)
    assert fixed["rows"] > 0
    assert fresh.partition_files("validated", "events", FAULT_DAY)
    history = [
        r for r in read_quality_history(fresh, every_run=True) if r["date"] == FAULT_DAY.isoformat()
    ]
    assert {r["success"] for r in history if r["table"] == "events"} == {True, False}


def test_missing_events_fail_clearly(fresh):
    fresh.delete_prefix(f"raw/events/dt={FAULT_DAY}/")
    with pytest.raises(GateFailure, match=f"no raw events for {FAULT_DAY}"):
        ingest_day(FAULT_DAY, lake=fresh, now=NOW)


def test_non_rating_event_with_a_magnitude_fails(fresh):
    """The value rule has two halves: ratings in 1-5 (the simulator's fault kind) and exactly
    1.0 for every other event type; a click worth 3.0 is rejected with the pair shown."""
    import pyarrow as pa

    key = fresh.partition_files("raw", "events", FAULT_DAY)[0]
    t = fresh.read_parquet(key)
    types = t.column("event_type").to_pylist()
    values = t.column("value").to_pylist()
    k = next(i for i, ty in enumerate(types) if ty != "rating")
    values[k] = 3.0
    t = t.set_column(t.schema.get_field_index("value"), t.schema.field("value"), pa.array(values))
    fresh.write_parquet(key, t)

    with pytest.raises(GateFailure) as err:
        ingest_day(FAULT_DAY, lake=fresh, now=NOW, config=STRICT)
    msg = str(err.value)
    assert "value in the rating scale for ratings, 1.0 otherwise" in msg, msg
    assert f"value=3.0 for event_type={types[k]}" in msg
    assert "column 'value'" in msg and key in msg


HOSTILE = b"<html><body><script>fetch('/api/v2/variables',{method:'POST'})</script></body></html>"
FAKE_RESULT = b'{"outcome": {"success": true}}'


def test_raw_file_named_like_the_report_cannot_replace_it(fresh):
    """A raw ``validation_report.html`` (and ``validation_result.json``) beside a failing batch:
    both are quarantined byte-identical as payloads, and the report the outcome links to is the
    pipeline's own, in ``quality/`` where raw files never go."""
    raw = f"raw/events/dt={FAULT_DAY}/"
    inject_fault(fresh, FAULT_DAY, "unknown_event_type", seed=1)  # (rewrites the partition)
    fresh.write_bytes(raw + "validation_report.html", HOSTILE)
    fresh.write_bytes(raw + "validation_result.json", FAKE_RESULT)
    names = {k[len(raw) :] for k in fresh.list(raw)}

    with pytest.raises(GateFailure):
        ingest_day(FAULT_DAY, lake=fresh, now=NOW, config=STRICT)

    qprefix = f"quarantine/events/dt={FAULT_DAY}/"
    assert fresh.read_bytes(qprefix + "validation_report.html") == HOSTILE
    assert fresh.read_bytes(qprefix + "validation_result.json") == FAKE_RESULT
    assert {k[len(qprefix) :] for k in fresh.list(qprefix)} == names  # nothing else there
    assert not fresh.list(raw)

    outcome = read_result(fresh, FAULT_DAY, "events")
    unreadable = [f for f in outcome["failed_expectations"] if "unsupported" in f["message"]]
    assert unreadable and unreadable[0]["files"] == [raw + "validation_report.html"]
    assert outcome["report_uri"] == fresh.url(report_key(FAULT_DAY, "events"))
    assert sorted(outcome["quarantined"]) == sorted(qprefix + n for n in names)
    report = fresh.read_text(report_key(FAULT_DAY, "events"))
    assert "Data quality" in report and "FAILED" in report and "<script" not in report
    full = json.loads(fresh.read_text(f"quality/quarantined/dt={FAULT_DAY}/events.json"))
    assert full["outcome"]["success"] is False and "great_expectations" in full


def test_quarantine_keeps_paths_under_the_partition(fresh):
    """Two raw files with one name in different subfolders both survive, byte-identical."""
    raw = f"raw/events/dt={FAULT_DAY}/"
    fresh.write_bytes(raw + "a/x.csv", b"first")
    fresh.write_bytes(raw + "b/x.csv", b"second")
    moved = quarantine(fresh, "events", FAULT_DAY, [raw + "a/x.csv", raw + "b/x.csv"], {})
    qprefix = f"quarantine/events/dt={FAULT_DAY}/"
    assert moved == [qprefix + "a/x.csv", qprefix + "b/x.csv"]
    assert [fresh.read_bytes(k) for k in moved] == [b"first", b"second"]
    with pytest.raises(ValueError, match="not a raw file"):
        quarantine(fresh, "events", FAULT_DAY, ["quality/results/x.json"], {})
