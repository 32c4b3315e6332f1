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
Ctrl-C). This module is the demo's story and its summary; the loop driver it shares with the
twin's end-to-end test and the loop benchmark is :mod:`flywheel.loop`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import FlywheelError
from core.lake import get_lake
from core.names import TRAIN_DAG
from core.settings import Settings, get_settings
from flywheel.airflow_env import PASSWORDS_FILE, airflow_env
from flywheel.loop import Progress, run_loop, start_embedded_airflow
from flywheel.processes import (
    ProcessGroup,
    ServiceError,
    free_port,
    http_ok,
    port_free,
    venv_bin,
    wait_until,
)
from monitoring.monitor import summaries
from simulation.simulator import simulate
from simulation.traffic import play
from training.registry import configure_mlflow, current_champion, list_versions, model_name
from validation.results import iter_results


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


# --- the summary ------------------------------------------------------------------------------
def quarantined(lake) -> list[dict[str, Any]]:
    """Rejected batches: ``[{date, table, reasons}]`` from ``quality/results/`` (a table
    published with a few rows set aside is not one: its rows are in ``quarantine/``)."""
    out = []
    for _, r in iter_results(lake):
        if r.get("success", True) or r.get("published"):
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
    """The drift monitor's decision of every day it judged, oldest first."""
    keys = (
        "date",
        "drift_detected",
        "drift_share",
        "reason",
        "suppressed_by",
        "candidate",
        "trigger",
    )
    return sorted(
        ({k: s.get(k) for k in keys} for s in summaries(lake)), key=lambda x: str(x["date"])
    )


def model_versions() -> list[dict[str, Any]]:
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


