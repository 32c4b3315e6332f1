"""Feature tables for one day, computed from validated data.

For day D the inputs are the validated events of the 28 days ending at the end of D
(``validated/events/dt=D-27 … dt=D``; the partition of D itself must exist), the whole catalog
(``validated/items``, every partition up to D) and every user who signed up up to D
(``validated/users``). The outputs are one partition per feature view:

* ``features/user_stats/dt=D/part-00000.parquet``: one row per known user,
* ``features/item_stats/dt=D/part-00000.parquet``: one row per catalog item,

each with ``event_timestamp`` = D+1 00:00 UTC (the moment the values become known: a training
event at time t only ever sees values of days that ended at or before t) and ``created`` = the
same instant (deterministic, so re-running a day rewrites byte-identical files).

Windows are 1, 7 and 28 days ending at the end of D. Rates are 0 when their denominator is 0;
``*_mean_rating_28d`` is 0 when nothing was rated; ``user_days_since_last_event`` is capped at 28
(no event in the window). ``user_top_category`` is the genre most of the user's 28-day events
carry: a category may list several (``Action|Comedy``, as MovieLens imports write them), each
counts, and ``user_top_category_share`` is the share of the events (with a known category) that
carry it. Every entity known by D gets a row every day, so one day's partition is a full snapshot
and materializing it refreshes every entity online.

Each day is computed by DuckDB SQL over that window's partitions (only the columns used), the
users and the catalog, as one piece of :meth:`core.engine.Engine.map` (:func:`compute_piece`):
out of core in this process, or a Ray task; no window-sized frame is ever held. A history
(:func:`compute_range`) is the same pieces, one per day, so each day's partitions are exactly
what :func:`compute_features` writes for it.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.contract import EVENTS, ITEMS, USERS, Table
from core.engine import Engine, get_engine
from core.errors import FlywheelError
from core.lake import FEATURES, VALIDATED, Lake, part_key, partition_prefix
from core.names import (
    COUNTED_EVENTS,
    FEATURE_TTL_DAYS,
    FEATURE_WINDOWS,
    ITEM_VIEW,
    USER_VIEW,
    VIEWS,
)
from features.columns import (
    ITEM_CATEGORICAL,
    ITEM_FEATURES,
    USER_CATEGORICAL,
    USER_FEATURES,
    is_count,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

MAX_WINDOW = max(FEATURE_WINDOWS)
UNKNOWN = "unknown"  # categorical value when there is nothing to say (no events, no profile)
_DAY = dt.timedelta(days=1)


class FeatureError(FlywheelError):
    """Features are missing, stale or cannot be computed; the message names the day and view."""


def feature_key(view: str, day: dt.date) -> str:
    """Lake key of one feature partition."""
    return part_key(FEATURES, view, day)


def known_at(day: dt.date) -> dt.datetime:
    """When day D's values become known: D+1 00:00 UTC (their ``event_timestamp``)."""
    return dt.datetime.combine(day + _DAY, dt.time(), tzinfo=dt.UTC)


def arrow_schema(view: str) -> pa.Schema:
    """Schema of a feature partition (what the Feast sources read)."""
    import pyarrow as pa

    if view not in VIEWS:
        raise FeatureError(f"unknown feature view {view!r} (known: {', '.join(VIEWS)})")
    key = "user_id" if view == USER_VIEW else "item_id"
    numeric = USER_FEATURES if view == USER_VIEW else ITEM_FEATURES
    strings = USER_CATEGORICAL if view == USER_VIEW else ITEM_CATEGORICAL
    ts = pa.timestamp("us", tz="UTC")
    fields = [pa.field(key, pa.string(), nullable=False)]
    fields += [pa.field(c, pa.int64() if is_count(c) else pa.float64()) for c in numeric]
    fields += [pa.field(c, pa.string()) for c in strings]
    fields += [pa.field("event_timestamp", ts, nullable=False), pa.field("created", ts)]
    return pa.schema(fields)


# --- one day's window ------------------------------------------------------------------------


@dataclass
class Window:
    """The validated events partitions day D's 28-day window reads, and the ones it lacks."""

    day: dt.date
    event_days: list[dt.date] = field(default_factory=list)
    missing_days: list[dt.date] = field(default_factory=list)


