"""The scheduler SIGKILLed in the middle of an ``ingest_events`` run: the days complete exactly once.

A real embedded Airflow (api-server, dag-processor, scheduler with the LocalExecutor, SQLite) in
a fresh FLYWHEEL_HOME. A two-day range run of ``ingest_events`` is triggered over the REST API;
while its task is running the scheduler's whole process group (its executor's workers and the
task with them) is SIGKILLed, as a crashed host or an OOM kill would. A new scheduler is then
started. Airflow must notice the task that stopped heartbeating, fail that try and retry it, and
the run must finish with every raw event validated exactly once (no duplicate ``event_id``, no
lost row), and the restart creates no second run. (Unpausing starts the DAG's catch-up runs
too; they re-run the same days, which idempotent ingestion must also survive.)
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest

from core.names import INGEST_DAG
from tests.integration.test_loop_scheduler import Api
from tests.integration.test_plugin_http import AirflowProcesses

pytestmark = pytest.mark.slow

START = dt.date(2026, 1, 1)
DAYS = 2


def _raw_event_ids(lake) -> list[str]:
    return lake.read_parquet("raw/events/").column("event_id").to_pylist()


def _validated_event_ids(lake) -> list[str]:
    return lake.read_parquet("validated/events/").column("event_id").to_pylist()


def _task(api: Api, run_id: str) -> dict:
    tis = api.get(f"/dags/{INGEST_DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    return tis[0] if tis else {}


def test_scheduler_killed_mid_ingest_the_days_complete_exactly_once(tmp_path, monkeypatch):
    from core.lake import get_lake
    from simulation.simulator import simulate

    home = tmp_path / "fw"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    lake = get_lake()
    # days big enough, and the kill soon enough, that it lands inside the task: with 400 users
    # and a 2 s wait an idle machine had finished both days (a race, not a kill)
    simulate(lake, days=DAYS, users=2000, items=150, start=START)
    raw = _raw_event_ids(lake)

    af = AirflowProcesses(
        home,
        {
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # notice a dead task within seconds, not the default five minutes
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
        },
    )
    af.prepare()
    try:
        af.start_api()
        af.start("dag-processor")
        af.start("scheduler")
        api = Api(af)
        api.wait(
            "ingest_events to be parsed",
            lambda: api.client.get(f"/dags/{INGEST_DAG}").status_code == 200,
            timeout=180,
        )
        api.unpause(INGEST_DAG)
        last = START + dt.timedelta(days=DAYS - 1)
        run_id = api.trigger(INGEST_DAG, {"start": START.isoformat(), "end": last.isoformat()})
        api.wait(
            "the ingest task to run",
            lambda: _task(api, run_id).get("state") == "running",
            timeout=300,
            poll=0.5,
        )
        time.sleep(0.2)  # inside the task: reading, validating or publishing
        scheduler = af.procs.pop("scheduler")
        os.killpg(scheduler.pid, signal.SIGKILL)  # the scheduler and its executor's workers
        scheduler.wait(timeout=30)
        assert api.run_state(INGEST_DAG, run_id) == "running"  # nobody finished it

        af.start("scheduler")
        api.wait(
            "the run to finish after the restart",
            lambda: api.run_state(INGEST_DAG, run_id) in ("success", "failed"),
            timeout=600,
        )
        ti = _task(api, run_id)
        assert api.run_state(INGEST_DAG, run_id) == "success", (ti, af.tail("scheduler"))
        manual = [r["dag_run_id"] for r in api.runs(INGEST_DAG) if r["run_type"] == "manual"]
        assert manual == [run_id]  # the restart added no run (catch-up runs are scheduled ones)
        print(f"ingest task finished on try {ti.get('try_number')}")

        validated = _validated_event_ids(lake)
        assert len(validated) == len(set(validated)), "an event was published twice"
        assert sorted(validated) == sorted(raw), "an acknowledged raw event was lost"
        assert sorted(lake.partitions("validated", "events")) == [
            START + dt.timedelta(days=k) for k in range(DAYS)
        ]
    finally:
        af.stop()
