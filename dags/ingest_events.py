"""
### `ingest_events`: raw events of one day → Great Expectations gate → validated partitions

Params (trigger form): `gate` (threshold overrides, a JSON object), `start`/`end` (a range of
days ingested in this one run, for history backfills: `flywheel backfill ingest_events`
triggers one such run per chunk of days).

One run per **data interval** (a UTC day `D`: `data_interval_start` = D 00:00,
`data_interval_end` = D+1 00:00). Catch-up is on, so a backfill or a late start runs every
missed day; runs execute **one at a time, oldest first** (`max_active_runs=1`) because day D's
checks read what earlier days published (event ids already seen, the catalog of items so far,
the trailing volume): running days in parallel could judge D against an incomplete history and
give a different answer than the same days run one by one.

#### Task `validate_and_publish`
One task per day on purpose: a backfill of a year is 365 task starts, not a multiple of it (and
a history of years is a handful of range runs).

1. It lists `raw/{items,users,events}/dt=D/` in the lake. No raw events for D fails the task
   with "no raw events for D"; that failure **is retried** with exponential back-off, since a
   late export is the usual cause. Missing items/users are fine (no new items/users that day).
2. It runs `ingestion.pipeline.ingest_day(D)`: reads each file (Parquet or UTF-8 CSV), runs the
   Great Expectations suites of `validation/suites.py` (schema per file, then values on the
   day's batch: non-null keys, unique `event_id` not already validated on another day, allowed
   `event_type`, rating 0.5–5 else 1.0, `event_ts` inside the interval ± tolerance and not in the
   future, `item_id` in the catalog so far, volume within the band of the trailing days,
   `price ≥ 0`, ISO `country`; thresholds in `validation/config.py`; what comes from earlier
   days in `validation/history.py`). A daily run runs GX on every batch; a bulk range (the
   `start`/`end` Params) screens each batch with an Arrow replica of the rules first and runs
   GX when that finds anything (`gx_every_batch` decides: same verdicts either way).
   Each table is judged on its own (events against the catalog so far plus the day's items
   that passed):
   * **passed** → `user_id` is pseudonymised (keyed hash) and
     `validated/<table>/dt=D/part-00000.parquet` is replaced atomically (items and users first,
     events last); the Asset `flywheel://validated/events` is emitted with metadata `date`,
     `rows`, `distinct_users`, `distinct_items`, `validation_id`.
   * **a few bad rows** (row-level rules only: values, nulls, unknown items, duplicate ids, on
     at most `max_bad_row_share`, default 1 %, of the batch) → those rows go to
     `quarantine/<table>_rows/dt=D/part-00000.parquet` with a `reason` column, the rest is
     published as above; the raw file stays in `raw/`, intact.
   * **failed** (unreadable file, schema, volume, or too many bad rows) → the task fails
     **without retry** (after the day's other tables were published). The failing table's raw
     files are moved, byte-identical, to `quarantine/<table>/dt=D/` (the full result is
     `quality/quarantined/dt=D/<table>.json`, the HTML report
     `quality/reports/dt=D/<table>.html`); the error names file, column, expectation and
     offending values. The failing table is not published; the day's tables that passed are,
     and their raw files stay in `raw/`, so after fixing the failing files and putting them
     back under `raw/<table>/dt=D/`, clearing this task re-runs the whole day cleanly.
     Later days are unaffected (they run; only the failed table of D is missing downstream).

Thresholds (`validation/config.py`, `flywheel gate-config`) come from the defaults, the
`FLYWHEEL_GATE` settings and the run's `gate` Param. With `start`/`end` the task ingests every
day with raw data in that range in one process (`ingestion.bulk.ingest_range`: the same per-day
verdicts); a quarantined day is logged, not a task failure, and one asset event with `date`
(the newest day published), `start`, `end`, `days`, `rows` is emitted.

Every outcome (pass or fail) is recorded in `quality/results/dt=D/<table>.json` (latest) and
`quality/runs/dt=D/<table>/<validation_id>.json` (every run), listed by the UI
(`validation/results.py`).
Re-running a day is idempotent: its validated partitions are replaced, not appended to.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, get_current_context, task

from core.assets import VALIDATED_EVENTS
from core.names import INGEST_DAG

default_args = {
    "owner": "flywheel",
    "retries": 3,
    "retry_delay": pendulum.duration(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": pendulum.duration(minutes=30),
}

#: What the asset event of a published day carries (``build_features`` reads ``date``).
DAY_EXTRA = ("date", "rows", "distinct_users", "distinct_items", "validation_id")


@dag(
    dag_id=INGEST_DAG,
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=True,
    max_active_runs=1,
    default_args=default_args,
    params={
        "gate": Param(
            {},
            type="object",
            description="Gate threshold overrides for this run, e.g. "
            '{"max_bad_row_share": 0.02, "volume_k_high": 12} (keys and reasons: '
            "`flywheel gate-config`; on top of FLYWHEEL_GATE settings)",
        ),
        "start": Param(
            None,
            type=["null", "string"],
            format="date",
            description="With `end`: ingest every day with raw data from `start` to `end` "
            "(YYYY-MM-DD) in this one run (a history backfill); empty: the run's data interval",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last day (inclusive) of the `start`..`end` range",
        ),
    },
    tags=["flywheel", "ingestion", "data-quality"],
    doc_md=__doc__,
)
def ingest_events():
    @task(
        outlets=[VALIDATED_EVENTS],
        doc_md="Gate the day (or the `start`..`end` range) with Great Expectations; publish what "
        "passed, quarantine what failed.",
    )
    def validate_and_publish() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from core.errors import ConfigError
        from validation.config import GateConfig

        ctx = get_current_context()
        params = ctx["params"]
        try:
            config = GateConfig.resolve(params.get("gate") or {})
        except ConfigError as exc:
            raise AirflowFailException(str(exc)) from None
        if params.get("start") or params.get("end"):
            return _ingest_range(ctx, config)
        return _ingest_day(ctx, config)

    validate_and_publish()


def _ingest_day(ctx, config) -> dict:
    """One day, the run's data interval: publish it or fail the task."""
    from airflow.sdk.exceptions import AirflowFailException

    from core.lake import RAW, get_lake, partition_prefix
    from ingestion.pipeline import day_of, ingest_day
    from validation.gate import GateFailure

    day = day_of(ctx["data_interval_start"])
    lake = get_lake()
    if not lake.partition_files(RAW, "events", day):
        # usually a late export: fail and let the retries (with back-off) wait for it
        where = lake.url(partition_prefix(RAW, "events", day))
        raise FileNotFoundError(f"no raw events for {day} under {where}")
    try:
        summary = ingest_day(day, config=config, run_id=ctx["run_id"])
    except GateFailure as exc:
        # a data problem: retrying cannot fix it, and the raw files are in quarantine now
        raise AirflowFailException(str(exc)) from None
    ctx["outlet_events"][VALIDATED_EVENTS].extra = {k: summary[k] for k in DAY_EXTRA}
    return summary


def _ingest_range(ctx, config) -> dict:
    """Every day with raw data in ``start``..``end``, in this task (``ingestion.bulk``)."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from core.errors import FlywheelError
    from ingestion.bulk import ingest_range

    params = ctx["params"]
    if not (params.get("start") and params.get("end")):
        raise AirflowFailException("give both `start` and `end` (YYYY-MM-DD) for a range run")
    log = logging.getLogger("airflow.task")
    try:
        res = ingest_range(
            params["start"], params["end"], config=config, run_id=ctx["run_id"], out=log.info
        )
    except FlywheelError as exc:
        raise AirflowFailException(str(exc)) from None
    for day, why in res["failures"].items():
        log.warning("%s quarantined: %s", day, why)
    if res["published"]:
        ctx["outlet_events"][VALIDATED_EVENTS].extra = {
            "date": res["last_published"],
            "start": params["start"],
            "end": params["end"],
            "days": res["published"],
            "rows": res["rows"],
        }
    return {k: v for k, v in res.items() if k != "failures"}


ingest_events()
