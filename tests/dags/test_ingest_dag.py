"""The ``ingest_events`` DAG: its shape, a passing day (asset emitted) and a failing day."""

from __future__ import annotations

import datetime as dt
import hashlib

import pendulum
import pytest

from tests.conftest import load_dag
from tests.data.conftest import DAY0, events_table, put, write_day


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("ingest_events")


def test_shape(dag):
    assert dag.catchup is True
    assert dag.max_active_runs == 1
    assert [t.task_id for t in dag.tasks] == ["validate_and_publish"]
    publish = dag.get_task("validate_and_publish")
    assert [o.uri for o in publish.outlets] == ["flywheel://validated/events"]
    assert all(t.retries >= 1 and t.retry_exponential_backoff for t in dag.tasks)
    assert "quarantine" in dag.doc_md and "stay in `raw/`" in dag.doc_md


def _run(dag, day: dt.date):
    """``dag.test`` infers a manual run's interval as the one ENDING at ``logical_date``."""
    end = pendulum.datetime(day.year, day.month, day.day, tz="UTC").add(days=1)
    run = dag.test(logical_date=end)
    assert run.data_interval_start == end.subtract(days=1)
    return run


def _asset_events(run) -> list[dict]:
    """Extras of the asset events this run emitted (other tests share the Airflow DB)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == "flywheel://validated/events")
        ).all()
        return [r.extra for r in rows if r.source_run_id == run.run_id]


def test_pass_emits_asset_then_fail_quarantines(dag, lake):
    write_day(lake, DAY0)
    run = _run(dag, DAY0)
    assert run.state == "success"
    assert lake.exists("validated/events/dt=2026-01-01/part-00000.parquet")
    (extra,) = _asset_events(run)
    assert extra["rows"] == 40 and extra["distinct_users"] == 7 and extra["distinct_items"] == 10
    assert extra["validation_id"].startswith("2026-01-01")

    # day 2: a rating of 9 -> the task fails, files quarantined byte-identical, nothing written
    day = DAY0 + dt.timedelta(days=1)
    good = events_table(day, 40, [f"i{k}" for k in range(10)])
    bad = good.to_pydict()
    bad["value"][2] = 9.0
    import pyarrow as pa

    key = put(lake, "events", day, pa.table(bad, schema=good.schema))
    digest = hashlib.sha256(lake.read_bytes(key)).hexdigest()
    run = _run(dag, day)
    assert run.state == "failed"
    ti = run.get_task_instance("validate_and_publish")
    assert ti.state == "failed" and ti.try_number == 1  # gate failures are not retried
    q = "quarantine/events/dt=2026-01-02/part-00000.parquet"
    assert hashlib.sha256(lake.read_bytes(q)).hexdigest() == digest
    assert not lake.exists(key)
    assert lake.partition_files("validated", "events", day) == []
    assert _asset_events(run) == []


def test_range_run_ingests_many_days_in_one_task(dag, lake):
    """The `start`/`end` Params (what `flywheel backfill` sets per chunk) ingest every day with
    raw data in the range in the one task; the `gate` Param overrides a threshold for the run."""
    import pyarrow as pa

    days = [DAY0 + dt.timedelta(days=k) for k in (0, 1, 3)]  # day 2 has no raw data: skipped
    for day in days:
        write_day(lake, day)
    good = events_table(days[-1], 40, [f"i{k}" for k in range(10)])
    bad = good.to_pydict()
    bad["value"][2] = 9.0  # 1 of 40 rows: 2.5 % > the default 1 %, under the Param's 5 %
    put(lake, "events", days[-1], pa.table(bad, schema=good.schema))
    end = pendulum.datetime(2026, 3, 1, tz="UTC")
    conf = {"start": "2026-01-01", "end": "2026-01-04", "gate": {"max_bad_row_share": 0.05}}
    run = dag.test(logical_date=end, run_conf=conf)
    assert run.state == "success"
    assert [d.isoformat() for d in lake.partitions("validated", "events")] == [
        d.isoformat() for d in days
    ]
    assert lake.read_parquet("validated/events/dt=2026-01-04/").num_rows == 39
    (extra,) = _asset_events(run)
    assert extra == {
        "date": "2026-01-04",
        "start": "2026-01-01",
        "end": "2026-01-04",
        "days": 3,
        "rows": 119,
    }


def test_params_are_in_the_trigger_form(dag):
    params = dag.params.dump()
    assert set(params) >= {"gate", "start", "end"}
    assert params["gate"] == {} and params["start"] is None
