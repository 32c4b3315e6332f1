"""Driving the loop through Airflow's REST API: the catch-up, until the loop settles.

Shared by the demo (:mod:`flywheel.demo`), the twin's end-to-end test and the loop benchmark:
:func:`start_embedded_airflow` starts the embedded Airflow in the background (any Airflow with
the REST API will do, e.g. the twin's); :func:`run_loop` / :func:`drive_loop` unpause the DAGs,
let ``ingest_events`` catch up over the simulated days and wait until no run is left;
:func:`loop_status` counts the runs.
"""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from core.names import INGEST_DAG, POOLS, TRAIN_DAG
from core.settings import Settings
from flywheel.airflow_client import FINISHED, AirflowClient
from flywheel.airflow_env import admin_password, airflow_env
from flywheel.processes import ProcessGroup, ServiceError, venv_bin, wait_until

#: Run states that keep the loop from settling.
ACTIVE = ("queued", "running")


class Progress:
    """Timestamped progress lines (``[mm:ss] …``), printed only when the text changes."""

    def __init__(self, out: Callable[[str], None] | None = None):
        self.t0 = time.monotonic()
        self.out = out or (lambda s: print(s, flush=True))
        self._last = ""

    def __call__(self, message: str) -> None:
        if message != self._last:
            elapsed = int(time.monotonic() - self.t0)
            self.out(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}")
            self._last = message

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0


# --- the loop driver ------------------------------------------------------------------------
def _day(run: dict) -> dt.date | None:
    """The day a run processes (its data interval's start), if it has one."""
    value = run.get("data_interval_start") or run.get("logical_date")
    return dt.date.fromisoformat(value[:10]) if value else None


def wait_for_dags(
    client: AirflowClient, group: ProcessGroup | None, timeout: float = 240
) -> list[str]:
    """Wait until the dag-processor has parsed ``ingest_events`` and its downstream DAGs."""

    def parsed() -> list[str] | None:
        errors = client.import_errors()
        if errors:
            lines = "; ".join(
                f"{e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}" for e in errors
            )
            raise ServiceError(f"DAG import errors: {lines}")
        ids = client.dag_ids()
        return ids if INGEST_DAG in ids and len(ids) >= 2 else None

    return wait_until(parsed, timeout, "DAGs parsed by the dag-processor", group, interval=3)


def loop_status(client: AirflowClient, start: dt.date, end: dt.date) -> dict[str, Any]:
    """Counts of runs per DAG and state, and the ingest days done/failed in [start, end]."""
    status: dict[str, Any] = {"dags": {}, "ingested": [], "failed_days": [], "active": 0}
    for dag_id in client.dag_ids():
        runs = client.dag_runs(dag_id)
        if dag_id == INGEST_DAG:  # the simulated days only (not a run stopped past the data)
            runs = [r for r in runs if start <= (_day(r) or start) <= end]
        else:
            # asset events waiting for a run the scheduler has not created yet (e.g. while the
            # DAG's previous run was still active): the loop has not settled
            status["active"] += client.get(f"/dags/{dag_id}/assets/queuedEvents")["total_entries"]
        counts: dict[str, int] = {}
        for r in runs:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        status["dags"][dag_id] = counts
        status["active"] += sum(counts.get(s, 0) for s in ACTIVE)
        if dag_id == INGEST_DAG:
            for r in runs:
                day = _day(r)
                if day and start <= day <= end:
                    if r["state"] == "success":
                        status["ingested"].append(day.isoformat())
                    elif r["state"] == "failed":
                        status["failed_days"].append(day.isoformat())
    return status


def _describe(status: dict[str, Any], days: int) -> str:
    """One progress line: ingest days done and rejected, then runs per downstream DAG."""
    done = len(status["ingested"]) + len(status["failed_days"])
    parts = [f"ingest {done}/{days} days ({len(status['failed_days'])} rejected)"]
    for dag_id, counts in sorted(status["dags"].items()):
        if dag_id == INGEST_DAG:
            continue
        ok, bad, act = (
            counts.get("success", 0),
            counts.get("failed", 0),
            sum(counts.get(s, 0) for s in ACTIVE),
        )
        parts.append(
            f"{dag_id} {ok} ok"
            + (f"/{bad} failed" if bad else "")
            + (f"/{act} running" if act else "")
        )
    return " | ".join(parts)


def drive_loop(
    client: AirflowClient,
    start: dt.date,
    days: int,
    progress: Callable[[str], None],
    group: ProcessGroup | None = None,
    timeout: float = 840.0,
    settle_s: float = 20.0,
    final: bool = True,
) -> dict[str, Any]:
    """Run the loop through the scheduler and wait until it settles.

    The asset-driven DAGs are unpaused first, then ``ingest_events``, whose catch-up (one run at
    a time, oldest first) walks the simulated days from its ``start_date``. When the run for the
    last day has finished, ``ingest_events`` is paused again so the catch-up stops there (with
    ``final``, the end of the data: a run already started past it is marked failed; otherwise a
    run already started for the next day just finishes); then the function waits until no DAG
    has a queued or running run for ``settle_s``. Returns the final :func:`loop_status`.
    """
    end = start + dt.timedelta(days=days - 1)
    dag_ids = wait_for_dags(client, group)
    for dag_id in dag_ids:
        if dag_id != INGEST_DAG:
            client.set_paused(dag_id, False)
    client.set_paused(INGEST_DAG, False)
    t0 = time.monotonic()
    deadline = t0 + timeout
    ingest_done = False
    ingest_s = None
    quiet_since: float | None = None
    while True:
        if group is not None:
            group.check_alive()
        status = loop_status(client, start, end)
        progress(_describe(status, days))
        if not ingest_done:
            last = [r for r in client.dag_runs(INGEST_DAG) if _day(r) == end]
            if last and last[0]["state"] in FINISHED:
                client.set_paused(INGEST_DAG, True)
                if final:
                    # a run past the data would wait for raw files that never come: mark it
                    # failed (never delete a run under the scheduler's feet)
                    for r in client.dag_runs(INGEST_DAG):
                        if (_day(r) or end) > end and r["state"] in ACTIVE:
                            run = urllib.parse.quote(r["dag_run_id"], safe="")
                            client.patch(f"/dags/{INGEST_DAG}/dagRuns/{run}", {"state": "failed"})
                ingest_done = True
                ingest_s = time.monotonic() - t0
                progress(
                    f"ingest_events caught up to {end}; paused; waiting for the loop to settle"
                )
        elif status["active"] == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle_s:
                settled = loop_status(client, start, end)
                settled["ingest_s"] = ingest_s  # until the last simulated day was ingested
                return settled
        else:
            quiet_since = None
        if time.monotonic() > deadline:
            raise ServiceError(
                f"the loop did not settle within {timeout:.0f}s: {_describe(status, days)}"
            )
        time.sleep(3)


