"""The daily drift check end to end, and what it keeps in the lake.

:func:`monitor_day`: the champion's training window (its MLflow run's ``data_window_start`` …
``data_window_end`` tags, through :mod:`training.registry`) → reference and current frames
(:mod:`monitoring.frames`) → Evidently report (:mod:`monitoring.report`) → decision and
cooldown (:mod:`monitoring.decision`) → stored results. Per day D it writes
``reports/drift/dt=D/report.html`` beside ``summary.json`` (a re-run replaces both) and adds the
snapshot to the Evidently workspace. Emitted triggers are logged in a private state file beside
the reports (:func:`mark_emitted`, by the DAG's emitting task); the cooldown reads that log, so
a day triggers retraining at most once, and each summary's ``decision`` label says what was
actually emitted ("drift, retrain triggered" / "drift, suppressed: …" / "no drift"), or
"nothing compared: <why>" for a day without a comparison (no champion, too little traffic, no
reference features, no column with values on both sides) — such a day has no report. When the
label changes later (:func:`mark_emitted`), the day's report header and workspace run follow.

Run it without Airflow::

    python -c "import datetime as d; from monitoring.monitor import monitor_day; \
print(monitor_day(d.date(2026, 1, 10)))"
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from core.lake import REPORTS, Lake, get_lake, partition_prefix
from core.settings import Settings
from features.compute import featurised_days
from monitoring import DriftError
from monitoring.config import DriftConfig
from monitoring.decision import (
    DriftResult,
    apply_cooldown,
    decide,
    decision_label,
    too_little_traffic,
)
from monitoring.frames import Scan, assemble, feature_parts, served_frames
from monitoring.report import (
    add_to_workspace,
    finish_report,
    relabel_run,
    report_html,
    run_report,
    snapshot_timestamp,
)
from training.registry import configure_mlflow, current_champion, model_name

log = logging.getLogger(__name__)

#: The reports table of the drift check: ``reports/drift/dt=D/``.
DRIFT_REPORTS = "drift"
REPORT_NAME = "report.html"
SUMMARY_NAME = "summary.json"
#: Private (never listed) state of the trigger cooldown, beside the reports.
STATE_KEY = f"{REPORTS}/{DRIFT_REPORTS}/_trigger_state.json"
_DAY = dt.timedelta(days=1)


# --- one check ---------------------------------------------------------------------------------


def check_drift(
    lake: Lake,
    day: dt.date,
    reference_window: tuple[dt.date, dt.date],
    config: DriftConfig | None = None,
) -> tuple[DriftResult, Any]:
    """Compare day D with the reference window; returns ``(result, evidently snapshot)``.

    The result's ``drift_detected`` is the drift *decision* before any cooldown (``candidate``);
    the snapshot is None when nothing was compared (``drift_share`` None, ``reason`` says why):
    too little traffic on D, no features in the reference window, no column with values on both
    sides. Day D without features raises :class:`DriftError` (the day is not ready).

    The frames are read through the engine (:mod:`monitoring.frames`): ``reference_rows`` and
    ``current_rows`` count every row of each side; a side over ``config.max_rows`` is compared
    on a deterministic sample, and ``result.sampled_rows`` (``{"reference": n, "current": n}``,
    None when nothing was sampled) says how many rows each side compared.
    """
    config = config or DriftConfig()
    start, end = reference_window
    if end < start:
        raise DriftError(f"reference window is empty: {start} is after {end}")
    with Scan(lake) as scan:
        current = feature_parts(scan, day, day, config)  # no features for D: raises (not checked)
        try:
            reference = feature_parts(scan, start, end, config, skip_missing=True)
            missing = ""
        except DriftError as exc:  # nothing to compare with: said so, not raised
            reference, missing = [], f"no reference: {exc}"
        # prediction and quality drift: only when the serving API left impressions
        served = served_frames(scan, day, reference_window, config)
        if served is not None:
            reference.append(served.reference)
            current.append(served.current)
        result = DriftResult(
            date=day.isoformat(),
            drift_detected=False,
            drift_share=None,
            drifted_columns=[],
            quality_drop=served.quality_drop if served else None,
            reason=missing,
            reference_window=[start.isoformat(), end.isoformat()],
            reference_rows=sum(p.rows for p in reference),
            current_rows=sum(p.rows for p in current),
            quality=served.quality if served else None,
        )
        result.sampled_rows = None
        if too_little_traffic(result, config) or missing:
            return result, None
        ref = assemble(reference, config.max_rows, "reference")
        cur = assemble(current, config.max_rows, "current")
    if ref.sampled or cur.sampled:
        result.sampled_rows = {"reference": len(ref.data), "current": len(cur.data)}
    try:
        snapshot, per_column, share = run_report(
            ref.data.drop(columns=["day"]),
            cur.data.drop(columns=["day"]),
            config,
            timestamp=snapshot_timestamp(day),
            name=f"drift {day.isoformat()}",
        )
    except DriftError as exc:  # e.g. no column with values on both sides
        result.reason = str(exc)
        return result, None
    return decide(result, per_column, share, config), snapshot


# --- the champion ------------------------------------------------------------------------------


@dataclass
class Champion:
    """The serving model a day is judged against: its version and training window."""

    version: str
    window: tuple[dt.date, dt.date]
    run_id: str | None = None


def champion_window(settings: Settings | None = None) -> Champion | None:
    """The champion's version and training window (its run's ``data_window_*`` tags), or None."""
    client = configure_mlflow(settings)
    mv = current_champion(client, model_name(settings))
    if mv is None:
        return None
    tags = dict(mv.tags or {})
    if mv.run_id:
        tags = {**client.get_run(mv.run_id).data.tags, **tags}
    try:
        window = (
            dt.date.fromisoformat(tags["data_window_start"][:10]),
            dt.date.fromisoformat(tags["data_window_end"][:10]),
        )
    except (KeyError, ValueError):
        raise DriftError(
            f"champion {mv.name} v{mv.version} (run {mv.run_id}) has no "
            "data_window_start/data_window_end tags: cannot tell its training window"
        ) from None
    return Champion(version=str(mv.version), window=window, run_id=mv.run_id)


# --- storage -----------------------------------------------------------------------------------


def report_prefix(day: dt.date) -> str:
    """``reports/drift/dt=D/``: where day D's report and summary live."""
    return partition_prefix(REPORTS, DRIFT_REPORTS, day)


