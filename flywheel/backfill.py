"""``flywheel backfill ingest_events``: ingest a range of days through Airflow.

By default the range is cut into chunks of ``days_per_run`` calendar days and each chunk is one
manual run of ``ingest_events`` with the ``start``/``end`` Params: one Airflow task ingests the
chunk's days in one process (:func:`ingestion.bulk.ingest_range`, the same per-day verdicts as
daily runs), the runs one after the other, oldest first. A history of years is then a handful
of task starts instead of thousands. With ``days_per_run=1`` it is Airflow's own backfill: one
scheduler-driven run per day, as the daily schedule makes them.

:func:`airflow_backfill` uses the Airflow API server at ``settings.airflow_url`` when one
answers (``flywheel airflow standalone`` or the demo). Otherwise it starts, for the duration,
an embedded api-server, scheduler and dag-processor with ``[scheduler] use_job_schedule =
False``: the scheduler runs the backfill's runs but creates no catch-up runs of its own. Either
way the scheduler runs the days one at a time, oldest first (backfill ``max_active_runs=1``),
in long-lived processes: no process start per day.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable
from typing import Any

from core.errors import FlywheelError
from core.lake import Lake, get_lake
from core.names import INGEST_DAG
from core.settings import Settings, get_settings
from flywheel.airflow_client import AirflowClient
from flywheel.airflow_env import PASSWORDS_FILE, admin_password, airflow_env, ensure_db
from flywheel.processes import ProcessGroup, free_port, venv_bin, wait_until
from ingestion.bulk import raw_days
from ingestion.pipeline import day_of
from ingestion.publish import TABLE_ORDER
from validation.results import read_result, result_key

FINISHED = ("success", "failed")  # dag run states that end a day
#: Calendar days one run ingests by default (``flywheel backfill --days-per-run``).
DAYS_PER_RUN = 366

#: Airflow settings of the embedded processes a backfill starts (on top of ``airflow_env``).
BACKFILL_ENV = {
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # backfill runs only
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
}


def airflow_backfill(
    start: dt.date,
    end: dt.date,
    out: Callable[[str], Any] = print,
    timeout_s: float = 6 * 3600,
    reprocess: str = "completed",
    days_per_run: int = DAYS_PER_RUN,
    gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ingest ``[start, end]`` through Airflow; returns per-day outcomes:
    ``{"days": n, "succeeded": [day, ...], "failed": {day: why}}``.

    See the module docstring for the runs it makes (``days_per_run``) and which Airflow runs
    them. ``reprocess``: with one run per day, Airflow's ``reprocess_behavior`` for days that
    already ran (``completed``, ``failed`` or ``none``); range runs always re-ingest. ``gate``:
    threshold overrides for the runs (the DAG's ``gate`` Param).
    """
    if end < start:
        raise FlywheelError(f"backfill range is empty: --end {end} is before --start {start}")
    settings = get_settings()
    settings.ensure_home()
    client, group = _connect(settings, out)
    try:
        parsed = f"{INGEST_DAG} parsed by the dag-processor"
        wait_until(lambda: _dag_parsed(client), 300, parsed, group, interval=2)
        client.set_paused(INGEST_DAG, False)
        if days_per_run > 1:
            return _range_runs(client, group, start, end, days_per_run, gate, timeout_s, out)
        days = {start + dt.timedelta(days=k) for k in range((end - start).days + 1)}
        body = {
            "dag_id": INGEST_DAG,
            "from_date": dt.datetime.combine(start, dt.time(), dt.UTC).isoformat(),
            "to_date": dt.datetime.combine(end, dt.time(), dt.UTC).isoformat(),
            "max_active_runs": 1,
            "reprocess_behavior": reprocess,
        }
        if gate:
            body["dag_run_conf"] = {"gate": gate}
        backfill = client.post("/backfills", body)
        out(f"backfill {backfill['id']} created: {start} .. {end}")
        states = _wait_days(client, days, group, timeout_s, out)
    finally:
        if group is not None:
            group.stop()
    lake = get_lake()
    return {
        "days": len(days),
        "succeeded": sorted(d.isoformat() for d, s in states.items() if s == "success"),
        "failed": {
            d.isoformat(): _failure_reason(lake, d)
            for d in sorted(d for d, s in states.items() if s == "failed")
        },
    }


def chunks(start: dt.date, end: dt.date, days_per_run: int) -> list[tuple[dt.date, dt.date]]:
    """``[start, end]`` cut into consecutive ranges of at most ``days_per_run`` days."""
    out = []
    while start <= end:
        last = min(end, start + dt.timedelta(days=days_per_run - 1))
        out.append((start, last))
        start = last + dt.timedelta(days=1)
    return out


def _range_runs(
    client: AirflowClient,
    group: ProcessGroup | None,
    start: dt.date,
    end: dt.date,
    days_per_run: int,
    gate: dict[str, Any] | None,
    timeout_s: float,
    out: Callable[[str], Any],
) -> dict[str, Any]:
    """One manual ``ingest_events`` run per chunk of days (its ``start``/``end`` Params), each
    triggered once the one before finished; the days' outcomes from the quality results."""
    deadline = time.monotonic() + timeout_s
    parts = chunks(start, end, days_per_run)
    out(f"backfill of {start} .. {end} created: {len(parts)} run(s) of up to {days_per_run} days")
    for k, (a, b) in enumerate(parts, 1):
        conf = {"start": a.isoformat(), "end": b.isoformat(), "gate": gate or {}}
        run_id = client.trigger(INGEST_DAG, conf=conf)
        left = max(1.0, deadline - time.monotonic())
        state = client.wait_run(INGEST_DAG, run_id, left, group)
        out(f"run {k}/{len(parts)} ({a} .. {b}): {state}")
        if state != "success":
            raise FlywheelError(f"{INGEST_DAG} run {run_id} ({a} .. {b}) {state}: see its task log")
    return range_outcomes(get_lake(), start, end)