def window_of(lake: Lake, day: dt.date, available: list[dt.date] | None = None) -> Window:
    """Day D's :class:`Window`; a missing events partition for D is a :class:`FeatureError`.

    ``available``: every validated events partition (listed from the lake when ``None``).
    """
    have = set(lake.partitions(VALIDATED, EVENTS.name) if available is None else available)
    if day not in have:
        expected = lake.url(partition_prefix(VALIDATED, EVENTS.name, day))
        raise FeatureError(
            f"no validated events for {day} (expected {expected}); "
            "run the ingest for that day first"
        )
    window = [day - dt.timedelta(days=k) for k in range(MAX_WINDOW - 1, -1, -1)]
    first = min(have)
    event_days = [d for d in window if d in have]
    missing = [d for d in window if d >= first and d not in have]
    if missing and available is None:  # a range logs its gaps once (compute_range)
        log.warning("features for %s: validated events missing for %s", day, missing)
    return Window(day=day, event_days=event_days, missing_days=missing)


# --- the features, as SQL over the window's partitions ---------------------------------------

GENRE_SEP = "|"  # a category may hold several genres, "Action|Comedy" (MovieLens imports)
ROW = "_row"  # users/items: position in partition order (the last row of an id is its profile)
_US_PER_DAY = 86_400_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
# µs → days exactly as float64 arithmetic does it: µs / 1e6 / 86400 (two divisions, in order)
_TO_DAYS = "/ CAST(1000000 AS DOUBLE) / CAST(86400 AS DOUBLE)"


def _end_us(day: dt.date) -> int:
    return (known_at(day) - _EPOCH) // _MICROSECOND


def _events_cte(end_us: int) -> str:
    """The window's events before the end of D (only the columns the features use)."""
    return (
        "ev AS NOT MATERIALIZED (SELECT user_id, item_id, event_type, value, "
        f"epoch_us(event_ts) AS ts FROM events WHERE epoch_us(event_ts) < {end_us})"
    )


def _counts(end_us: int, prefix: str) -> str:
    """``<prefix>_<word>_<w>d`` for every counted event type and window, as aggregates."""
    return ", ".join(
        f"count(*) FILTER (WHERE event_type = '{etype}' AND ts >= {end_us - w * _US_PER_DAY})"
        f" AS {prefix}_{word}_{w}d"
        for etype, word in COUNTED_EVENTS.items()
        for w in FEATURE_WINDOWS
    )


def _day_counts() -> str:
    """Per (user, day): the events of each counted type (``n_<type>``)."""
    return ", ".join(
        f"count(*) FILTER (WHERE event_type = '{etype}') AS n_{etype}" for etype in COUNTED_EVENTS
    )


def _counts_of_days(end_us: int, prefix: str) -> str:
    """The window counts summed from :func:`_day_counts` (windows end at a day's end)."""
    end_day = end_us // _US_PER_DAY
    return ", ".join(
        f"CAST(coalesce(sum(n_{etype}) FILTER (WHERE day_no >= {end_day - w}), 0) AS BIGINT)"
        f" AS {prefix}_{word}_{w}d"
        for etype, word in COUNTED_EVENTS.items()
        for w in FEATURE_WINDOWS
    )


def _ratio(num: str, den: str) -> str:
    """``num / den`` as a float; 0 when the denominator is 0 or there is none."""
    return f"CASE WHEN {den} > 0 THEN CAST({num} AS DOUBLE) / {den} ELSE 0.0 END"


def _count_columns(prefix: str) -> str:
    return ", ".join(
        f"coalesce(a.{prefix}_{word}_{w}d, 0) AS {prefix}_{word}_{w}d"
        for word in COUNTED_EVENTS.values()
        for w in FEATURE_WINDOWS
    )


_RATED = "sum(value) FILTER (WHERE event_type = 'rating') AS r_sum, "
_RATED += "count(*) FILTER (WHERE event_type = 'rating') AS r_n"


