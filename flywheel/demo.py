"""``flywheel demo`` (``make demo``): the whole loop, for real, on one machine, no services.

Embedded profile: Airflow (api-server, scheduler, dag-processor, triggerer; SQLite,
LocalExecutor), MLflow on SQLite, Feast on SQLite, the lake in ``FLYWHEEL_HOME``. Steps:

1. reset the demo state under ``FLYWHEEL_HOME`` (``--no-fresh`` keeps it);
2. simulate a month (``taste_shift+faults``: the users' taste shifts partway, some days'
   batches break the contract);
3. start Airflow in the background; unpause the asset-driven DAGs, then ``ingest_events``,
   whose catch-up runs every simulated day through the scheduler, oldest first; each validated
   day flows on by Assets: features → training (queue ``gpu``) and drift → retraining;
4. optionally, the serving API with simulated users (their feedback lands in the raw lake);
5. print a summary: days ingested, batches quarantined and why, champion versions with their
   metrics over time, drift decisions, and the URLs of the Airflow, MLflow and Evidently UIs.

Background processes stop at the end unless ``--keep-running`` (then the UIs stay up until
Ctrl-C). The loop driver (:func:`drive_loop`) and the summary (:func:`collect_summary`) are
shared with the twin's end-to-end test and the loop benchmark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import FlywheelError
from flywheel.airflow_client import AirflowClient
from flywheel.processes import (
    ProcessGroup,
    ServiceError,
    free_port,
    http_ok,
    venv_bin,
    wait_until,
)

INGEST_DAG = "ingest_events"
ACTIVE = ("queued", "running")


@dataclass
class DemoConfig:
    """The demo's world: small enough for a 2-core machine in well under 15 minutes."""

    days: int = 30  # a month of traffic
    users: int = 1500  # initial population (signups add more)
    items: int = 300  # initial catalog (new items arrive daily)
    scenario: str = "taste_shift+faults"  # a shift partway and some bad batches
    shift_day: int | None = None  # default: the simulator's (days // 2)
    seed: int = 7
    start: dt.date = dt.date(2026, 1, 1)  # = the DAGs' start_date: catch-up begins here
    # the loop must settle within this; on an idle 2-core machine it takes well under 15
    # minutes, a busy one (other jobs, a CI neighbour) may need twice that
    timeout_s: float = 1800.0
    fresh: bool = True  # wipe FLYWHEEL_HOME's demo state first
    serve: bool = True  # serving API + simulated users after the loop
    keep_running: bool = False

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)


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


# --- the loop driver (shared by the demo, the twin test and the loop benchmark) ---------------
def _day(run: dict) -> dt.date | None:
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
            if last and last[0]["state"] in ("success", "failed"):
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
                final = loop_status(client, start, end)
                final["ingest_s"] = ingest_s  # until the last simulated day was ingested
                return final
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
    progress(f"no champion yet: triggering train_recommender for the window ending {end_day}")
    run_id = client.trigger("train_recommender", conf={"end_day": end_day.isoformat()})
    state = client.wait_run("train_recommender", run_id, timeout, group)
    champion = has_champion()
    progress(f"train_recommender {run_id}: {state}; champion: {'yes' if champion else 'none'}")
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


# --- the summary ------------------------------------------------------------------------------
def _read_json(lake, key: str) -> dict | None:
    try:
        return json.loads(lake.read_text(key))
    except Exception:  # a half-written or foreign file must not break the summary
        return None


def quarantined(lake) -> list[dict[str, Any]]:
    """Rejected batches: ``[{date, table, reasons}]`` from ``quality/results/``."""
    out = []
    for key in lake.list("quality/results/"):
        if not key.endswith(".json"):
            continue
        r = _read_json(lake, key)
        if not r or r.get("success", True):
            continue
        reasons = []
        for f in r.get("failed_expectations", []):
            rule = f.get("rule") or f.get("expectation") or "?"
            examples = ", ".join(str(x) for x in (f.get("examples") or [])[:3])
            reasons.append(
                f"{f.get('column') or '-'}: {rule}: {f.get('message') or ''}"
                + (f" (e.g. {examples})" if examples else "")
            )
        out.append({"date": r.get("date"), "table": r.get("table"), "reasons": reasons})
    return sorted(out, key=lambda x: (str(x["date"]), str(x["table"])))


