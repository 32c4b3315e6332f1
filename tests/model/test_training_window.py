"""The training window says which days it used and why others are missing (issue 16, bug 2).

A window day without validated events is one of three things, told apart by the events gate's
latest verdict: quarantined (the gate failed it), without data (no verdict: nothing arrived), or
a day the gate *published* whose partition is gone — an inconsistent lake, which fails the build
with the reason instead of training around it. Validation is the last day(s) *with data* before
the holdout, so a quarantined day there does not leave early stopping with nothing.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from core.errors import FlywheelError
from training.config import TrainingConfig
from training.data import TrainingDataError, build_training_set, load_training_set
from validation.results import outcome, record


def _day(n: int) -> dt.date:
    return dt.date(2026, 1, n)


def _events(lake, n: int, users=("u1", "u2", "u3"), kind: str = "purchase") -> None:
    from tests.fixtures.lake import write_table

    ts = pd.Timestamp(dt.datetime.combine(_day(n), dt.time(12), tzinfo=dt.UTC))
    rows = [(u, f"m{(n + k) % 5}", kind, 1.0, ts) for k, u in enumerate(users)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value", "event_ts"])
    df["event_id"] = [f"e{n}-{i}" for i in range(len(df))]
    write_table(lake, "events", _day(n), df)
    _verdict(lake, n, published=True)


def _verdict(lake, n: int, published: bool) -> None:
    record(
        lake,
        outcome(_day(n), "events", [], published, 3, ["raw/events/x.parquet"], f"v{n}", "now"),
    )


def _cfg():
    return TrainingConfig.load(
        None, ["data.feature_source=contract", "data.window_days=7", "data.val_days=1"]
    ).data


def test_quarantined_validation_day_moves_validation_to_the_last_day_with_data(lake, tmp_path):
    for n in (1, 2, 3, 4, 5, 7):
        _events(lake, n)
    _verdict(lake, 6, published=False)  # the day before the holdout failed the gate
    summary = build_training_set(lake, _day(7), _cfg(), tmp_path / "set")
    ts = load_training_set(summary["location"])
    assert summary["rows"]["val"] == 3  # day 5, the last day with data before the holdout
    assert ts.meta["val_start"] == "2026-01-05"
    assert ts.meta["days"] == [_day(n).isoformat() for n in (1, 2, 3, 4, 5, 7)]
    assert ts.meta["quarantined_days"] == ["2026-01-06"]
    assert ts.meta["days_without_data"] == []


def test_days_without_a_verdict_are_listed_as_without_data(lake, tmp_path):
    for n in (2, 3, 5, 7):
        _events(lake, n)
    summary = build_training_set(lake, _day(7), _cfg(), tmp_path / "set")
    ts = load_training_set(summary["location"])
    assert ts.meta["days_without_data"] == ["2026-01-01", "2026-01-04", "2026-01-06"]
    assert ts.meta["quarantined_days"] == []
    assert summary["days_used"] == 4


def test_a_published_day_whose_partition_is_gone_fails_the_build(lake, tmp_path):
    for n in (1, 2, 3, 5, 6, 7):
        _events(lake, n)
    _verdict(lake, 4, published=True)  # the gate published day 4, but its events are not there
    with pytest.raises(FlywheelError, match="published 2026-01-04"):
        build_training_set(lake, _day(7), _cfg(), tmp_path / "set")


def test_no_validation_day_with_positives_fails_with_the_reason(lake, tmp_path):
    for n in (1, 2, 3, 4, 5, 7):
        _events(lake, n)
    _events(lake, 6, kind="view")  # the validation day has data, but nothing positive
    with pytest.raises(TrainingDataError, match="validation days 2026-01-06"):
        build_training_set(lake, _day(7), _cfg(), tmp_path / "set")