def ensure_champion(
    client: AirflowClient,
    end_day: dt.date,
    has_champion: Callable[[], bool],
    progress: Callable[[str], None],
    group: ProcessGroup | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """The first full training, when the asset-triggered ones have not produced a champion.

    Early asset-triggered runs of ``train_recommender`` come before enough history and are
    skipped; a team would then run it by hand over the whole window. This does that through the
    REST API (``conf`` ``end_day``) and waits; the promotion gate still decides (a candidate
    that does not beat popularity does not become champion).
    """
    if has_champion():
        return {"triggered": False}
    progress(f"no champion yet: triggering {TRAIN_DAG} for the window ending {end_day}")
    run_id = client.trigger(TRAIN_DAG, conf={"end_day": end_day.isoformat()})
    state = client.wait_run(TRAIN_DAG, run_id, timeout, group)
    champion = has_champion()
    progress(f"{TRAIN_DAG} {run_id}: {state}; champion: {'yes' if champion else 'none'}")
    return {"triggered": True, "run_id": run_id, "state": state, "champion": champion}


def run_loop(
    client: AirflowClient,
    start: dt.date,
    days: int,
    shift_day: int | None,
    progress: Callable[[str], None],
    has_champion: Callable[[], bool],
    group: ProcessGroup | None = None,
    timeout: float = 840.0,
    settle_s: float = 20.0,
) -> dict[str, Any]:
    """The loop in two phases around the shift, as time would pass in production.

    Phase 1 ingests the days before the shift (day index ``shift_day``) until the loop settles
    and makes sure a champion exists (:func:`ensure_champion`); phase 2 resumes the catch-up with
    the shifted days, so drift is judged against a champion trained on the world before it.
    Without a shift inside the range it is one :func:`drive_loop`.
    """
    deadline = time.monotonic() + timeout
    first = None
    if shift_day is not None and 1 < shift_day < days:
        progress(f"phase 1: the {shift_day} days before the shift")
        drive_loop(client, start, shift_day, progress, group, timeout, settle_s, final=False)
        last = start + dt.timedelta(days=shift_day - 1)
        first = ensure_champion(
            client, last, has_champion, progress, group, max(60.0, deadline - time.monotonic())
        )
        progress(f"phase 2: the shifted days from {last + dt.timedelta(days=1)}")
    status = drive_loop(
        client, start, days, progress, group, max(60.0, deadline - time.monotonic()), settle_s
    )
    status["first_training"] = first
    return status


# --- the embedded Airflow, in the background ----------------------------------------------------
def embedded_airflow_env(settings: Settings, jwt_secret: str) -> dict[str, str]:
    """The embedded Airflow's environment for the demo: DAGs start paused (we unpause them)."""
    env = airflow_env(settings)
    env.update(
        {
            # ingest_events catches up from its start_date: it must not start before the data is there
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # a loaded 2-core machine answers the execution API slowly at times
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "10",
            "FLYWHEEL_AIRFLOW_PORT": str(settings.airflow_port),
        }
    )
    return env


def start_embedded_airflow(
    settings: Settings, group: ProcessGroup, progress: Callable[[str], None]
) -> AirflowClient:
    """Migrate, create the pools (:data:`core.names.POOLS`), write the admin password, start
    the components (api-server, scheduler, dag-processor, triggerer); a client once it answers."""
    jwt_secret = secrets.token_urlsafe(32)
    env = embedded_airflow_env(settings, jwt_secret)
    airflow = venv_bin("airflow")
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    progress("migrating the Airflow metadata DB (SQLite)")
    pools = [["pools", "set", name, str(slots), desc] for name, (slots, desc) in POOLS.items()]
    for args in (["db", "migrate"], *pools):
        log = group.log_dir / "airflow-init.log"
        with log.open("ab") as fh:
            code = subprocess.run(
                [airflow, *args], env=env, stdout=fh, stderr=subprocess.STDOUT
            ).returncode
        if code:
            raise ServiceError(f"`airflow {' '.join(args)}` failed ({code}); see {log}")
    password = admin_password(settings)
    progress(
        f"starting Airflow (api-server :{settings.airflow_port}, scheduler, dag-processor, triggerer)"
    )
    for name, args in (
        ("airflow-apiserver", ["api-server", "--port", str(settings.airflow_port)]),
        ("airflow-scheduler", ["scheduler"]),
        ("airflow-dag-processor", ["dag-processor"]),
        ("airflow-triggerer", ["triggerer"]),
    ):
        group.start(name, [airflow, *args], env)
    client = AirflowClient(settings.airflow_url, "admin", password)
    wait_until(client.healthy, 240, "airflow-apiserver", group, interval=2)
    return client
