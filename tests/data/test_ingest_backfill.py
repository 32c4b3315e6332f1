"""``flywheel backfill ingest_events``: Airflow's own backfill (scheduler-driven, embedded
api-server + scheduler + dag-processor started for the duration) gives the same validated
partitions as single runs of the same days."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from core.lake import Lake
from ingestion.pipeline import ingest_day
from tests.data.conftest import DAY0, write_day

DAYS = 2


@pytest.mark.slow
def test_backfill_equals_single_runs(airflow_db, lake, fw_home, tmp_path, monkeypatch):
    from flywheel.backfill import airflow_backfill
    from flywheel.processes import free_port

    monkeypatch.setenv("FLYWHEEL_AIRFLOW_PORT", str(free_port()))
    for k in range(DAYS):
        write_day(lake, DAY0 + dt.timedelta(days=k))
    single = Lake.from_uri(str(tmp_path / "single"))
    shutil.copytree(lake.path("raw"), tmp_path / "single" / "raw")
    for k in range(DAYS):
        ingest_day(DAY0 + dt.timedelta(days=k), lake=single)

    lines: list[str] = []
    res = airflow_backfill(
        DAY0, DAY0 + dt.timedelta(days=DAYS - 1), out=lines.append, timeout_s=420
    )
    assert res["failed"] == {}, res
    assert res["succeeded"] == [(DAY0 + dt.timedelta(days=k)).isoformat() for k in range(DAYS)]
    assert any("backfill" in line and "created" in line for line in lines)
    keys = lake.list("validated/")
    assert keys == single.list("validated/") and len(keys) == DAYS + 2  # events x3, items, users
    for key in keys:
        assert lake.read_parquet(key).equals(single.read_parquet(key)), key
