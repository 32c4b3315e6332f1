"""
### `build_features`: validated events of a day → feature tables → Feast (offline + online)

Runs whenever **`flywheel://validated/events`** is updated (one event per ingested day, or one
for a bulk-ingested range). The days to build come from the triggering asset events' metadata
(`date`, a `days` list, or a `start`..`end` range: its days with validated events); after a
catch-up one run may carry several events, and every day is built, oldest first. A manual run
passes the `day` param (`YYYY-MM-DD`) instead, and `end` to build every validated day from `day`
to `end`; with the form left empty it builds the newest validated day
(`flywheel dag test build_features --date D` passes `{"day": D}`). The run's note says which
days it built.

#### Tasks
1. **`resolve_days`**: the days of the triggering events (else the `day` param), plus the
   validated days after them that have no features yet (events that arrive while a trigger is
   already pending are not handed to the run it creates; this way no day is left behind).
2. **`compute`**: `features.store.compute_days(days)`: the 1/7/28-day user and item
   statistics of each day from `validated/` into `features/<view>/dt=D/part-00000.parquet`,
   stamped `event_timestamp` = D+1 00:00 UTC. Several days read the validated data once (one
   pass over a range). Overwrites each day's partition (idempotent).
3. **`apply_definitions`**: `feast apply` of `feature_repo/definitions.py`, **only when Feast's
   plan against the registry shows a change** (a no-op otherwise).
4. **`materialize`**: one day: Feast `materialize` of exactly that day's rows: event timestamps
   in (D 00:00, D+1 00:00], i.e. the data interval [D, D+1) whose values become known at its end.
   Several days: one pass, `features.store.materialize_range` (the newest day's full snapshot is
   what the online store keeps of the whole range; the range's interval is recorded). If the
   lake already holds a newer computed day (re-running an old day), that day is materialized
   again last, so the online store never rolls back.
5. **`check_freshness`**: reads the online timestamps of sampled users and items; if any is
   missing or older than the newest materialized day's D+1 00:00, the task **fails** with a message naming
   the view, the counts and the oldest timestamp (no retry: materialize again).
6. **`publish`**: emits **`flywheel://features`** with metadata `date` (newest day), `days`,
   `rows` (per view, newest day), `rows_total`, `interval`, `freshness` and, for a range,
   `range` (`first`, `last`, `days`).

Profiles: the embedded profile uses SQLite (online) + a file registry under `FLYWHEEL_HOME`;
production uses Redis + a SQL registry on Postgres, Parquet in the S3 lake.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from core.assets import FEATURES, VALIDATED_EVENTS
from core.names import FEATURES_DAG, RUN_NOTE

default_args = {
    "owner": "flywheel",
    "retries": 2,
    "retry_delay": pendulum.duration(minutes=1),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": pendulum.duration(minutes=15),
}


@dag(
    dag_id=FEATURES_DAG,
    schedule=VALIDATED_EVENTS,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to build (YYYY-MM-DD) for a manual run; empty: the newest validated "
            "day. Asset-triggered runs use the events' dates",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="With `day`: build every validated day from `day` to `end` (YYYY-MM-DD) in one pass",
        ),
    },
    tags=["flywheel", "features", "feast"],
    doc_md=__doc__,
)
def build_features():
    @task(
        doc_md="The days to build: the triggering events' `date`s (else the `day` param) and unbuilt days."
    )
    def resolve_days() -> list[str]:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from core.lake import VALIDATED, get_lake
        from features.pipeline import days_from_events, unbuilt_days

        ctx = get_current_context()
        events = ctx["triggering_asset_events"].get(VALIDATED_EVENTS, [])
        params = ctx["params"]
        validated = get_lake().partitions(VALIDATED, "events")
        days = days_from_events(
            [e.extra for e in events], params.get("day"), validated, params.get("end")
        )
        if events and days:  # + days whose events were folded into a pending trigger
            newest = dt.date.fromisoformat(days[-1])
            days = sorted(set(days) | set(unbuilt_days(get_lake(), newest)))
        if not days and not events and not params.get("day") and validated:
            days = [validated[-1].isoformat()]  # the trigger button, form empty: newest day
        if not days:
            raise AirflowFailException(
                "no day to build: trigger through flywheel://validated/events (metadata 'date') "
                "or pass the 'day' param"
            )
        note = f"builds features of {days[0]}" + (
            f"..{days[-1]} ({len(days)} days)" if len(days) > 1 else ""
        )
        print(note)
        ctx["ti"].xcom_push(RUN_NOTE, note)  # the Flywheel plugin makes it the run's note
        return days

    @task(doc_md="Compute the feature partitions of the days from validated data, in one pass.")
    def compute(days: list[str]) -> dict:
        import datetime as dt

        from features.store import compute_days

        return compute_days([dt.date.fromisoformat(d) for d in days])

    @task(doc_md="`feast apply` only when the definitions differ from the registry.")
    def apply_definitions() -> dict:
        from features.store import apply_if_changed

        return apply_if_changed()

    @task(
        doc_md="Materialize the day's rows (several days: the range, once) into the online store."
    )
    def materialize(days: list[str]) -> list[dict]:
        import datetime as dt

        from features.store import materialize_days, materialize_range

        dates = [dt.date.fromisoformat(d) for d in days]
        if len(dates) > 1:
            return materialize_range(min(dates), max(dates))
        return materialize_days(dates)

    @task(retries=0, doc_md="Fail when online features are missing or older than the newest day.")
    def check_freshness(materialized: list[dict]) -> dict:
        import datetime as dt

        from airflow.sdk.exceptions import AirflowFailException

        from features.compute import FeatureError
        from features.store import check_freshness as check

        try:
            return check(dt.date.fromisoformat(max(m["day"] for m in materialized)))
        except FeatureError as exc:
            raise AirflowFailException(str(exc)) from None

    @task(outlets=[FEATURES], doc_md="Emit `flywheel://features` with rows, interval, freshness.")
    def publish(materialized: list[dict], freshness: dict, computed: dict) -> dict:
        from features.pipeline import asset_metadata

        extra = asset_metadata(materialized, freshness, computed)
        get_current_context()["outlet_events"][FEATURES].extra = extra
        return extra

    days = resolve_days()
    computed = compute(days)
    applied = apply_definitions()
    materialized = materialize(days)
    [computed, applied] >> materialized
    publish(materialized, check_freshness(materialized), computed)


build_features()