def _top_genre_ctes() -> str:
    """Per user: the genre most of their events carry (ties: alphabetical) and its count.

    A category of several genres (``Action|Comedy``) counts for each genre once; ``tot`` is the
    number of the user's events with a known category (the share's denominator).
    """
    return f"""
    catalog AS (SELECT item_id, arg_max_null(category, {ROW}) AS category
                FROM items GROUP BY item_id),
    uc AS (SELECT ev.user_id, c.category, count(*) AS n
           FROM ev JOIN catalog c USING (item_id) GROUP BY ALL),
    cg AS (SELECT DISTINCT category, genre FROM (
             SELECT category, unnest(string_split(category, '{GENRE_SEP}')) AS genre
             FROM (SELECT DISTINCT category FROM uc))),
    ug AS (SELECT user_id, genre, sum(n) AS n FROM uc JOIN cg USING (category) GROUP BY ALL),
    top AS (SELECT user_id, first(genre ORDER BY n DESC, genre) AS genre, max(n) AS n
            FROM ug GROUP BY user_id),
    tot AS (SELECT user_id, sum(n) AS tot FROM uc GROUP BY user_id)"""


def user_sql(day: dt.date) -> str:
    """SQL of day D's ``user_stats`` over ``events`` (the window), ``items`` and ``users``."""
    end = _end_us(day)
    since = f"CAST({end} - a.last_ts AS DOUBLE) {_TO_DAYS}"
    tenure = f"CAST({end} - p.signup AS DOUBLE) {_TO_DAYS}"
    return f"""
    WITH {_events_cte(end)},
    by_day AS (SELECT user_id, ts // {_US_PER_DAY} AS day_no, {_day_counts()}, {_RATED},
                      max(ts) AS last_ts
               FROM ev GROUP BY ALL),
    agg AS (SELECT user_id, {_counts_of_days(end, "user")}, sum(r_sum) AS r_sum,
                   sum(r_n) AS r_n, max(last_ts) AS last_ts, count(*) AS active
            FROM by_day GROUP BY user_id),
    profile AS (SELECT user_id, arg_max_null(epoch_us(signup_ts), {ROW}) AS signup,
                       arg_max_null(country, {ROW}) AS country,
                       arg_max_null(age_bucket, {ROW}) AS age_bucket
                FROM users GROUP BY user_id),
    {_top_genre_ctes()}
    SELECT user_id, {_count_columns("user")},
      {_ratio("a.user_clicks_28d", "a.user_views_28d")} AS user_ctr_28d,
      {_ratio("a.user_purchases_28d", "a.user_views_28d")} AS user_purchase_rate_28d,
      {_ratio("a.r_sum", "a.r_n")} AS user_mean_rating_28d,
      least(CASE WHEN a.last_ts IS NULL THEN {float(MAX_WINDOW)} ELSE {since} END,
            {float(MAX_WINDOW)}) AS user_days_since_last_event,
      CAST(coalesce(a.active, 0) AS DOUBLE) AS user_active_days_28d,
      greatest(CASE WHEN p.user_id IS NULL THEN 0.0 ELSE {tenure} END, 0.0) AS user_tenure_days,
      {_ratio("t.n", "s.tot")} AS user_top_category_share,
      coalesce(t.genre, '{UNKNOWN}') AS user_top_category,
      CASE WHEN p.user_id IS NULL THEN '{UNKNOWN}' ELSE p.country END AS user_country,
      CASE WHEN p.user_id IS NULL THEN '{UNKNOWN}' ELSE p.age_bucket END AS user_age_bucket
    FROM profile p FULL OUTER JOIN agg a USING (user_id)
      LEFT JOIN top t USING (user_id) LEFT JOIN tot s USING (user_id)
    ORDER BY user_id"""


def item_sql(day: dt.date) -> str:
    """SQL of day D's ``item_stats``: one row per item created by the end of D."""
    end = _end_us(day)
    return f"""
    WITH {_events_cte(end)},
    catalog AS (SELECT item_id, arg_max_null(category, {ROW}) AS category,
                       arg_max_null(price, {ROW}) AS price,
                       arg_max_null(created, {ROW}) AS created
                FROM (SELECT *, epoch_us(created_ts) AS created FROM items)
                WHERE created < {end} GROUP BY item_id),
    agg AS (SELECT item_id, {_counts(end, "item")}, {_RATED} FROM ev GROUP BY item_id)
    SELECT item_id, {_count_columns("item")},
      {_ratio("a.item_clicks_28d", "a.item_views_28d")} AS item_ctr_28d,
      {_ratio("a.item_purchases_28d", "a.item_views_28d")} AS item_conversion_28d,
      {_ratio("a.r_sum", "a.r_n")} AS item_mean_rating_28d,
      CAST({end} - c.created AS DOUBLE) {_TO_DAYS} AS item_age_days,
      c.price AS item_price, c.category AS item_category
    FROM catalog c LEFT JOIN agg a USING (item_id)
    ORDER BY item_id"""