def clip(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters, ending with an ellipsis when something was cut."""
    return text if len(text) <= n else text[: n - 1] + "…"


def training_outcomes(client: Any) -> dict[str, int]:
    """What the ``train_recommender`` runs did, from their task states: registered a version,
    skipped (too little history yet, or a window a version was already trained on), failed, or
    still going."""
    runs: dict[str, dict[str, str | None]] = {}
    for ti in client.all_task_instances(TRAIN_DAG):
        runs.setdefault(ti["dag_run_id"], {})[ti["task_id"]] = ti["state"]
    out = {"registered": 0, "skipped": 0, "failed": 0, "other": 0}
    for states in runs.values():
        if states.get("register") == "success":
            out["registered"] += 1
        elif states.get("build_training_set") == "skipped":
            out["skipped"] += 1
        elif "failed" in states.values() or "upstream_failed" in states.values():
            out["failed"] += 1
        else:
            out["other"] += 1
    return out


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
    return clip("+".join(dict.fromkeys(names)) or str(value).split()[0], 14)


def format_summary(summary: dict[str, Any], urls: dict[str, str], how: list[str]) -> str:
    lines = ["", "=" * 78, "Flywheel demo: summary", "=" * 78]
    ing, rej = summary["days_ingested"], summary["days_rejected"]
    span = f"{ing[0]} .. {ing[-1]}" if ing else "none"
    lines.append(f"Days ingested: {len(ing)} ({span}); days rejected by the gate: {len(rej)}")
    lines.append("Batches quarantined:")
    for q in summary["quarantined"] or [{"date": "none", "table": "", "reasons": []}]:
        why = "; ".join(q["reasons"][:2]) or ""
        lines.append(clip(f"  {q['date']} {q['table']:<7} {why}", 160))
    lines.append(
        "Runs per DAG: "
        + ", ".join(
            f"{d} " + "/".join(f"{n} {s}" for s, n in sorted(c.items()))
            for d, c in sorted(summary["runs"].items())
        )
    )
    if summary.get("trainings"):
        t = summary["trainings"]
        lines.append(
            f"Trainings: {t['registered']} registered a version, {t['skipped']} skipped (too "
            f"little history yet, or a window already trained), {t['failed']} failed"
            + (f", {t['other']} other" if t.get("other") else "")
            + f"; the registry holds {len(summary['models'])} version(s)"
        )
    lines.append(
        "Model versions (oldest first; champion = alias now, decision = at promotion time):"
    )
    lines.append(
        f"  {'ver':<4} {'window':<23} {'trigger':<14} {'ndcg@10':>8} {'recall@20':>9} {'strongest baseline':<25}  decision / aliases"
    )
    for m in summary["models"]:
        t, met = m.get("tags", {}), m.get("metrics", {})
        window = clip(f"{t.get('data_window_start', '?')}..{t.get('data_window_end', '?')}", 23)
        lines.append(
            f"  {m['version']:<4} {window:<23} {_trigger(t.get('trigger')):<14} "
            f"{_fmt(met.get('holdout_ndcg_at_10')):>8} {_fmt(met.get('holdout_recall_at_20')):>9} "
            f"{t.get('strongest_baseline', '-'):<16} {_fmt(met.get('strongest_baseline_ndcg_at_10')):>8}  "
            f"{t.get('promotion_decision', '-')}"
            + (f" [{', '.join(m['aliases'])}]" if m.get("aliases") else "")
        )
    if not summary["models"]:
        lines.append("  (no registered versions)")
    lines.append("Drift decisions:")
    for d in summary["drift"]:
        reason = str(d.get("reason") or "").split(" — ")[0]
        if d.get("trigger"):  # a flywheel://drift event was emitted for the day
            verdict = "DRIFT → retrain"
        elif d.get("candidate") or d["drift_detected"]:
            why = d.get("suppressed_by") or "trigger not emitted"
            verdict, reason = "drift, no retrain", reason + f" ({clip(why, 40)})"
        elif d["drift_share"] is None:
            verdict = "nothing compared"
        else:
            verdict = "ok"
        share = _fmt(d["drift_share"], 2)
        lines.append(f"  {d['date']} {verdict:<17} share {share:<5} {clip(reason, 110)}")
    if not summary["drift"]:
        lines.append("  (no drift reports)")
    if isinstance(summary.get("serving"), dict):
        lines += serving_lines(summary["serving"])
    elif summary.get("serving"):
        lines.append(f"Serving: {summary['serving']}")
    lines.append("UIs:")
    for name, url in urls.items():
        lines.append(f"  {name:<10} {url}")
    lines += [f"  {h}" for h in how]
    return "\n".join(lines)


# --- the demo ---------------------------------------------------------------------------------
def serving_ready(url: str) -> bool:
    """Whether the serving API answers with its model: a champion loaded, online features and
    the serving data (catalog, users) read. Until then every request gets the popularity
    fallback, and a demo's traffic played then measures the fallback, not the model."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            health = json.loads(resp.read())
    except (OSError, ValueError):
        return False
    return bool(health.get("champion") and health.get("features") and health.get("data_as_of"))


def serving_lines(s: dict[str, Any]) -> list[str]:
    """The summary's serving lines: traffic, true relevance, and which model served it."""
    by = s.get("relevance_by_version") or {}
    served_by = ", ".join(
        f"{'v' + v if v.isdigit() else v} {n} slates (relevance {by.get(v, 0.0):.3f})"
        for v, n in sorted((s.get("model_versions") or {}).items())
    )
    return [
        f"Serving ({s['url']}): {s['requests']} requests, {s['errors']} errors, "
        f"{s['clicks_per_slate']:.2f} clicks per slate, feedback {s['feedback']}; true "
        f"relevance of the served slates {s['served_relevance']:.3f} vs "
        f"{s['oracle_relevance']:.3f} for each user's ideal slate",
        f"  served by: {served_by or 'nothing'}",
    ]


def _reset_home(home: Path, progress: Callable[[str], None]) -> None:
    """Remove the demo's state under ``home`` (never a source tree's)."""
    if (home / ".git").exists() or (home / "pyproject.toml").exists():
        raise FlywheelError(f"FLYWHEEL_HOME={home} looks like a source tree; refusing to reset it")
    for sub in ("lake", "airflow", "mlflow", "feast", "evidently", "demo"):
        if (home / sub).exists():
            progress(f"resetting {home / sub}")
            shutil.rmtree(home / sub)


def _has_champion(settings: Settings) -> bool:
    """Whether the registry has a champion version (the loop's first training made one)."""
    return current_champion(configure_mlflow(settings), model_name(settings)) is not None


def serve_and_play(
    settings: Settings, group: ProcessGroup, cfg: DemoConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The serving API on a free port and one day of simulated users against it."""
    port = settings.serve_port if port_free(settings.serve_port) else free_port()
    env = {k: v for k, v in airflow_env(settings).items() if not k.startswith("AIRFLOW")}
    group.start("serving", [venv_bin("flywheel"), "serve", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(f"{url}/health"), 120, "serving API", group, interval=1)
    try:  # up is not ready: the champion and the serving data load in the background
        wait_until(lambda: serving_ready(url), 180, "serving's champion", group, interval=1)
    except ServiceError as exc:
        progress(f"{exc}; playing anyway (slates the model cannot answer are fallbacks)")
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
        "model_versions": t.model_versions,
        "relevance_by_version": {v: round(r, 4) for v, r in t.relevance_by_version.items()},
    }


def run_demo(cfg: DemoConfig, out: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The demo end to end; returns the summary (also written to ``FLYWHEEL_HOME/demo/``)."""
    progress = Progress(out)
    settings = get_settings()
    if settings.profile != "embedded":
        raise FlywheelError("flywheel demo runs the embedded profile: unset FLYWHEEL_PROFILE")
    home = settings.ensure_home()
    if cfg.fresh:
        _reset_home(home, progress)
    if not port_free(settings.airflow_port):
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
        summary["trainings"] = training_outcomes(client)
        if cfg.serve:
            try:
                summary["serving"] = serve_and_play(settings, group, cfg, progress)
            except Exception as exc:  # the loop's result stands; say why serving did not
                summary["serving"] = clip(f"not run: {type(exc).__name__}: {exc}", 300)
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


def ui_help(settings: Settings, running: bool) -> tuple[dict[str, str], list[str]]:
    """The UIs' URLs and how to reach them again (``running``: they stay up until Ctrl-C)."""
    pw_file = settings.airflow_home / PASSWORDS_FILE
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


def keep_uis_up(settings: Settings, group: ProcessGroup, progress: Callable[[str], None]) -> None:
    """MLflow and Evidently UIs next to the running Airflow, until Ctrl-C."""
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
    """``cfg`` as JSON-ready values (dates as ISO strings)."""
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in asdict(cfg).items()}
