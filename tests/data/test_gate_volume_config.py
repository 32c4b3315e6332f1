"""The volume band (robust, on log counts, weekday-aware, only with enough history) and where the
gate's thresholds come from (defaults, settings, CLI, the DAG's Params)."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest

from core.errors import ConfigError
from validation.config import GateConfig, parse_overrides
from validation.history import MemoryHistory, volume_band

D = dt.date(2026, 3, 2)  # a Monday
CFG = GateConfig()
RATINGS = "/work/shared/data/ml-latest-small/ratings.csv"


def _history(counts: list[int], end: dt.date = D) -> list[tuple[dt.date, int]]:
    """``counts`` on the days before ``end`` (the last one the day before)."""
    return [(end - dt.timedelta(days=len(counts) - k), n) for k, n in enumerate(counts)]


def _passes(rows: int, counts, day: dt.date = D, config: GateConfig = CFG) -> bool:
    low, high = volume_band(counts, day, config)
    return low <= rows and (high is None or rows <= high)


def test_band_needs_enough_history():
    few = _history([1000] * (CFG.volume_min_history_days - 1))
    assert volume_band(few, D, CFG) == (CFG.min_event_rows, None)
    assert _passes(3, few) and not _passes(0, few)  # only "at least one row" applies


def test_steady_traffic_catches_a_collapse_and_a_flood():
    steady = _history([1000, 1100, 950, 1020, 980, 1060, 990] * 4)
    assert _passes(1000, steady) and _passes(400, steady) and _passes(5000, steady)
    assert not _passes(20, steady)  # the simulator's volume_collapse: 2 % of the rows
    assert not _passes(0, steady)  # zero_rows
    assert not _passes(1000 * 200, steady)  # a flood (a replayed backlog)


def test_weekday_aware_centre():
    # weekends at 100 rows, weekdays at 3000: a Saturday of 100 is normal, of 3000 not low
    counts = []
    start = D - dt.timedelta(days=56)
    for k in range(56):
        day = start + dt.timedelta(days=k)
        counts.append((day, 100 if day.weekday() >= 5 else 3000))
    saturday = D + dt.timedelta(days=5)
    low_sat, _ = volume_band(counts, saturday, CFG)
    low_mon, _ = volume_band(counts, D, CFG)
    assert low_sat < 100 < low_mon  # 100 rows on a Monday is a collapse, on a Saturday not


def test_no_false_alarm_on_the_sparse_movielens_history():
    """Every real day of ml-latest-small (4,110 days, 1 to 1,014 ratings, median 3) is inside
    the band learnt from the published days before it: no day quarantined for its volume."""
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    ts = pcsv.read_csv(RATINGS).column("timestamp")
    days = Counter(dt.date(1970, 1, 1) + dt.timedelta(days=int(s) // 86400) for s in ts.to_pylist())
    assert len(days) == 4110 and pc.max(ts).as_py() > 0
    history = MemoryHistory()
    alarms = []
    for day in sorted(days):
        counts = history.volume_history(day, CFG.volume_window_days)
        if not _passes(days[day], counts, day):
            alarms.append((day, days[day], volume_band(counts, day, CFG)))
        history.published(day, "events", None, days[day])
    assert alarms == []


def test_settings_then_run_overrides(monkeypatch):
    assert GateConfig.from_settings() == GateConfig()
    monkeypatch.setenv("FLYWHEEL_GATE__MAX_BAD_ROW_SHARE", "0.05")
    monkeypatch.setenv("FLYWHEEL_GATE__volume_k_high", "12")
    cfg = GateConfig.from_settings()
    assert cfg.max_bad_row_share == 0.05 and cfg.volume_k_high == 12.0
    assert GateConfig.resolve({"volume_k_high": "7"}).volume_k_high == 7.0  # the run wins
    assert GateConfig.resolve({"volume_k_high": "7"}).max_bad_row_share == 0.05
    monkeypatch.delenv("FLYWHEEL_GATE__MAX_BAD_ROW_SHARE")
    monkeypatch.delenv("FLYWHEEL_GATE__volume_k_high")
    monkeypatch.setenv("FLYWHEEL_GATE", json.dumps({"volume_min_history_days": 14}))
    assert GateConfig.from_settings().volume_min_history_days == 14


def test_bad_overrides_are_named(monkeypatch):
    with pytest.raises(ConfigError, match="unknown key 'volume_kk'"):
        GateConfig.resolve({"volume_kk": 3})
    with pytest.raises(ConfigError, match="max_bad_row_share"):
        GateConfig.resolve({"max_bad_row_share": "2"})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["volume_k_high"])
    monkeypatch.setenv("FLYWHEEL_GATE__NOPE", "1")
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        GateConfig.from_settings()


def test_every_threshold_has_a_reason():
    for key, info in GateConfig.describe().items():
        assert info["description"] and len(info["description"]) > 20, key


def test_cli_gate_option_reaches_the_gate(lake, monkeypatch):
    """``flywheel ingest DAY --gate key=value`` and ``--start/--end`` run with the override."""
    import pyarrow as pa
    from typer.testing import CliRunner

    from flywheel.cli import app
    from tests.data.conftest import DAY0, ITEMS, events_table, put, write_day

    monkeypatch.setenv("FLYWHEEL_PSEUDONYM_KEY", "k" * 40)
    write_day(lake, DAY0)
    day = DAY0 + dt.timedelta(days=1)
    bad = events_table(day, 50, ITEMS).to_pydict()
    bad["value"][2] = 9.0  # 2 % of the rows
    put(lake, "events", day, pa.table(bad, schema=events_table(day, 1, ITEMS).schema))
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(DAY0)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ingest", "--start", str(day), "--end", str(day), "--gate", "x=1"])
    assert res.exit_code != 0 and "unknown key 'x'" in str(res.exception or res.output)
    res = runner.invoke(
        app, ["ingest", "--start", str(day), "--end", str(day), "--gate", "max_bad_row_share=0.05"]
    )
    assert res.exit_code == 0, res.output
    assert "1 of 1 days published" in res.output and "1 rows quarantined" in res.output