def store(
    lake: Lake, day: dt.date, result: DriftResult, snapshot, settings: Settings | None = None
) -> DriftResult:
    """Write ``report.html`` + ``summary.json`` (replacing the day's) and add the workspace run
    (the snapshot finished by :func:`~monitoring.report.finish_report` with the decision)."""
    files: dict[str, bytes] = {}
    if snapshot is not None:  # header, order and tags from the decision
        snapshot = finish_report(snapshot, result.summary())
        files[REPORT_NAME] = report_html(snapshot)
        result.report_uri = lake.url(report_prefix(day) + REPORT_NAME)
        result.snapshot_id = add_to_workspace(snapshot, day, settings)
    files[SUMMARY_NAME] = json.dumps(result.summary(), indent=2, default=str).encode("utf-8")
    lake.replace_partition(report_prefix(day), files)
    return result


def read_summary(lake: Lake, day: dt.date) -> dict[str, Any] | None:
    """Day D's stored summary, or None when the day was not checked."""
    key = report_prefix(day) + SUMMARY_NAME
    return json.loads(lake.read_text(key)) if lake.exists(key) else None


def summaries(lake: Lake) -> list[dict[str, Any]]:
    """Every stored day's summary, newest first (for the UI)."""
    out = []
    for day in reversed(lake.partitions(REPORTS, DRIFT_REPORTS)):
        s = read_summary(lake, day)
        if s is not None:
            out.append(s)
    return out


def read_trigger_state(lake: Lake) -> dict[str, Any]:
    """``{"last_trigger": ISO day, "history": [ISO days], "emitted": {day: {run_id, at}}}``, or
    ``{}`` before the first trigger."""
    return json.loads(lake.read_text(STATE_KEY)) if lake.exists(STATE_KEY) else {}


def trigger_log(lake: Lake) -> dict[str, dict[str, Any]]:
    """Every day whose retraining trigger was emitted: ``{ISO day: {"run_id", "at"}}``."""
    state = read_trigger_state(lake)
    log_ = {d: {"run_id": None, "at": None} for d in state.get("history", [])}
    log_.update(state.get("emitted", {}))
    return log_


def last_trigger(lake: Lake) -> str | None:
    """The day (ISO) of the last retraining trigger, or None."""
    return max(trigger_log(lake), default=None)


