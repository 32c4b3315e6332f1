"""The ``monitor_drift`` DAG started by hand: the trigger button works with the form left empty."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from tests.conftest import load_dag
from tests.fixtures.lake import write_validated

START = dt.date(2026, 3, 1)


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("monitor_drift")


def test_manual_run_without_a_day_checks_the_newest_featurised_day(dag, lake):
    from features.compute import compute_features
    from monitoring.monitor import read_summary

    logical = pendulum.datetime(2026, 3, 10, tz="UTC")
    run = dag.test(logical_date=logical)  # nothing built yet: a clear failure, no guess
    assert run.state == "failed"
    assert run.get_task_instance("days_to_check").state == "failed"

    days = write_validated(lake, START, 3)
    for day in days:
        compute_features(lake, day)
    run = dag.test(logical_date=logical + dt.timedelta(days=1))
    assert run.state == "success"
    # the newest day with features was checked (no champion yet: stored as "no decision")
    summary = read_summary(lake, days[-1])
    assert summary is not None and summary["drift_detected"] is False
    assert all(read_summary(lake, d) is None for d in days[:-1])
