"""
### monitor_drift — is today's traffic still the world the champion learned?

Runs after each day's features (Asset `flywheel://features`; the day comes from the triggering
event's metadata `date`, or the `day` param for a manual run). For each day it compares the
features of the users and items active that day with those of the champion's training window
(Evidently 0.7: normed Wasserstein for numbers, Jensen-Shannon for categories; prediction and
quality drift when the serving API left impressions and feedback), stores the Evidently snapshot
in the workspace (project `flywheel`), `reports/drift/dt=D/report.html` and `summary.json`.

On a drift decision outside the cooldown it emits Asset `flywheel://drift` with the summary as
metadata, which starts `train_recommender`. Cooldown: no trigger while a `train_recommender`
run is queued (it has not started: it will train on the newest data anyway), nor within
`cooldown_days` after the last trigger, nor for a day older than one that already triggered.
A run already *running* started before this drift was known, so the trigger still goes out and
its training queues behind it.

**One trigger per day, at most.** `emit_drift` looks up Airflow's own `flywheel://drift` events
(and the trigger log in the lake) and skips a day already triggered: a task retry, a re-run, or
a second run that checks the same day (a day listed by `unchecked_days` and then by its own
`features` event) never emits twice. One run emits at most one event (its newest due day; an
earlier day of the same run that would trigger counts as pending for the cooldown). The emitted
trigger is written into the day's `summary.json` (`trigger`), and its `decision` label — shown
by the Flywheel page and the CLI summary — says "drift, retrain triggered" only then; a drift
that did not trigger says "drift, suppressed: <why>". The run's note lists each checked day's
decision.
Thresholds: `monitoring.config.DriftConfig`.

Manual run: the trigger button (the `day` form field; empty checks the newest featurised day),
or `flywheel dag test monitor_drift --date 2026-01-10` (which passes `{"day": "2026-01-10"}`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from core.assets import DRIFT, FEATURES
from core.names import DRIFT_DAG, RUN_NOTE, TRAIN_DAG

#: What ``check`` hands on (and the asset event carries) of a day's summary.
SUMMARY_KEYS = (
    "date",
    "drift_detected",
    "drift_share",
    "drifted_columns",
    "quality_drop",
    "reason",
    "report_uri",
    "champion_version",
    "reference_window",
    "suppressed_by",
    "decision",
)


@dag(
    dag_id=DRIFT_DAG,
    schedule=FEATURES,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["flywheel", "drift", "monitoring"],
    doc_md=__doc__,
    default_args={
        "owner": "flywheel",
        "retries": 2,
        "retry_delay": pendulum.duration(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": pendulum.duration(minutes=10),
    },
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description=(
                "Day to check (YYYY-MM-DD) for a manual run; empty: the newest day with "
                "features. Asset runs use the triggering event's date."
            ),
        )
    },
)
def monitor_drift():
    @task
    def days_to_check(**context) -> list[str]:
        """The days of the triggering `features` events (several after a catch-up), else the
        param, plus featurised days not checked yet (events folded into a pending trigger)."""
        days = set()
        for event in context["triggering_asset_events"].get(FEATURES, []):
            extra = event.extra or {}
            listed = extra.get("days") or [extra.get("date") or extra.get("day")]
            days.update(str(d)[:10] for d in listed if d)
        if days:  # + days whose events were folded into a pending trigger (see unchecked_days)
            import datetime as dt

            from core.lake import get_lake
            from monitoring.monitor import unchecked_days

            days.update(unchecked_days(get_lake(), dt.date.fromisoformat(max(days))))
        elif context["params"].get("day"):
            days.add(str(context["params"]["day"])[:10])
        else:  # the trigger button with the form left empty: the newest featurised day
            from core.lake import get_lake
            from features.compute import latest_day

            newest = latest_day(get_lake())
            if newest is None:  # nothing a retry would change: fail now, with the reason
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException("no features built yet, so no day to check")
            days.add(newest.isoformat())
        print(f"monitor_drift checks {', '.join(sorted(days))}")
        return sorted(days)

    @task
    def check(days: list[str], **context) -> dict:
        """Drift check per day, oldest first; returns the summary of the day to trigger for
        (at most one per run: the newest due), else the latest day's (small)."""
        import datetime as dt

        from core.lake import get_lake
        from monitoring.monitor import mark_superseded, monitor_day

        summary: dict = {}
        triggered: dict | None = None
        labels: dict[str, str] = {}
        for day in days:
            in_flight = context["ti"].get_dr_count(dag_id=TRAIN_DAG, states=["queued"])
            pending = (triggered["date"],) if triggered else ()
            summary = monitor_day(
                dt.date.fromisoformat(day), trainings_in_flight=in_flight, pending_triggers=pending
            )
            if summary["drift_detected"]:
                if triggered:  # one trigger per run: the newest due day's
                    mark_superseded(get_lake(), triggered["date"], by=day)
                    labels[triggered["date"]] = f"drift, superseded by {day}"
                triggered = summary
            labels[day] = summary["decision"]
        result = triggered or summary
        context["ti"].xcom_push(
            RUN_NOTE, ("checked " + "; ".join(f"{d}: {v}" for d, v in labels.items()))[:1000]
        )
        return {k: result.get(k) for k in SUMMARY_KEYS}

    @task(outlets=[DRIFT], inlets=[DRIFT])
    def emit_drift(summary: dict, **context) -> dict:
        """Emit `flywheel://drift` with the summary as metadata — only when a trigger is due,
        and never twice for one day (a retry, a re-run, two runs checking the same day)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from core.lake import get_lake
        from monitoring.monitor import mark_emitted, trigger_log

        ti, day = context["ti"], summary["date"]
        if not summary["drift_detected"]:
            ti.xcom_push(RUN_NOTE, f"no retraining trigger: {summary['reason']}"[:1000])
            raise AirflowSkipException(f"no retraining trigger: {summary['reason']}")
        lake = get_lake()
        sent = [  # Airflow's own event log: was this day's trigger emitted already?
            e
            for e in context["inlet_events"][DRIFT].ascending(False).limit(500)
            if (e.extra or {}).get("date") == day
        ]
        logged = trigger_log(lake).get(day)
        if sent or (logged and logged.get("run_id") != context["run_id"]):
            run_id = sent[0].source_run_id if sent else logged.get("run_id")
            mark_emitted(lake, day, run_id)
            ti.xcom_push(RUN_NOTE, f"retraining for {day} was already triggered (run {run_id})")
            raise AirflowSkipException(f"retraining for {day} already triggered by run {run_id}")
        entry = mark_emitted(lake, day, context["run_id"])
        context["outlet_events"][DRIFT].extra = {**summary, "trigger": entry}
        ti.xcom_push(RUN_NOTE, f"drift on {day}: retraining triggered (flywheel://drift)")
        return summary

    emit_drift(check(days_to_check()))


monitor_drift()