def _profiles(engine: Engine, table: Table, day: dt.date) -> pa.Table:
    """Every validated row of ``table`` up to D, in partition order, with its position ``_row``.

    Entity-sized (users, items), not window-sized: the last row of an id is its profile.
    """
    import pyarrow as pa

    days = [d for d in engine.lake.partitions(VALIDATED, table.name) if d <= day]
    schema = table.arrow_schema()
    rows = engine.dataset(VALIDATED, table.name, days, schema=schema).to_table(columns=schema.names)
    return rows.append_column(ROW, pa.array(range(rows.num_rows), type=pa.int64()))


def _to_schema(result: pa.Table, view: str, day: dt.date) -> pa.Table:
    """A query's result as a feature partition: ``arrow_schema(view)``, timestamps = D+1."""
    import pyarrow as pa

    schema = arrow_schema(view)
    stamp = pa.array([_end_us(day)] * result.num_rows, type=pa.int64()).cast(
        schema.field("event_timestamp").type
    )
    columns = [
        stamp if f.name in ("event_timestamp", "created") else result.column(f.name).cast(f.type)
        for f in schema
    ]
    return pa.table(columns, schema=schema).combine_chunks()


def day_tables(engine: Engine, window: Window) -> dict[str, pa.Table]:
    """Day D's table of every view, computed by DuckDB over the window's partitions."""
    day = window.day
    con = engine.connect()
    try:
        con.register(
            "events",
            engine.dataset(VALIDATED, EVENTS.name, window.event_days, EVENTS.arrow_schema()),
        )
        con.register("items", _profiles(engine, ITEMS, day))
        con.register("users", _profiles(engine, USERS, day))
        return {
            USER_VIEW: _to_schema(con.sql(user_sql(day)).to_arrow_table(), USER_VIEW, day),
            ITEM_VIEW: _to_schema(con.sql(item_sql(day)).to_arrow_table(), ITEM_VIEW, day),
        }
    finally:
        con.close()


# --- writing and reading feature partitions --------------------------------------------------


@dataclass
class DaySummary:
    """What :func:`compute_features` wrote (small: goes through XCom and asset metadata)."""

    day: str
    rows: dict[str, int]
    keys: dict[str, str]
    event_days: int
    missing_event_days: list[str]

    def as_dict(self) -> dict:
        return {
            "day": self.day,
            "rows": self.rows,
            "keys": self.keys,
            "event_days": self.event_days,
            "missing_event_days": self.missing_event_days,
        }


def compute_piece(
    day: dt.date, *, lake_uri: str, endpoint_url: str | None, available: list[dt.date]
) -> DaySummary:
    """One piece of :meth:`core.engine.Engine.map`: compute and write day D's partitions.

    Runs wherever the engine puts it (this process, a Ray task): it opens the lake itself and
    returns only the small summary. ``available``: every validated events partition.
    """
    lake = Lake.from_uri(lake_uri, endpoint_url=endpoint_url)
    window = window_of(lake, day, available)
    tables = day_tables(get_engine(lake), window)
    rows, keys = {}, {}
    for view, table in tables.items():
        # the partition holds exactly this one file (a re-run replaces, never duplicates)
        key = lake.write(table, view, day, zone=FEATURES, replace=True)
        rows[view], keys[view] = table.num_rows, key
    return DaySummary(
        day=day.isoformat(),
        rows=rows,
        keys=keys,
        event_days=len(window.event_days),
        missing_event_days=[d.isoformat() for d in window.missing_days],
    )


def _map_days(lake: Lake, days: list[dt.date], available: list[dt.date]) -> list[DaySummary]:
    engine = get_engine(lake)
    return engine.map(
        compute_piece,
        days,
        lake_uri=lake.uri,
        endpoint_url=getattr(lake, "endpoint_url", None),
        available=available,
    )


def compute_features(lake: Lake, day: dt.date) -> DaySummary:
    """Compute and write day D's partitions of every view (overwrites: idempotent per day)."""
    window_of(lake, day)  # names a missing partition, logs the window's gaps
    return _map_days(lake, [day], sorted(lake.partitions(VALIDATED, EVENTS.name)))[0]


# --- a range of days ------------------------------------------------------------------------


