"""The ``ingest_events`` DAG: its shape, a passing day (asset emitted) and a failing day."""

from __future__ import annotations

import datetime as dt
import hashlib

import pendulum
import pytest

from tests.conftest import load_dag
from tests.data.conftest import DAY0, events_table, put, write_day


@pytest.fixture
def dag(airflow_db):
    """Parsed afresh per test: ``dag.test(run_conf=…)`` leaves the conf in the tasks' params."""
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
    # the reason is on the run itself (its note), not only in the task log
    assert _note(run).startswith("rejected by the gate: ")
    assert "2026-01-02" in _note(run) and "value" in _note(run)


def _note(run) -> str | None:
    """The run's note as the Airflow UI shows it (read back from the database)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dr = session.scalar(
            select(DagRun).where(DagRun.dag_id == run.dag_id, DagRun.run_id == run.run_id)
        )
        return dr.note


def _returned(run) -> dict:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id, key="return_value")
        ).all()
        (row,) = rows
        return XComModel.deserialize_value(row)


def test_day_param_runs_that_data_day(dag, lake):
    """`day` = D (what `flywheel dag test ingest_events --date D` and the trigger form pass)
    ingests data day D whatever the logical date, and the run says so in its note."""
    day = dt.date(2026, 2, 4)
    write_day(lake, day, with_catalog=True)
    logical = pendulum.datetime(2026, 2, 4, tz="UTC")  # a manual run's interval: 02-03
    run = dag.test(logical_date=logical, run_conf={"day": "2026-02-04"})
    assert run.state == "success"
    assert lake.exists("validated/events/dt=2026-02-04/part-00000.parquet")
    assert lake.partitions("validated", "events") == [day]
    assert _returned(run)["date"] == "2026-02-04"
    assert _note(run).startswith("ingested 2026-02-04: 40 events published")
    (extra,) = _asset_events(run)
    assert extra["date"] == "2026-02-04"


def test_manual_run_of_a_day_without_data_fails_at_once(dag, lake):
    """No raw events for a manually chosen day: failed on the first try, the reason in the note
    (no retries with back-off: nothing will land while the user waits)."""
    run = dag.test(
        logical_date=pendulum.datetime(2026, 2, 9, tz="UTC"), run_conf={"day": "2026-02-07"}
    )
    assert run.state == "failed"
    ti = run.get_task_instance("validate_and_publish")
    assert ti.state == "failed" and ti.try_number == 1
    assert _note(run).startswith("no raw events for 2026-02-07 under ")


def test_scheduled_run_without_data_is_skipped_not_failed(dag, lake, monkeypatch):
    """A scheduled run whose day has no data (its wait long over) is not a red failure: the
    task is skipped, the run succeeds, and its note says there was no data for the day."""
    import airflow.models.dagrun as dagrun_module
    from airflow.utils.types import DagRunType

    create = dagrun_module.get_or_create_dagrun

    def as_scheduled(**kwargs):  # what the scheduler creates: run_type "scheduled"
        dr = create(**kwargs)
        dr.run_type = DagRunType.SCHEDULED
        kwargs["session"].commit()
        return dr

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", as_scheduled)
    run = _run(dag, dt.date(2026, 2, 11))
    assert run.run_type == DagRunType.SCHEDULED
    assert run.state == "success"
    assert run.get_task_instance("validate_and_publish").state == "skipped"
    assert _note(run).startswith("no data for 2026-02-11 yet")


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
    assert set(params) >= {"day", "gate", "start", "end"}
    assert params["gate"] == {} and params["start"] is None and params["day"] is None
    # the form tells which day an empty `day` gives a manual run
    assert "day BEFORE the logical date" in dag.params.get_param("day").description