def drift_decisions(lake) -> list[dict[str, Any]]:
    out = []
    for key in lake.list("reports/drift/"):
        if key.endswith("/summary.json"):
            s = _read_json(lake, key) or {}
            out.append(
                {
                    "date": s.get("date") or key.split("dt=")[1][:10],
                    "drift_detected": s.get("drift_detected"),
                    "drift_share": s.get("drift_share"),
                    "reason": s.get("reason"),
                    "suppressed_by": s.get("suppressed_by"),
                }
            )
    return sorted(out, key=lambda x: str(x["date"]))


def model_versions() -> list[dict[str, Any]]:
    from training.registry import list_versions

    return sorted(list_versions(), key=lambda r: int(r["version"]))


def collect_summary(lake, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "days_ingested": sorted(status["ingested"]),
        "days_rejected": sorted(status["failed_days"]),
        "runs": status["dags"],
        "quarantined": quarantined(lake),
        "models": model_versions(),
        "drift": drift_decisions(lake),
    }


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) else "-"


def _trigger(value: str | None) -> str:
    """``asset: flywheel://features/ {…}`` → ``features``; several assets joined with ``+``."""
    if not value:
        return "-"
    tokens = str(value).replace(",", " ").split()
    names = [
        t.removeprefix("flywheel://").strip("/") for t in tokens if t.startswith("flywheel://")
    ]
    return ("+".join(dict.fromkeys(names)) or str(value).split()[0])[:14]


def format_summary(summary: dict[str, Any], urls: dict[str, str], how: list[str]) -> str:
    lines = ["", "=" * 78, "Flywheel demo: summary", "=" * 78]
    ing, rej = summary["days_ingested"], summary["days_rejected"]
    span = f"{ing[0]} .. {ing[-1]}" if ing else "none"
    lines.append(f"Days ingested: {len(ing)} ({span}); days rejected by the gate: {len(rej)}")
    lines.append("Batches quarantined:")
    for q in summary["quarantined"] or [{"date": "none", "table": "", "reasons": []}]:
        why = "; ".join(q["reasons"][:2]) or ""
        lines.append(f"  {q['date']} {q['table']:<7} {why}"[:160])
    lines.append(
        "Runs per DAG: "
        + ", ".join(
            f"{d} " + "/".join(f"{n} {s}" for s, n in sorted(c.items()))
            for d, c in sorted(summary["runs"].items())
        )
    )
    lines.append(
        "Model versions (oldest first; champion = alias now, decision = at promotion time):"
    )
    lines.append(
        f"  {'ver':<4} {'window':<23} {'trigger':<14} {'ndcg@10':>8} {'recall@20':>9} {'pop ndcg':>8}  decision / aliases"
    )
    for m in summary["models"]:
        t, met = m.get("tags", {}), m.get("metrics", {})
        window = f"{t.get('data_window_start', '?')}..{t.get('data_window_end', '?')}"[:23]
        lines.append(
            f"  {m['version']:<4} {window:<23} {_trigger(t.get('trigger')):<14} "
            f"{_fmt(met.get('holdout_ndcg_at_10')):>8} {_fmt(met.get('holdout_recall_at_20')):>9} "
            f"{_fmt(met.get('popularity_ndcg_at_10')):>8}  {t.get('promotion_decision', '-')}"
            + (f" [{', '.join(m['aliases'])}]" if m.get("aliases") else "")
        )
    if not summary["models"]:
        lines.append("  (no registered versions)")
    lines.append("Drift decisions:")
    for d in summary["drift"]:
        reason = str(d.get("reason") or "").split(" — ")[0]
        if d["drift_detected"]:
            verdict = "DRIFT → retrain"
        elif d.get("suppressed_by"):
            verdict, reason = "drift, cooldown", reason + f" ({d['suppressed_by'][:40]})"
        else:
            verdict = "ok"
        share = _fmt(d["drift_share"], 2)
        lines.append(f"  {d['date']} {verdict:<15} share {share:<5} {reason[:110]}")
    if not summary["drift"]:
        lines.append("  (no drift reports)")
    if isinstance(summary.get("serving"), dict):
        s = summary["serving"]
        lines.append(
            f"Serving ({s['url']}): {s['requests']} requests, {s['errors']} errors, "
            f"{s['clicks_per_slate']:.2f} clicks per slate, feedback {s['feedback']}; true "
            f"relevance of the served slates {s['served_relevance']:.3f} vs "
            f"{s['oracle_relevance']:.3f} for each user's ideal slate"
        )
    elif summary.get("serving"):
        lines.append(f"Serving: {summary['serving']}")
    lines.append("UIs:")
    for name, url in urls.items():
        lines.append(f"  {name:<10} {url}")
    lines += [f"  {h}" for h in how]
    return "\n".join(lines)


