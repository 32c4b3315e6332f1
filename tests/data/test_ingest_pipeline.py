"""Ingestion beyond single faults: idempotency, privacy, history, the faults scenario end to end,
CSV input and the S3 lake over real HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow.compute as pc
import pytest

from core.lake import Lake
from core.privacy import is_pseudonym, pseudonymise
from ingestion.pipeline import ingest_day
from simulation.simulator import SimConfig, simulate
from validation.results import read_quality_history

D0 = dt.date(2026, 1, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _digests(lake: Lake, prefix: str) -> dict[str, str]:
    return {k: hashlib.sha256(lake.read_bytes(k)).hexdigest() for k in lake.list(prefix)}


def test_rerun_is_idempotent_and_private(lake):
    simulate(lake, days=2, users=80, items=30, seed=5)
    for k in range(2):
        ingest_day(D0 + dt.timedelta(days=k), lake=lake, now=NOW)
    first = _digests(lake, "validated/")
    again = ingest_day(D0 + dt.timedelta(days=1), lake=lake, now=NOW)  # re-run: no duplicates
    assert _digests(lake, "validated/") == first
    day1 = lake.read_parquet("validated/events/dt=2026-01-02/")
    raw1 = lake.read_parquet("raw/events/dt=2026-01-02/")
    assert day1.num_rows == raw1.num_rows == again["rows"]
    assert pc.count_distinct(day1.column("event_id")).as_py() == day1.num_rows
    # the validated data has exactly the contract schema, and only pseudonyms
    from core.contract import TABLES

    assert day1.schema.equals(TABLES["events"].arrow_schema())
    users = lake.read_parquet("validated/users/")
    for tbl in (day1, users):
        ids = tbl.column("user_id").to_pylist()
        assert all(is_pseudonym(u) for u in ids)
    raw_ids = raw1.column("user_id").to_pylist()
    assert set(day1.column("user_id").to_pylist()) == {pseudonymise(u) for u in raw_ids}
    assert not set(raw_ids) & set(day1.column("user_id").to_pylist())
    # history: one latest record per (day, table), every run kept as well
    latest = read_quality_history(lake)
    assert {(r["date"], r["table"]) for r in latest} == {
        (f"2026-01-0{d}", t) for d in (1, 2) for t in ("events", "items", "users")
    }
    assert all(r["success"] and r["published"] for r in latest)
    assert len(read_quality_history(lake, every_run=True)) == 9


def test_faults_scenario_quarantines_exactly_its_fault_days(lake):
    cfg = SimConfig(fault_every=2, fault_kinds=("null_keys", "unknown_items", "non_utf8_csv"))
    summary = simulate(lake, days=8, users=100, items=30, seed=11, scenario="faults", config=cfg)
    fault_days = {f["date"] for f in json.loads(lake.read_text("sim/faults.json"))}
    assert fault_days and {f["date"] for f in summary.faults} == fault_days
    failed = set()
    for k in range(8):
        day = D0 + dt.timedelta(days=k)
        try:
            ingest_day(day, lake=lake, now=NOW)
        except Exception as exc:  # GateFailure; anything else would be a bug and fail below
            assert type(exc).__name__ == "GateFailure", exc
            failed.add(day.isoformat())
    assert failed == fault_days
    assert {d.isoformat() for d in lake.partitions("validated", "events")} == {
        (D0 + dt.timedelta(days=k)).isoformat() for k in range(8)
    } - fault_days
    quarantined = {
        d.isoformat()
        for t in ("events", "items", "users")
        for d in lake.partitions("quarantine", t)
    }
    assert quarantined == fault_days


def test_csv_input_is_parsed_and_validated(lake):
    simulate(lake, days=1, users=50, items=20, seed=2, fmt="csv")
    assert any(k.endswith(".csv") for k in lake.list("raw/events/"))
    summary = ingest_day(D0, lake=lake, now=NOW)
    assert summary["rows"] == lake.read_parquet("validated/events/dt=2026-01-01/").num_rows > 0


def test_a_day_split_over_parquet_and_csv_files_is_one_batch(lake):
    import io

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    simulate(lake, days=1, users=50, items=20, seed=2)
    (key,) = lake.partition_files("raw", "events", D0)
    whole = pq.read_table(io.BytesIO(lake.read_bytes(key)))
    half = whole.num_rows // 2
    buf = io.BytesIO()
    pq.write_table(whole.slice(0, half), buf)  # Parquet keeps the contract's "not null"
    lake.write_bytes(key, buf.getvalue())
    buf = io.BytesIO()
    pcsv.write_csv(whole.slice(half), buf)  # CSV columns come back nullable
    lake.write_bytes(key.replace("part-00000.parquet", "part-00001.csv"), buf.getvalue())
    summary = ingest_day(D0, lake=lake, now=NOW)
    assert summary["rows"] == whole.num_rows
    assert lake.read_parquet("validated/events/dt=2026-01-01/").num_rows == whole.num_rows


def test_s3_lake_over_http(monkeypatch, fw_home):
    from tests.s3_server import moto_s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto_s3("flywheel-ingest") as endpoint:
        monkeypatch.setenv("FLYWHEEL_LAKE_URI", "s3://flywheel-ingest/lake")
        monkeypatch.setenv("FLYWHEEL_S3_ENDPOINT_URL", endpoint)
        from core.lake import S3Lake, get_lake
        from simulation.simulator import inject_fault
        from validation.gate import GateFailure

        lake = get_lake()
        assert isinstance(lake, S3Lake)
        simulate(lake, days=2, users=60, items=20, seed=4)
        assert ingest_day(D0, lake=lake, now=NOW)["rows"] > 0
        day = D0 + dt.timedelta(days=1)
        record = inject_fault(lake, day, "duplicate_event_id_earlier", seed=1)
        broken = lake.read_bytes(record["file"])
        with pytest.raises(GateFailure, match="event_id not already in validated data"):
            ingest_day(day, lake=lake, now=NOW)
        name = record["file"].rsplit("/", 1)[-1]
        assert lake.read_bytes(f"quarantine/events/dt={day}/{name}") == broken
        assert lake.partitions("validated", "events") == [D0]
        assert lake.url("validated/").startswith("s3://flywheel-ingest/lake/")


def test_production_refuses_to_ingest_without_a_key(lake, monkeypatch):
    from core.errors import ConfigError

    simulate(lake, days=1, users=20, items=10, seed=1)
    monkeypatch.setenv("FLYWHEEL_PROFILE", "production")
    monkeypatch.delenv("FLYWHEEL_PSEUDONYM_KEY")
    with pytest.raises(ConfigError, match="pseudonymisation key"):
        ingest_day(D0, lake=lake, now=NOW)
    assert lake.list("validated/") == [] and lake.list("quality/") == []
