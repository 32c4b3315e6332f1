"""Detection quality of the drift decision on the simulator.

Reference = the first week (what a champion trained on days 0–6 saw); every later day is checked.
Stable 14 days → no drift decision on any day; taste, catalog and population shifts starting on
day 9 → decided on the onset day or at most 2 days later.

The world is small (1000 users, 300 items) so the test stays fast; the simulator is deterministic
and every scenario's days before the onset equal the stable run's (asserted), so only the
shifted days are validated and featurised again.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pyarrow as pa
import pytest

from core.contract import TABLES
from core.lake import FEATURES, RAW, VALIDATED, Lake, partition_prefix
from core.names import VIEWS
from core.privacy import pseudonymise_many
from features.compute import compute_features, feature_key
from monitoring.config import DriftConfig
from monitoring.monitor import check_drift, report_prefix, unchecked_days
from simulation.simulator import simulate

START = dt.date(2026, 1, 1)
DAYS = 14
ONSET = 9  # 0-based day index the shift starts on
REFERENCE = (START, START + dt.timedelta(days=6))
WORLD = {"users": 1000, "items": 300, "seed": 1}


def _day(k: int) -> dt.date:
    return START + dt.timedelta(days=k)


def validate_raw(lake: Lake, day: dt.date) -> None:
    """The gate's output without the gate: contract columns and types, user ids pseudonymised."""
    for table in ("events", "items", "users"):
        prefix = partition_prefix(RAW, table, day)
        if not lake.list(prefix):
            continue
        schema = TABLES[table].arrow_schema()
        t = lake.read_parquet(prefix).select(schema.names).cast(schema)
        if "user_id" in schema.names:
            ids = pseudonymise_many(t["user_id"].to_pylist())
            t = t.set_column(schema.names.index("user_id"), "user_id", pa.array(ids, pa.string()))
        lake.write(t, table, day, zone=VALIDATED)


def build(lake: Lake, scenario: str, first_day: int = 0) -> None:
    for k in range(first_day, DAYS):
        validate_raw(lake, _day(k))
    for k in range(first_day, DAYS):
        compute_features(lake, _day(k))


@pytest.fixture(scope="module")
def stable_lake(tmp_path_factory) -> Lake:
    root = tmp_path_factory.mktemp("drift-stable")
    lake = Lake.from_uri(root.as_uri())
    simulate(lake, days=DAYS, scenario="stable", **WORLD)
    build(lake, "stable")
    return lake


def shifted_lake(stable: Lake, scenario: str, root) -> Lake:
    lake = Lake.from_uri(root.as_uri())
    simulate(lake, days=DAYS, scenario=scenario, shift_day=ONSET, **WORLD)
    before = partition_prefix(RAW, "events", _day(ONSET - 1))
    assert lake.read_parquet(before).equals(stable.read_parquet(before)), "pre-shift days differ"
    for area in (VALIDATED, FEATURES):  # days before the onset are the stable run's
        for key in stable.list(f"{area}/"):
            if any(f"dt={_day(k).isoformat()}/" in key for k in range(ONSET)):
                shutil.copyfile(stable.path(key), _ensure(lake.path(key)))
    build(lake, scenario, first_day=ONSET)
    return lake


def _ensure(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_stable_fortnight_has_no_drift_decision(stable_lake):
    config = DriftConfig()
    decisions = {}
    for k in range(7, DAYS):
        result, snapshot = check_drift(stable_lake, _day(k), REFERENCE, config)
        assert snapshot is not None and result.current_rows > config.min_rows
        decisions[k] = (result.drift_detected, result.drift_share, result.drifted_columns)
    assert not any(d[0] for d in decisions.values()), decisions


@pytest.mark.parametrize(
    ("scenario", "signal"),
    [
        ("taste_shift", "traffic_category"),
        ("catalog_shift", "item_category"),
        ("population_shift", "user_country"),
    ],
)
def test_shift_decided_within_two_days(stable_lake, tmp_path, scenario, signal):
    lake = shifted_lake(stable_lake, scenario, tmp_path / scenario)
    config = DriftConfig()
    before, _ = check_drift(lake, _day(ONSET - 1), REFERENCE, config)
    assert not before.drift_detected, before.reason
    decided = None
    for k in range(ONSET, ONSET + 3):
        result, _ = check_drift(lake, _day(k), REFERENCE, config)
        if result.drift_detected:
            decided = (k, result)
            break
    assert decided is not None, f"{scenario}: no drift decision within 2 days of day {ONSET}"
    k, result = decided
    assert k - ONSET <= 2
    assert signal in result.drifted_columns, result.drifted_columns
    assert result.drift_share >= config.drift_share
    assert result.reason.startswith("drift:") and signal in result.reason


def test_unchecked_days_are_featurised_days_without_a_summary(lake):
    # what a monitor_drift run checks besides its triggering days
    d1, d2, d3 = (dt.date(2026, 4, k) for k in (1, 2, 3))
    for d in (d1, d2):
        for view in VIEWS:
            lake.write_bytes(feature_key(view, d), b"x")
    lake.write_bytes(feature_key(VIEWS[0], d3), b"x")  # one view only: not featurised yet
    before = d1 - dt.timedelta(days=1)
    assert unchecked_days(lake, before) == [d1.isoformat(), d2.isoformat()]
    lake.write_bytes(report_prefix(d1) + "summary.json", b"{}")
    assert unchecked_days(lake, before) == [d2.isoformat()]
    assert unchecked_days(lake, d2) == []  # never older days: their champion is gone