# --- the embedded Airflow --------------------------------------------------------------------
def _reset_home(home: Path, progress: Callable[[str], None]) -> None:
    if (home / ".git").exists() or (home / "pyproject.toml").exists():
        raise FlywheelError(f"FLYWHEEL_HOME={home} looks like a source tree; refusing to reset it")
    for sub in ("lake", "airflow", "mlflow", "feast", "evidently", "demo"):
        if (home / sub).exists():
            progress(f"resetting {home / sub}")
            shutil.rmtree(home / sub)


def embedded_airflow_env(settings, jwt_secret: str) -> dict[str, str]:
    """The embedded Airflow's environment for the demo: DAGs start paused (we unpause them)."""
    from flywheel.airflow_env import airflow_env

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
    settings, group: ProcessGroup, progress: Callable[[str], None]
) -> AirflowClient:
    """Migrate, create the ``training`` pool, write the admin password, start the components."""
    jwt_secret = secrets.token_urlsafe(32)
    env = embedded_airflow_env(settings, jwt_secret)
    airflow = venv_bin("airflow")
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    progress("migrating the Airflow metadata DB (SQLite)")
    for args in (
        ["db", "migrate"],
        ["pools", "set", "training", "1", "one training run at a time"],
    ):
        log = group.log_dir / "airflow-init.log"
        with log.open("ab") as fh:
            code = subprocess.run(
                [airflow, *args], env=env, stdout=fh, stderr=subprocess.STDOUT
            ).returncode
        if code:
            raise ServiceError(f"`airflow {' '.join(args)}` failed ({code}); see {log}")
    pw_file = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    if not pw_file.exists():
        pw_file.write_text(json.dumps({"admin": secrets.token_urlsafe(9)}))
    password = json.loads(pw_file.read_text())["admin"]
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


