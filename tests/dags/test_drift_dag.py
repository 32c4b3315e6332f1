"""The ``monitor_drift`` DAG started by hand: the trigger button works with the form left empty."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from tests.conftest import load_dag
from tests.fixtures.lake import write_validated

START = dt.date(2026, 3, 1)


@pytest.fixture
def dag(airflow_db):
    """Parsed afresh per test: ``dag.test(run_conf=…)`` leaves the conf in the tasks' params."""
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


# --- one trigger per day (issue 16, bug 1) ------------------------------------------------------

#: Days of their own: the Airflow database (and so its drift events) is shared by the session.
SHIFT_START = dt.date(2026, 4, 1)
SHIFT = 8  # the catalog shifts on day 8
WINDOW = (SHIFT_START, SHIFT_START + dt.timedelta(days=6))


def _shift_day(k: int) -> dt.date:
    return SHIFT_START + dt.timedelta(days=k)


@pytest.fixture
def shifted(lake):
    """Ten featurised days whose catalog shifts on day 8, and a champion trained on days 0-6."""
    from features.compute import compute_features
    from simulation.simulator import simulate
    from tests.fixtures.lake import publish_raw
    from tests.unit.test_drift_monitor import _register_champion

    days = [_shift_day(k) for k in range(10)]
    simulate(
        lake,
        days=10,
        users=400,
        items=120,
        scenario="catalog_shift",
        shift_day=SHIFT,
        seed=3,
        start=SHIFT_START,
    )
    publish_raw(lake, days)
    for day in days:
        compute_features(lake, day)
    _register_champion(WINDOW)
    return lake


def _drift_events(day: dt.date) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from core.assets import DRIFT

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == DRIFT.name)
        ).all()
        return [dict(e.extra) for e in events if (e.extra or {}).get("date") == day.isoformat()]


def _note(run) -> str | None:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(
            select(DagRun).where(DagRun.dag_id == run.dag_id, DagRun.run_id == run.run_id)
        ).note


def test_a_day_triggers_retraining_once_whatever_runs_check_it(dag, shifted):
    """Two runs checking the shift day (a day listed as unchecked by one run, then by its own
    features event; a re-run; a retry) emit one `flywheel://drift` event; the labels say what
    was emitted: the next drift day within the cooldown is "suppressed", not "retrain"."""
    from core.lake import get_lake
    from flywheel.demo import drift_decisions, format_summary
    from monitoring.monitor import STATE_KEY, read_summary

    day, next_day = _shift_day(SHIFT), _shift_day(SHIFT + 1)
    first = dag.test(
        logical_date=pendulum.datetime(2026, 4, 20, tz="UTC"), run_conf={"day": day.isoformat()}
    )
    assert first.state == "success"
    assert len(_drift_events(day)) == 1
    summary = read_summary(shifted, day)
    assert summary["trigger"]["run_id"] == first.run_id
    assert summary["decision"] == f"drift, retrain triggered (run {first.run_id})"
    assert f"{day}: drift, trigger pending" in _note(first)  # the check, then the emission
    assert f"drift on {day}: retraining triggered" in _note(first)

    # a second run of the same day: drift again, but no second event
    second = dag.test(
        logical_date=pendulum.datetime(2026, 4, 21, tz="UTC"), run_conf={"day": day.isoformat()}
    )
    assert second.state == "success"
    assert second.get_task_instance("emit_drift").state == "skipped"
    assert len(_drift_events(day)) == 1
    assert read_summary(shifted, day)["decision"].startswith("drift, retrain triggered")

    # the lake's trigger log lost (or never written: a retry after the event went out):
    # Airflow's own event log still stops a second emission, and the log is repaired
    get_lake().delete(STATE_KEY)
    third = dag.test(
        logical_date=pendulum.datetime(2026, 4, 22, tz="UTC"), run_conf={"day": day.isoformat()}
    )
    assert third.get_task_instance("emit_drift").state == "skipped"
    assert len(_drift_events(day)) == 1
    assert "already triggered" in _note(third)
    assert read_summary(shifted, day)["trigger"]["run_id"] == first.run_id

    # the next day drifts too, inside the cooldown: no event, and no page says "retrain"
    dag.test(
        logical_date=pendulum.datetime(2026, 4, 23, tz="UTC"),
        run_conf={"day": next_day.isoformat()},
    )
    assert _drift_events(next_day) == []
    nxt = read_summary(shifted, next_day)
    assert nxt["candidate"] is True and nxt["trigger"] is None
    assert nxt["decision"].startswith("drift, suppressed: cooldown: last trigger on")
    text = format_summary(
        {
            "days_ingested": [],
            "days_rejected": [],
            "runs": {},
            "quarantined": [],
            "models": [],
            "drift": drift_decisions(shifted),
        },
        {},
        [],
    )
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  2026-04-")}
    assert "DRIFT → retrain" in lines[day.isoformat()]
    assert "retrain" not in lines[next_day.isoformat()].replace("no retrain", "")
    assert "drift, no retrain" in lines[next_day.isoformat()]
