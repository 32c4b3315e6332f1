"""The ``build_features`` DAG: its shape, and a run that computes, applies, materializes, emits."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from core.assets import FEATURES
from tests.conftest import load_dag
from tests.fixtures.lake import write_validated

START = dt.date(2026, 5, 1)


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("build_features")


def test_shape(dag):
    assert dag.timetable.asset_condition.uri == "flywheel://validated/events"
    order = [t.task_id for t in dag.topological_sort()]
    assert order.index("compute") < order.index("materialize") < order.index("check_freshness")
    assert order.index("apply_definitions") < order.index("materialize")
    assert set(dag.get_task("check_freshness").upstream_task_ids) == {"materialize"}
    assert set(dag.get_task("materialize").upstream_task_ids) == {
        "resolve_days",
        "compute",
        "apply_definitions",
    }
    assert [o.uri for o in dag.get_task("publish").outlets] == [FEATURES.uri]
    assert dag.get_task("check_freshness").retries == 0
    assert dag.max_active_runs == 1


def _feature_events(run_id: str) -> list[dict]:
    """Extras of the ``flywheel://features`` events of one run (the session's DB is shared)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == FEATURES.uri, AssetEvent.source_run_id == run_id)
        ).all()
        return [dict(r.extra) for r in rows]


def test_manual_run_builds_the_day_and_emits_features(dag, lake, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", "flywheel_dag")
    write_validated(lake, START, 2, n_users=15, n_items=6, events_per_day=80, seed=5)
    day = START + dt.timedelta(days=1)
    run = dag.test(
        logical_date=pendulum.datetime(2026, 5, 2, tz="UTC"), run_conf={"day": day.isoformat()}
    )
    assert run.state == "success", [(t.task_id, t.state) for t in run.get_task_instances()]
    assert lake.exists("features/user_stats/dt=2026-05-02/part-00000.parquet")
    (extra,) = _feature_events(run.run_id)
    assert extra["date"] == "2026-05-02"
    assert extra["days"] == ["2026-05-02"]
    assert extra["rows"] == {"user_stats": 15, "item_stats": 6}
    assert extra["interval"] == ["2026-05-02T00:00:00.000001+00:00", "2026-05-03T00:00:00+00:00"]
    assert extra["freshness"]["user_stats"]["lag_seconds"] == 0