def compute_range(
    lake: Lake, start: dt.date, end: dt.date, days: list[dt.date] | None = None
) -> list[DaySummary]:
    """Every day in [start, end] with validated events (or only ``days``), one piece per day.

    Each day is a piece of :meth:`core.engine.Engine.map` (in this process one after another,
    or Ray tasks), writing exactly what :func:`compute_features` writes for that day. Days
    without a validated events partition (quarantined, or nothing happened) are skipped: they
    have no features either way.
    """
    if end < start:
        raise FeatureError(f"empty range: {start} is after {end}")
    available = sorted(lake.partitions(VALIDATED, EVENTS.name))
    wanted = set(days) if days is not None else None
    todo = [d for d in available if start <= d <= end and (wanted is None or d in wanted)]
    if wanted is not None and wanted - set(todo):
        gone = sorted(wanted - set(todo))
        raise FeatureError(
            f"no validated events for {', '.join(map(str, gone[:5]))}"
            f"{' …' if len(gone) > 5 else ''}; run the ingest for those days first"
        )
    out = _map_days(lake, todo, available) if todo else []
    log.info("features: %d days written between %s and %s", len(out), start, end)
    gaps = [s.day for s in out if s.missing_event_days]
    if gaps:  # one line, not one per day: a sparse history has gaps in most windows
        log.warning(
            "features for %d of %d days read windows with days of no validated events "
            "(first %s); see each day's missing_event_days",
            len(gaps),
            len(out),
            gaps[0],
        )
    return out


def require_partition(lake: Lake, view: str, day: dt.date) -> str:
    """Key of day D's partition of ``view``; a :class:`FeatureError` naming both if absent."""
    key = feature_key(view, day)
    if not lake.exists(key):
        raise FeatureError(
            f"feature partition missing: view {view!r}, day {day} ({lake.url(key)}); "
            f"run `flywheel features compute --day {day}` or the build_features DAG for that day"
        )
    return key


def serving_day(lake: Lake, day: dt.date, views: tuple[str, ...] = VIEWS) -> dt.date | None:
    """The feature day whose values rows of ``day`` read (point in time, within the TTL).

    D-1 when its partitions exist, else the newest earlier day still inside the views' TTL
    (a quarantined day has no features); None when every view has nothing that recent.
    """
    for back in range(1, FEATURE_TTL_DAYS + 1):
        d = day - dt.timedelta(days=back)
        if all(lake.exists(feature_key(v, d)) for v in views):
            return d
    return None


def featurised_days(lake: Lake) -> set[dt.date]:
    """Days whose partitions exist for every view."""
    return set.intersection(*(set(lake.partitions(FEATURES, v)) for v in VIEWS))


def latest_day(lake: Lake) -> dt.date | None:
    """The newest day whose partitions exist for every view (None before the first)."""
    return max(featurised_days(lake), default=None)


def read_features(
    lake: Lake, view: str, start_day: dt.date, end_day: dt.date, skip_missing: bool = False
) -> pd.DataFrame:
    """Offline feature rows of ``view`` for every day in [start_day, end_day] (both included).

    One row per entity per day, with a ``day`` column (``datetime.date``) added. Every day of the
    window must have its partition: a gap is a :class:`FeatureError` naming the view and day.
    With ``skip_missing`` (a reference window that spans quarantined days or days before the
    first data) absent days are left out; a window with no day at all is still an error.
    """
    import pandas as pd
    import pyarrow as pa

    if view not in VIEWS:
        raise FeatureError(f"unknown feature view {view!r} (known: {', '.join(VIEWS)})")
    if end_day < start_day:
        raise FeatureError(f"empty window for {view!r}: {start_day} is after {end_day}")
    schema = arrow_schema(view)
    tables, days = [], []
    day = start_day
    while day <= end_day:
        if skip_missing and not lake.exists(feature_key(view, day)):
            day += _DAY
            continue
        require_partition(lake, view, day)
        t = lake.read(view, [day], zone=FEATURES, schema=schema)
        tables.append(t)
        days.append(pd.Series([day] * t.num_rows, dtype="object"))
        day += _DAY
    if not tables:
        raise FeatureError(
            f"no feature partition of {view!r} between {start_day} and {end_day} "
            f"({lake.url(f'{FEATURES}/{view}/')})"
        )
    df = pa.concat_tables(tables).to_pandas()
    df["day"] = pd.concat(days, ignore_index=True).to_numpy()
    return df
