"""
### `ingest_events`: raw events of one day → Great Expectations gate → validated partitions

Params (trigger form): `day` (the data day to ingest, YYYY-MM-DD), `gate` (threshold
overrides, a JSON object), `start`/`end` (a range of days ingested in this one run, for history
backfills: `flywheel backfill ingest_events` triggers one such run per chunk of days).

#### Which day a run ingests
A scheduled run ingests its data interval: the run of logical date D covers D 00:00 → D+1 00:00
and ingests data day D (it starts once D is over). A **manual** run gets no such interval of its
own: Airflow infers the last *complete* day before the logical date, so a trigger with logical
date D and an empty `day` ingests **D-1**. To ingest day D by hand, give `day` = D in the trigger
form (the logical date then does not matter) or run `flywheel dag test ingest_events --date D`,
which passes `{"day": D}` as the run's conf. Every run logs the day it processes in its first
line, returns it (`date` in the task's return value) and writes it into the **run's note**.

#### Run outcome and note
* published → success, note "ingested D: N events published …";
* the gate rejected a table → **failed**, note "rejected by the gate: D: <reason>" (no retry);
* no raw events for D in a **scheduled** run → the task waits for the export like a sensor in
  reschedule mode (no worker slot held, the run stays *running*) for up to 6 hours after the
  day ended, polling every 10 minutes; still nothing → the task is **skipped** and the run ends
  successful with the note "no data for D yet" (when the files land, clear the task). A catch-up
  or backfill over days without data skips them at once (their wait is long over);
* no raw events for D in a **manual** run → fails at once with the reason (no retries).

One run per **data interval** (a UTC day `D`: `data_interval_start` = D 00:00,
`data_interval_end` = D+1 00:00). Catch-up is on, so a backfill or a late start runs every
missed day; runs execute **one at a time, oldest first** (`max_active_runs=1`) because day D's
checks read what earlier days published (event ids already seen, the catalog of items so far,
the trailing volume): running days in parallel could judge D against an incomplete history and
give a different answer than the same days run one by one.

#### Task `validate_and_publish`
One task per day on purpose: a backfill of a year is 365 task starts, not a multiple of it (and
a history of years is a handful of range runs).

1. It lists `raw/{items,users,events}/dt=D/` in the lake. No raw events for D: see "Run
   outcome" above (wait/skip when scheduled, fail fast when manual). Missing items/users are
   fine (no new items/users that day). Other errors (e.g. the lake unreachable) are retried
   with exponential back-off.
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
from core.names import INGEST_DAG, RUN_NOTE

default_args = {
    "owner": "flywheel",
    "retries": 3,
    "retry_delay": pendulum.duration(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": pendulum.duration(minutes=30),
}

#: A scheduled day without raw events is looked for again every ``RAW_POKE`` (the task is
#: rescheduled, holding no worker slot) until ``RAW_WAIT`` after the day ended, then skipped.
RAW_WAIT = pendulum.duration(hours=6)
RAW_POKE = pendulum.duration(minutes=10)
#: XCom key of a task's one-line outcome; the Flywheel plugin copies it into the run's note.

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
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Data day to ingest (YYYY-MM-DD). Empty: the run's data interval, i.e. "
            "for a manual trigger the day BEFORE the logical date (the last complete day); "
            "`flywheel dag test ingest_events --date D` sets it to D",
        ),
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


def _note(ctx, text: str) -> str:
    """Say what this run did: logged, and left (XCom ``run_note``) for the run's note."""
    import logging

    logging.getLogger("airflow.task").info("%s", text)
    ctx["ti"].xcom_push(RUN_NOTE, text[:1000])
    return text


def _run_day(ctx):
    """The data day of this run: the ``day`` Param, else the data interval's start."""
    from ingestion.pipeline import day_of

    if ctx["params"].get("day"):
        return day_of(ctx["params"]["day"]), "the `day` Param"
    return day_of(ctx["data_interval_start"]), "the run's data interval"


def _ingest_day(ctx, config) -> dict:
    """One day (the ``day`` Param or the data interval): publish it, wait for it, or fail."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from core.lake import RAW, get_lake, partition_prefix
    from ingestion.pipeline import ingest_day
    from validation.gate import GateFailure

    day, source = _run_day(ctx)
    logging.getLogger("airflow.task").info("ingest_events: data day %s (from %s)", day, source)
    lake = get_lake()
    if not lake.partition_files(RAW, "events", day):
        _no_raw_events(ctx, day, lake.url(partition_prefix(RAW, "events", day)))
    try:
        summary = ingest_day(day, config=config, run_id=ctx["run_id"])
    except GateFailure as exc:
        # a data problem: retrying cannot fix it, and the raw files are in quarantine now
        _note(ctx, f"rejected by the gate: {' '.join(str(exc).split())}")
        raise AirflowFailException(str(exc)) from None
    ctx["outlet_events"][VALIDATED_EVENTS].extra = {k: summary[k] for k in DAY_EXTRA}
    kept = summary.get("rows_quarantined") or 0
    _note(
        ctx,
        f"ingested {day}: {summary['rows']} events published"
        + (f", {kept} rows quarantined" if kept else "")
        + f" (validation {summary['validation_id']})",
    )
    return summary


def _no_raw_events(ctx, day, where: str):
    """No raw events for ``day``: a scheduled run waits for the export (reschedule, like a
    sensor) up to ``RAW_WAIT`` after the day, then skips; a manual run fails at once."""
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSkipException,
    )

    run_type = getattr(ctx["dag_run"].run_type, "value", ctx["dag_run"].run_type)
    if run_type == "manual":
        _note(ctx, f"no raw events for {day} under {where}: nothing to ingest")
        raise AirflowFailException(f"no raw events for {day} under {where}")
    now = pendulum.now("UTC")
    day_end = pendulum.datetime(day.year, day.month, day.day, tz="UTC").add(days=1)
    if run_type == "scheduled" and now < day_end + RAW_WAIT:
        print(f"no raw events for {day} under {where} yet: looking again in {RAW_POKE}")
        raise AirflowRescheduleException(now + RAW_POKE)
    _note(ctx, f"no data for {day} yet (nothing under {where}); clear this task once it lands")
    raise AirflowSkipException(f"no data for {day} yet")


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
    log.info(
        "ingest_events: data days %s..%s (the `start`/`end` Params)", params["start"], params["end"]
    )
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
    bad = res["failures"]
    _note(
        ctx,
        f"ingested {params['start']}..{params['end']}: {res['published']} days published "
        f"({res['rows']} events)"
        + (f"; rejected by the gate: {', '.join(sorted(bad))}" if bad else ""),
    )
    return {k: v for k, v in res.items() if k != "failures"}


ingest_events()