def record_trigger(
    lake: Lake, result: DriftResult | str, run_id: str | None = None
) -> dict[str, Any]:
    """Remember that a day's trigger was emitted (the cooldown counts from it, the pages say
    so); returns its log entry. Idempotent: a day already recorded keeps its first entry."""
    day = result if isinstance(result, str) else result.date
    log_ = trigger_log(lake)
    if day not in log_:
        log_[day] = {"run_id": run_id, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        state = {"last_trigger": max(log_), "history": sorted(log_), "emitted": log_}
        lake.write_text(STATE_KEY, json.dumps(state, indent=2, sort_keys=True))
    return log_[day]


def update_summary(
    lake: Lake, day: str, settings: Settings | None = None, **fields: Any
) -> dict[str, Any] | None:
    """Change fields of a day's stored summary; its ``decision`` label follows, and so do the
    day's Evidently report (header) and workspace run (header, tags, metadata)."""
    summary = read_summary(lake, dt.date.fromisoformat(day))
    if summary is None:
        return None
    summary.update(fields)
    summary["decision"] = decision_label(summary)
    prefix = report_prefix(dt.date.fromisoformat(day))
    lake.write_text(prefix + SUMMARY_NAME, json.dumps(summary, indent=2, default=str))
    if summary.get("snapshot_id"):
        try:
            snapshot = relabel_run(summary["snapshot_id"], summary, settings)
        except Exception:  # the label is stored; a stale report header must not fail the caller
            log.warning("could not relabel the drift report of %s", day, exc_info=True)
            snapshot = None
        if snapshot is not None:
            lake.write_bytes(prefix + REPORT_NAME, report_html(snapshot))
    return summary


def mark_emitted(lake: Lake, day: str, run_id: str | None = None) -> dict[str, Any]:
    """Record day's emitted trigger and put it into the day's stored summary (its label)."""
    entry = record_trigger(lake, day, run_id)
    summary = read_summary(lake, dt.date.fromisoformat(day))
    if summary is not None and summary.get("trigger") != entry:
        update_summary(lake, day, trigger=entry)
    return entry


def mark_superseded(lake: Lake, day: str, by: str) -> None:
    """A day that would have triggered, replaced by a newer day's trigger in the same run."""
    summary = read_summary(lake, dt.date.fromisoformat(day)) or {}
    why = f"superseded by the trigger for {by} in the same run"
    update_summary(
        lake,
        day,
        drift_detected=False,
        suppressed_by=why,
        reason=str(summary.get("reason", "")) + f" — not triggering ({why})",
    )


def unchecked_days(lake: Lake, after: dt.date) -> list[str]:
    """Days after ``after`` with features in every view but no drift summary yet, oldest first.

    Features events that arrive while a trigger is already pending are folded into it and not
    handed to the run it creates: those days come after the run's newest event day. Older
    unchecked days are left alone: judging them now would use a champion they never met.
    """
    return sorted(
        d.isoformat()
        for d in featurised_days(lake)
        if d > after and not lake.exists(report_prefix(d) + SUMMARY_NAME)
    )


# --- the daily check ---------------------------------------------------------------------------


def _reference(
    day: dt.date, window: tuple[dt.date, dt.date] | None, settings: Settings | None
) -> tuple[tuple[dt.date, dt.date] | None, Champion | None, str]:
    """The window day D is compared with (never D itself) and the champion it comes from.

    ``window`` given: used as is (cut before D). Else the champion's. The window is None, with
    the reason, when there is nothing to compare: no champion yet, or D inside its window.
    """
    champion = None
    if window is None:
        champion = champion_window(settings)
        if champion is None:
            return None, None, "no champion model yet: no training window to compare against"
        window = champion.window
    if window[1] >= day:  # never compare a day with itself
        window = (window[0], day - _DAY)
        if window[1] < window[0]:
            return (
                None,
                champion,
                f"{day} lies inside the champion's training window",
            )
    return window, champion, ""


def monitor_day(
    day: dt.date,
    *,
    lake: Lake | None = None,
    config: DriftConfig | None = None,
    trainings_in_flight: int = 0,
    reference_window: tuple[dt.date, dt.date] | None = None,
    settings: Settings | None = None,
    pending_triggers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The whole daily check: champion → report → decision with cooldown → stored summary.

    Returns the summary dict (``drift_detected``: a trigger is due, ``drift_share``,
    ``drifted_columns``, ``quality_drop``, ``reason``, ``report_uri``, ``trigger``: the trigger
    already emitted for the day, ``decision``: the label, and details). Re-running a day
    overwrites it but never makes a day trigger twice: the cooldown reads the trigger log
    (:func:`trigger_log`) plus ``pending_triggers`` (days that will trigger in the same run).
    Emitting the trigger is the caller's (the DAG's): it records it with :func:`mark_emitted`.
    """
    config = config or DriftConfig()
    lake = lake or get_lake()
    window, champion, why_not = _reference(day, reference_window, settings)
    emitted = trigger_log(lake)
    if window is None:
        result = DriftResult.no_decision(day, why_not)
        result.trigger = emitted.get(day.isoformat())
        return store(lake, day, result, None, settings).summary()
    result, snapshot = check_drift(lake, day, window, config)
    result.champion_version = champion.version if champion else None
    apply_cooldown(result, config, [*emitted, *pending_triggers], trainings_in_flight)
    result.trigger = emitted.get(day.isoformat())
    store(lake, day, result, snapshot, settings)
    return result.summary()
