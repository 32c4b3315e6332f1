"""``ingest_range``: many days in one process, the same verdicts and partitions as one
``ingest_day`` per day; days without raw data skipped; a re-run changes nothing."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest

from core.lake import Lake
from ingestion.bulk import ingest_range
from ingestion.importers import import_file
from ingestion.pipeline import ingest_day
from simulation.simulator import SimConfig, simulate
from validation.config import GateConfig
from validation.gate import GateFailure
from validation.results import read_quality_history

D0 = dt.date(2026, 1, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
ML = "/work/shared/data/ml-latest-small/"


def _verdicts(lake: Lake) -> dict[tuple[str, str], tuple]:
    return {
        (r["date"], r["table"]): (
            r["success"],
            r["published"],
            r["rows"],
            r.get("rows_quarantined"),
            sorted(f["rule"] for f in r["failed_expectations"]),
        )
        for r in read_quality_history(lake)
    }


def _data(lake: Lake, prefix: str) -> dict[str, object]:
    return {k: lake.read_parquet(k) for k in lake.list(prefix) if k.endswith(".parquet")}


def _same_lakes(a: Lake, b: Lake) -> None:
    assert _verdicts(a) == _verdicts(b)
    for prefix in ("validated/", "quarantine/"):
        da, db = _data(a, prefix), _data(b, prefix)
        assert da.keys() == db.keys(), prefix
        for key in da:
            assert da[key].equals(db[key]), key


def _per_day(lake: Lake, start: dt.date, end: dt.date, config=None) -> list[str]:
    failed = []
    day = start
    while day <= end:
        if lake.partition_files("raw", "events", day):
            try:
                ingest_day(day, lake=lake, now=NOW, config=config)
            except GateFailure:
                failed.append(day.isoformat())
        day += dt.timedelta(days=1)
    return failed


def test_range_equals_day_by_day_with_faults_and_a_gap(tmp_path):
    a = Lake.from_uri(str(tmp_path / "a"))
    cfg = SimConfig(fault_every=3, fault_kinds=("unknown_items", "volume_collapse", "null_keys"))
    simulate(a, days=12, users=80, items=30, seed=7, scenario="faults", config=cfg)
    gap = D0 + dt.timedelta(days=5)  # a day without any raw data: skipped quietly
    for table in ("events", "items", "users"):
        a.delete_prefix(f"raw/{table}/dt={gap}/")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = Lake.from_uri(str(tmp_path / "b"))
    end = D0 + dt.timedelta(days=11)

    res = ingest_range(D0, end, lake=a, now=NOW)
    # day by day, and GX on every batch (no Arrow prescreen): the same verdicts
    failed = _per_day(b, D0, end, GateConfig(gx_every_batch=True))
    assert res["days"] == 11 and res["quarantined_days"] == failed and failed
    assert res["published"] + len(failed) >= 11
    _same_lakes(a, b)

    # re-running the range (and a day of it) changes nothing
    before = _data(a, "validated/")
    again = ingest_range(D0, end, lake=a, now=NOW)
    assert again["quarantined_days"] == res["quarantined_days"]
    assert again["published"] == res["published"]
    after = _data(a, "validated/")
    assert after.keys() == before.keys() and all(after[k].equals(before[k]) for k in after)


@pytest.fixture(scope="module")
def movielens_month(tmp_path_factory):
    """One month of ml-latest-small (2000-08: ~4,000 ratings) imported as raw partitions."""
    import pandas as pd

    root = tmp_path_factory.mktemp("ml") / "month"
    ratings = pd.read_csv(ML + "ratings.csv")
    ts = pd.to_datetime(ratings["timestamp"], unit="s")
    month = ratings[(ts >= "2000-08-01") & (ts < "2000-09-01")]
    path = root.parent / "ratings.csv"
    month.to_csv(path, index=False)
    lake = Lake.from_uri(str(root))
    import_file(lake, path, "movielens", movies=ML + "movies.csv")
    return root


def test_movielens_month_publishes_every_day_and_matches_day_by_day(movielens_month, tmp_path):
    shutil.copytree(movielens_month, tmp_path / "a")
    shutil.copytree(movielens_month, tmp_path / "b")
    a, b = Lake.from_uri(str(tmp_path / "a")), Lake.from_uri(str(tmp_path / "b"))
    res = ingest_range(dt.date(2000, 8, 1), dt.date(2000, 8, 31), lake=a, now=NOW)
    assert res["quarantined_days"] == [] and res["published"] == res["days"] > 10
    assert res["rows_quarantined"] == 0
    assert res["rows"] == a.read_parquet("validated/events/").num_rows > 1000
    assert _per_day(b, dt.date(2000, 8, 1), dt.date(2000, 8, 31)) == []
    _same_lakes(a, b)


def test_backfill_chunks_and_outcomes(tmp_path):
    from flywheel.backfill import chunks, range_outcomes

    d = dt.date(2026, 1, 1)
    assert chunks(d, d, 366) == [(d, d)]
    assert chunks(d, d + dt.timedelta(days=9), 4) == [
        (d, d + dt.timedelta(days=3)),
        (d + dt.timedelta(days=4), d + dt.timedelta(days=7)),
        (d + dt.timedelta(days=8), d + dt.timedelta(days=9)),
    ]
    lake = Lake.from_uri(str(tmp_path / "lake"))
    cfg = SimConfig(fault_every=1, fault_kinds=("corrupt_parquet",))
    simulate(lake, days=4, users=60, items=20, seed=9, scenario="faults", config=cfg)
    res = ingest_range(D0, D0 + dt.timedelta(days=5), lake=lake, now=NOW)
    out = range_outcomes(lake, D0, D0 + dt.timedelta(days=5))
    assert out["days"] == res["days"] == 4
    assert list(out["failed"]) == res["quarantined_days"] == ["2026-01-04"]
    assert "items: file readable" in out["failed"]["2026-01-04"]
    assert out["succeeded"] == ["2026-01-01", "2026-01-02", "2026-01-03"]
