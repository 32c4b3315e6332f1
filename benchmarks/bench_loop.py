"""The whole loop through the embedded Airflow scheduler: time per stage and scheduler overhead.

What ``flywheel demo`` does, on the demo's world (1500 users, 300 items, taste shift + faults)
over fewer days (``DAYS``; the month is projected from the per-day cost) so that the benchmark
stays within a few minutes: simulate → start Airflow → ingest catch-up → features → train →
drift → retrain, all by the scheduler. Figures:

* wall time of each stage (simulate, Airflow start-up, the loop until it settles);
* per DAG: runs, summed task time, and its share of the loop's wall time;
* scheduler overhead: for every task instance, the time from its last upstream task's end (or
  its DAG run's start, for a first task) to its own start -- median and p90, and the median
  relative to the median task duration (the baseline measured in the same run).
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row

DEMO_USERS, DEMO_ITEMS = 1500, 300
DAYS, SHIFT_DAY = 8, 5
QUICK = {"days": 3, "shift_day": 2, "users": 200, "items": 60, "scenario": "taste_shift"}


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def scheduler_overhead(client, dag_ids: list[str]) -> tuple[list[float], list[float], dict]:
    """(overheads s, task durations s, per-DAG {runs, task_s}) from the REST API."""
    overheads: list[float] = []
    durations: list[float] = []
    per_dag: dict[str, dict[str, float]] = {}
    for dag_id in dag_ids:
        upstream: dict[str, list[str]] = {}
        for t in client.get(f"/dags/{dag_id}/tasks")["tasks"]:
            for down in t.get("downstream_task_ids", []):
                upstream.setdefault(down, []).append(t["task_id"])
        runs = client.dag_runs(dag_id)
        per_dag[dag_id] = {"runs": len(runs), "task_s": 0.0}
        for run in runs:
            tis = {ti["task_id"]: ti for ti in client.task_instances(dag_id, run["dag_run_id"])}
            for task_id, ti in tis.items():
                start, end = _ts(ti.get("start_date")), _ts(ti.get("end_date"))
                if not start or not end or ti["state"] not in ("success", "failed"):
                    continue
                durations.append((end - start).total_seconds())
                per_dag[dag_id]["task_s"] += (end - start).total_seconds()
                ends = [_ts(tis[u].get("end_date")) for u in upstream.get(task_id, []) if u in tis]
                ends = [e for e in ends if e]
                ready = max(ends) if ends else _ts(run.get("start_date"))
                if ready and start >= ready and ti.get("try_number", 1) <= 1:  # not retry delays
                    overheads.append((start - ready).total_seconds())
    return overheads, durations, per_dag


def _measure(
    days: int, shift_day: int, users: int, items: int, scenario: str = "taste_shift+faults"
) -> dict:
    """Runs in a fresh process (run_isolated): its own FLYWHEEL_HOME, its own Airflow."""
    from core.lake import get_lake
    from core.settings import get_settings
    from flywheel.loop import drive_loop, start_embedded_airflow
    from flywheel.processes import ProcessGroup, free_port
    from simulation.simulator import simulate

    root = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    os.environ["FLYWHEEL_HOME"] = str(root / "home")
    os.environ["FLYWHEEL_AIRFLOW_PORT"] = str(free_port())
    os.environ.setdefault("FLYWHEEL_PSEUDONYM_KEY", "bench-loop-key")
    for key in ("FLYWHEEL_LAKE_URI", "FLYWHEEL_PROFILE", "FLYWHEEL_MLFLOW_TRACKING_URI"):
        os.environ.pop(key, None)
    settings = get_settings()
    settings.ensure_home()
    start = dt.date(2026, 1, 1)
    t0 = time.perf_counter()
    simulate(
        get_lake(), days=days, users=users, items=items, scenario=scenario,
        seed=7, start=start, shift_day=shift_day,
    )  # fmt: skip
    t_sim = time.perf_counter() - t0
    group = ProcessGroup(root / "logs")
    try:
        t0 = time.perf_counter()
        client = start_embedded_airflow(settings, group, lambda m: None)
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        status = drive_loop(client, start, days, lambda m: None, group, timeout=1500, settle_s=10)
        t_loop = time.perf_counter() - t0
        overheads, durations, per_dag = scheduler_overhead(client, list(status["dags"]))
    finally:
        group.stop()
    return {
        "simulate_s": t_sim,
        "airflow_start_s": t_start,
        "loop_s": t_loop,
        "overheads": overheads,
        "durations": durations,
        "per_dag": per_dag,
        "ingested": len(status["ingested"]),
        "ingest_s": status.get("ingest_s") or t_loop,
    }


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(quick: bool) -> list[Row]:
    from benchmarks.common import run_isolated

    size = (
        QUICK
        if quick
        else {"days": DAYS, "shift_day": SHIFT_DAY, "users": DEMO_USERS, "items": DEMO_ITEMS}
    )
    m, _, _ = run_isolated(_measure, **size)
    case = f"{size['days']} days, {size['users']} users, {size['items']} items"
    loop = m["loop_s"]
    per_day = m["ingest_s"] / size["days"]  # the catch-up: one day after another
    tail = loop - m["ingest_s"]  # what is left once the last day is in (features, training, drift)
    month = m["simulate_s"] * 30 / size["days"] + m["airflow_start_s"] + per_day * 30 + tail
    rows = [
        Row("loop", case, "days ingested", m["ingested"]),
        Row("loop", case, "simulate s", m["simulate_s"]),
        Row("loop", case, "airflow start-up s", m["airflow_start_s"]),
        Row("loop", case, "loop wall s (unpause → settled)", loop),
        Row("loop", case, "catch-up s per simulated day", per_day),
        Row("loop", case, "tail s (last day in → settled)", tail),
        Row("loop", "30 days (projected)", "demo total s", month, target="< 900 s", ok=month < 900),
    ]
    for dag_id, d in sorted(m["per_dag"].items()):
        rows.append(
            Row("loop", case, f"{dag_id}: task s ({int(d['runs'])} runs)", d["task_s"],
                baseline="loop wall s", ratio=d["task_s"] / loop if loop else None)
        )  # fmt: skip
    med_task = statistics.median(m["durations"]) if m["durations"] else float("nan")
    med_over = statistics.median(m["overheads"]) if m["overheads"] else float("nan")
    rows += [
        Row("loop", case, "median task duration s", med_task),
        Row(
            "loop", case, "scheduler overhead median s", med_over,
            baseline="median task duration", ratio=med_over / med_task if med_task else None,
        ),
        Row("loop", case, "scheduler overhead p90 s", _p(m["overheads"], 0.9)),
    ]  # fmt: skip
    return rows