def range_outcomes(lake: Lake, start: dt.date, end: dt.date) -> dict[str, Any]:
    """``{"days", "succeeded", "failed"}`` of the days with raw data in ``[start, end]``, from
    their recorded quality results (a day failed when one of its tables did)."""
    days = raw_days(lake, start, end)
    failed = {}
    for day in days:
        recs = [read_result(lake, day, t) for t in TABLE_ORDER]
        if any(r and r.get("validation_id") and not r.get("published", r["success"]) for r in recs):
            failed[day.isoformat()] = _failure_reason(lake, day)
    return {
        "days": len(days),
        "succeeded": [d.isoformat() for d in days if d.isoformat() not in failed],
        "failed": failed,
    }


def _connect(
    settings: Settings, out: Callable[[str], Any]
) -> tuple[AirflowClient, ProcessGroup | None]:
    """A client of the running Airflow we can log in to, or of an embedded one started for
    the backfill (then also its process group, to stop afterwards)."""
    pw_file = settings.airflow_home / PASSWORDS_FILE
    probe = AirflowClient(settings.airflow_url, "admin", "")
    if probe.healthy() and pw_file.exists():
        out(f"using the Airflow at {settings.airflow_url}")
        return _client(settings), None
    if probe.healthy():  # the port is taken by something we cannot log in to
        settings = settings.model_copy(update={"airflow_port": free_port()})
    group = _start_embedded(settings, out)
    try:
        client = _client(settings)
        wait_until(client.healthy, 300, "airflow api-server", group, interval=1)
    except BaseException:
        group.stop()
        raise
    return client, group


def _client(settings: Settings) -> AirflowClient:
    """A client logged in as ``admin`` with the password the simple auth manager keeps."""
    return AirflowClient(settings.airflow_url, "admin", admin_password(settings))


def _start_embedded(settings: Settings, out: Callable[[str], Any]) -> ProcessGroup:
    """Start an api-server, a scheduler (backfill runs only) and a dag-processor."""
    env = airflow_env(settings)
    env.update(BACKFILL_ENV)
    env["AIRFLOW__API_AUTH__JWT_SECRET"] = secrets.token_urlsafe(32)
    ensure_db(settings)  # also the admin password (airflow_env.admin_password)
    group = ProcessGroup(settings.home / "backfill" / "logs")
    out(f"starting an embedded Airflow for the backfill (logs in {group.log_dir})")
    airflow = venv_bin("airflow")
    try:
        group.start(
            "airflow-apiserver", [airflow, "api-server", "--port", str(settings.airflow_port)], env
        )
        group.start("airflow-scheduler", [airflow, "scheduler"], env)
        group.start("airflow-dag-processor", [airflow, "dag-processor"], env)
    except BaseException:
        group.stop()
        raise
    return group


def _dag_parsed(client: AirflowClient) -> bool:
    """Whether the dag-processor has parsed the DAG; raises when it does not import."""
    errors = [e for e in client.import_errors() if e["filename"].endswith(f"{INGEST_DAG}.py")]
    if errors:
        last = errors[0]["stack_trace"].strip().splitlines()[-1]
        raise FlywheelError(f"{INGEST_DAG} does not import: {last}")
    return INGEST_DAG in client.dag_ids()


def _latest_states(client: AirflowClient, days: set[dt.date]) -> dict[dt.date, str]:
    """The state of the newest backfill run of each of ``days`` that has one (a re-run
    creates another run of the same day)."""
    latest: dict[dt.date, dict] = {}
    for r in client.dag_runs(INGEST_DAG):
        if r.get("run_type") != "backfill":
            continue
        d = day_of(r["data_interval_start"])
        if d in days and (d not in latest or r["run_after"] > latest[d]["run_after"]):
            latest[d] = r
    return {d: r["state"] for d, r in latest.items()}


def _wait_days(
    client: AirflowClient,
    days: set[dt.date],
    group: ProcessGroup | None,
    timeout_s: float,
    out: Callable[[str], Any],
) -> dict[dt.date, str]:
    """Poll until every day's run finished; reports progress through ``out`` as it changes."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        states = _latest_states(client, days)
        done = [d for d, s in states.items() if s in FINISHED]
        failed = sum(s == "failed" for s in states.values())
        line = f"{len(done)}/{len(days)} days done, {failed} failed"
        if line != last:
            out(line)
            last = line
        if len(done) == len(days):
            return states
        if group is not None:
            group.check_alive()
        if time.monotonic() > deadline:
            raise FlywheelError(f"backfill not finished after {timeout_s:.0f}s ({line})")
        time.sleep(2)


def _failure_reason(lake: Lake, day: dt.date) -> str:
    """Why ``day`` failed, from its recorded quality results (the failed rules per table)."""
    reasons = []
    for table in TABLE_ORDER:
        rec = read_result(lake, day, table)
        if rec and rec.get("validation_id") and not rec["success"]:
            reasons += [
                f"{table}: {f['rule']} ({f['message']})" for f in rec["failed_expectations"]
            ]
    if reasons:
        return "; ".join(reasons)
    return "see the task log" if lake.exists(result_key(day, "events")) else "no result"
