"""
### `ingest_events`: raw events of one day → Great Expectations gate → validated partitions

One run per **data interval** (a UTC day `D`: `data_interval_start` = D 00:00,
`data_interval_end` = D+1 00:00). Catch-up is on, so a backfill or a late start runs every
missed day; runs execute **one at a time, oldest first** (`max_active_runs=1`) because day D's
checks read what earlier days published (event ids already seen, the catalog of items so far,
the trailing volume): running days in parallel could judge D against an incomplete history and
give a different answer than the same days run one by one.

#### Task `validate_and_publish`
One task per day on purpose: a backfill of a year is 365 task starts, not a multiple of it.

1. It lists `raw/{items,users,events}/dt=D/` in the lake. No raw events for D fails the task
   with "no raw events for D"; that failure **is retried** with exponential back-off, since a
   late export is the usual cause. Missing items/users are fine (no new items/users that day).
2. It runs `ingestion.pipeline.ingest_day(D)`: reads each file (Parquet or UTF-8 CSV), runs the
   Great Expectations suites of `validation/suites.py` (schema per file, then values on the
   day's batch: non-null keys, unique `event_id` not already validated on another day, allowed
   `event_type`, rating 1–5 else 1.0, `event_ts` inside the interval ± tolerance and not in the
   future, `item_id` in the catalog so far, volume within the band of the trailing days,
   `price ≥ 0`, ISO `country`; thresholds in `validation/config.py`; what comes from earlier
   days in `validation/history.py`).
   * **all three tables pass** → `user_id` is pseudonymised (keyed hash) and
     `validated/<table>/dt=D/part-00000.parquet` is replaced atomically (items and users first,
     events last); the Asset `flywheel://validated/events` is emitted with metadata `date`,
     `rows`, `distinct_users`, `distinct_items`, `validation_id`.
   * **any table fails** → the task fails **without retry**. The failing table's raw files are
     moved, byte-identical, to `quarantine/<table>/dt=D/` (nothing else is written there: the
     full result is `quality/quarantined/dt=D/<table>.json`, the HTML report
     `quality/reports/dt=D/<table>.html`); the error names file, column, expectation and
     offending values. **Nothing of D is published**: the tables of D that passed are not
     written to `validated/` and stay in `raw/`, so after fixing the failing files and putting
     them back under `raw/<table>/dt=D/`, clearing this task re-runs the whole day cleanly.
     Later days are unaffected (they run; only a failed day is missing downstream).

Every outcome (pass or fail) is recorded in `quality/results/dt=D/<table>.json` (latest) and
`quality/runs/dt=D/<table>/<validation_id>.json` (every run), listed by the UI
(`validation/results.py`).
Re-running a day is idempotent: its validated partitions are replaced, not appended to.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

from core.assets import VALIDATED_EVENTS
from core.names import INGEST_DAG

default_args = {
    "owner": "flywheel",
    "retries": 3,
    "retry_delay": pendulum.duration(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": pendulum.duration(minutes=30),
}


@dag(
    dag_id=INGEST_DAG,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=True,
    max_active_runs=1,
    default_args=default_args,
    tags=["flywheel", "ingestion", "data-quality"],
    doc_md=__doc__,
)
def ingest_events():
    @task(
        outlets=[VALIDATED_EVENTS],
        doc_md="Gate the day with Great Expectations; publish all tables or quarantine and fail.",
    )
    def validate_and_publish() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from core.lake import RAW, get_lake, partition_prefix
        from ingestion.pipeline import day_of, ingest_day
        from validation.gate import GateFailure

        ctx = get_current_context()
        day = day_of(ctx["data_interval_start"])
        lake = get_lake()
        if not lake.partition_files(RAW, "events", day):
            # usually a late export: fail and let the retries (with back-off) wait for it
            where = lake.url(partition_prefix(RAW, "events", day))
            raise FileNotFoundError(f"no raw events for {day} under {where}")
        try:
            summary = ingest_day(day, run_id=ctx["run_id"])
        except GateFailure as exc:
            # a data problem: retrying cannot fix it, and the raw files are in quarantine now
            raise AirflowFailException(str(exc)) from None
        ctx["outlet_events"][VALIDATED_EVENTS].extra = {
            k: summary[k]
            for k in ("date", "rows", "distinct_users", "distinct_items", "validation_id")
        }
        return summary

    validate_and_publish()


ingest_events()