def _has_champion(settings) -> bool:
    from training.registry import configure_mlflow, current_champion, model_name

    return current_champion(configure_mlflow(settings), model_name(settings)) is not None


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve_and_play(settings, group: ProcessGroup, cfg: DemoConfig, progress) -> dict[str, Any]:
    """The serving API on a free port and one day of simulated users against it."""
    from flywheel.airflow_env import airflow_env
    from simulation.traffic import play

    port = settings.serve_port if _port_free(settings.serve_port) else free_port()
    env = {k: v for k, v in airflow_env(settings).items() if not k.startswith("AIRFLOW")}
    group.start("serving", [venv_bin("flywheel"), "serve", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/health"), 120, "serving API", group, interval=1)
    progress(f"serving API up at {url}; simulated users for one day")
    t = play(url, 1, seed=cfg.seed, max_requests=300, time_limit_s=60)
    return {
        "url": url,
        "requests": t.requests,
        "clicks_per_slate": round(t.clicks_per_slate, 4),
        "feedback": t.feedback,
        "errors": t.errors,
        "served_relevance": round(t.served_relevance, 4),
        "oracle_relevance": round(t.oracle_relevance, 4),
    }


def run_demo(cfg: DemoConfig, out: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The demo end to end; returns the summary (also written to ``FLYWHEEL_HOME/demo/``)."""
    from core.lake import get_lake
    from core.settings import get_settings
    from simulation.simulator import simulate

    progress = Progress(out)
    settings = get_settings()
    if settings.profile != "embedded":
        raise FlywheelError("flywheel demo runs the embedded profile: unset FLYWHEEL_PROFILE")
    home = settings.ensure_home()
    if cfg.fresh:
        _reset_home(home, progress)
    if not _port_free(settings.airflow_port):
        port = free_port()
        progress(f"port {settings.airflow_port} is busy; the demo's Airflow uses {port}")
        settings = settings.model_copy(update={"airflow_port": port})
    lake = get_lake()
    progress(
        f"simulating {cfg.days} days from {cfg.start} ({cfg.users} users, {cfg.items} items, "
        f"scenario {cfg.scenario}) into {lake.url('raw/')}"
    )
    sim = simulate(
        lake,
        days=cfg.days,
        users=cfg.users,
        items=cfg.items,
        scenario=cfg.scenario,
        seed=cfg.seed,
        start=cfg.start,
        shift_day=cfg.shift_day,
    )
    sim_info = sim.as_dict()
    progress(
        f"simulated {sim_info.get('total_events', sim.total_events)} events; shift day {sim_info.get('shift_day')}"
    )
    group = ProcessGroup(home / "demo" / "logs")
    summary: dict[str, Any] = {}
    try:
        client = start_embedded_airflow(settings, group, progress)
        status = run_loop(
            client,
            cfg.start,
            cfg.days,
            sim_info.get("shift_day"),
            progress,
            lambda: _has_champion(settings),
            group,
            timeout=cfg.timeout_s,
        )
        summary = collect_summary(lake, status)
        if cfg.serve:
            try:
                summary["serving"] = serve_and_play(settings, group, cfg, progress)
            except Exception as exc:  # the loop's result stands; say why serving did not
                summary["serving"] = f"not run: {type(exc).__name__}: {exc}"[:300]
        summary["simulation"] = {k: v for k, v in sim_info.items() if k != "config"}
        summary["elapsed_s"] = round(progress.elapsed, 1)
        (home / "demo").mkdir(parents=True, exist_ok=True)
        (home / "demo" / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        urls, how = ui_help(settings, cfg.keep_running)
        progress.out(format_summary(summary, urls, how))
        progress(
            f"demo finished in {progress.elapsed / 60:.1f} min; summary in {home / 'demo' / 'summary.json'}"
        )
        if cfg.keep_running:
            keep_uis_up(settings, group, progress)
    finally:
        group.stop()
    return summary


def ui_help(settings, running: bool) -> tuple[dict[str, str], list[str]]:
    pw_file = settings.airflow_home / "simple_auth_manager_passwords.json"
    urls = {
        "Airflow": f"{settings.airflow_url}  (login admin, password in {pw_file})",
        "Flywheel": f"{settings.airflow_url}/flywheel/  (drift, data quality, leaderboard in Airflow)",
        "MLflow": f"http://127.0.0.1:{settings.mlflow_port}",
        "Evidently": f"http://127.0.0.1:{settings.evidently_port}",
    }
    if running:
        return urls, ["(running until Ctrl-C)"]
    return urls, [
        "The demo stopped its background processes. Start the UIs again on this state with:",
        "  .venv/bin/flywheel ui                    # MLflow and Evidently UIs (prints every URL)",
        "  .venv/bin/flywheel airflow standalone    # Airflow: scheduler + UI",
        "or run `flywheel demo --keep-running` to leave them up.",
    ]


def keep_uis_up(settings, group: ProcessGroup, progress) -> None:
    """MLflow and Evidently UIs next to the running Airflow, until Ctrl-C."""
    from flywheel.airflow_env import airflow_env

    env = {k: v for k, v in airflow_env(settings).items() if not k.startswith("AIRFLOW")}
    group.start(
        "mlflow-ui",
        [
            venv_bin("mlflow"),
            "ui",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.mlflow_port),
        ],
        env,
    )
    group.start(
        "evidently-ui",
        [
            venv_bin("evidently"),
            "ui",
            "--workspace",
            str(settings.evidently_workspace),
            "--host",
            "127.0.0.1",
            "--port",
            str(settings.evidently_port),
        ],
        env,
    )
    progress("UIs up; Ctrl-C stops everything")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            group.check_alive()
            time.sleep(2)


def config_dict(cfg: DemoConfig) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(cfg).items()}
