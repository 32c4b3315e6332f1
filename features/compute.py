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

A history is computed in one pass (:func:`compute_range`): the validated partitions the range
needs are read once, each day's inputs are cut from them, and each day's partitions are exactly
what :func:`compute_features` writes for it (the same functions compute both).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.contract import EVENTS, ITEMS, USERS, Table
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
    import numpy as np
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

MAX_WINDOW = max(FEATURE_WINDOWS)
WRITE_THREADS = 4  # a range's partitions are read and written this many at a time
ID_RANK = "_id_rank"  # History's items: the rank of item_id among all its ids (sorts as the id)
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


# --- reading validated data -----------------------------------------------------------------


def _read_validated(lake: Lake, table: Table, days: list[dt.date]) -> pd.DataFrame:
    """The validated partitions of ``days``, cast to the contract's schema (empty if none)."""
    return lake.read(table.name, days, zone=VALIDATED, schema=table.arrow_schema()).to_pandas()


@dataclass
class Inputs:
    """Validated data feeding day D's features."""

    day: dt.date
    events: pd.DataFrame  # the 28-day window
    items: pd.DataFrame  # the catalog up to D
    users: pd.DataFrame  # users signed up up to D
    event_days: list[dt.date] = field(default_factory=list)
    missing_days: list[dt.date] = field(default_factory=list)


def load_inputs(lake: Lake, day: dt.date) -> Inputs:
    """Read what day D needs; a missing events partition for D is a :class:`FeatureError`."""
    available = set(lake.partitions(VALIDATED, EVENTS.name))
    if day not in available:
        expected = lake.url(partition_prefix(VALIDATED, EVENTS.name, day))
        raise FeatureError(
            f"no validated events for {day} (expected {expected}); "
            "run the ingest for that day first"
        )
    window = [day - dt.timedelta(days=k) for k in range(MAX_WINDOW - 1, -1, -1)]
    first = min(available)
    event_days = [d for d in window if d in available]
    missing = [d for d in window if d >= first and d not in available]
    if missing:
        log.warning("features for %s: validated events missing for %s", day, missing)
    item_days = [d for d in lake.partitions(VALIDATED, ITEMS.name) if d <= day]
    user_days = [d for d in lake.partitions(VALIDATED, USERS.name) if d <= day]
    return Inputs(
        day=day,
        events=_read_validated(lake, EVENTS, event_days),
        items=_read_validated(lake, ITEMS, item_days),
        users=_read_validated(lake, USERS, user_days),
        event_days=event_days,
        missing_days=missing,
    )


# --- the features ---------------------------------------------------------------------------


GENRE_SEP = "|"  # a category may hold several genres, "Action|Comedy" (MovieLens imports)
_US_PER_DAY = 86_400_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_US_PER_S = 1e6


def _as_us(col: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch."""
    return col.dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype("int64")


@dataclass
class _Events:
    """The window's events before the end of D, as arrays (one entry per event)."""

    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    value: np.ndarray
    ts: np.ndarray  # int64 µs

    @classmethod
    def before(cls, events: pd.DataFrame, end_us: int) -> _Events:
        ts = _as_us(events["event_ts"])
        keep = ts < end_us
        return cls(
            user=events["user_id"].to_numpy(dtype=object)[keep],
            item=events["item_id"].to_numpy(dtype=object)[keep],
            etype=events["event_type"].to_numpy(dtype=object)[keep],
            value=events["value"].to_numpy(dtype="float64")[keep],
            ts=ts[keep],
        )

    def subset(self, mask: np.ndarray) -> _Events:
        return _Events(*(a[mask] for a in (self.user, self.item, self.etype, self.value, self.ts)))


def _window_counts(codes: np.ndarray, ev: _Events, n: int, end_us: int, prefix: str) -> dict:
    """``<prefix>_<word>_<w>d`` for every counted event type and window, per entity code."""
    import numpy as np

    cols = {}
    for w in FEATURE_WINDOWS:
        in_w = ev.ts >= end_us - w * _US_PER_DAY
        for etype, word in COUNTED_EVENTS.items():
            hits = codes[in_w & (ev.etype == etype)]
            cols[f"{prefix}_{word}_{w}d"] = np.bincount(hits, minlength=n).astype("int64")
    return cols


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _mean_rating(codes: np.ndarray, ev: _Events, n: int) -> np.ndarray:
    """Mean ``value`` of the ``rating`` events per entity code; 0 when nothing was rated."""
    import numpy as np

    rated = ev.etype == "rating"
    total = np.bincount(codes[rated], weights=ev.value[rated], minlength=n)
    return _ratio(total, np.bincount(codes[rated], minlength=n))


def _days(delta_us: np.ndarray) -> np.ndarray:
    return delta_us / _US_PER_S / 86400.0


def _codes(ids: pd.Index, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``ids`` (-1 when absent)."""
    return ids.get_indexer(values)


def _top_genre(ucodes: np.ndarray, categories: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user code: the genre most of their events carry (ties: alphabetical) and that share.

    A category of several genres (``Action|Comedy``) counts for each; the share is of the
    user's events (with a known category) that carry the genre. ``UNKNOWN``/0 without events.
    """
    import numpy as np
    import pandas as pd

    top = np.full(n, UNKNOWN, dtype=object)
    share = np.zeros(n)
    if len(ucodes) == 0:
        return top, share
    cat_code, cats = pd.factorize(categories)
    split = [str(c).split(GENRE_SEP) for c in cats]
    genres = np.array(sorted({g for parts in split for g in parts}), dtype=object)
    where = {g: k for k, g in enumerate(genres)}
    member = np.zeros((len(cats), len(genres)), dtype="int64")  # category x genre incidence
    for k, parts in enumerate(split):
        member[k, [where[g] for g in parts]] = 1
    users, row = np.unique(ucodes, return_inverse=True)
    by_cat = np.zeros((len(users), len(cats)), dtype="int64")
    np.add.at(by_cat, (row, cat_code), 1)
    by_genre = by_cat @ member
    best = by_genre.argmax(axis=1)  # first maximum: genres are sorted, so ties go alphabetical
    top[users] = genres[best]
    share[users] = by_genre[np.arange(len(users)), best] / by_cat.sum(axis=1)
    return top, share


def user_features(inp: Inputs) -> pa.Table:
    """The ``user_stats`` rows of day D (one per user known by D), in ``arrow_schema``."""
    import numpy as np
    import pandas as pd

    end = known_at(inp.day)
    end_us = (end - _EPOCH) // _MICROSECOND
    ev = _Events.before(inp.events, end_us)
    known = inp.users["user_id"].to_numpy(dtype=object)
    ids = pd.Index(np.concatenate([known, ev.user])).unique().sort_values()
    n, codes = len(ids), _codes(ids, ev.user)
    out = _window_counts(codes, ev, n, end_us, "user")
    out["user_ctr_28d"] = _ratio(out["user_clicks_28d"], out["user_views_28d"])
    out["user_purchase_rate_28d"] = _ratio(out["user_purchases_28d"], out["user_views_28d"])
    out["user_mean_rating_28d"] = _mean_rating(codes, ev, n)
    last = np.full(n, np.iinfo("int64").min)
    np.maximum.at(last, codes, ev.ts)
    since = np.where(last > np.iinfo("int64").min, _days(end_us - last), float(MAX_WINDOW))
    out["user_days_since_last_event"] = np.minimum(since, float(MAX_WINDOW))
    day_no = ev.ts // _US_PER_DAY
    span = int(day_no.max() - day_no.min() + 1) if len(day_no) else 1
    pairs = np.unique(
        codes.astype("int64") * span + (day_no - (day_no.min() if len(day_no) else 0))
    )
    out["user_active_days_28d"] = np.bincount(pairs // span, minlength=n).astype("float64")
    profile = inp.users.drop_duplicates("user_id", keep="last")
    at = _codes(ids, profile["user_id"].to_numpy(dtype=object))
    tenure = np.zeros(n)
    tenure[at] = _days(end_us - _as_us(profile["signup_ts"]))
    out["user_tenure_days"] = np.maximum(tenure, 0.0)
    items = inp.items[inp.items["item_id"].isin(ev.item)]  # only the items the events touch
    catalog = items.drop_duplicates("item_id", keep="last")
    item_at = _codes(pd.Index(catalog["item_id"]), ev.item)
    with_cat = item_at >= 0
    cats = catalog["category"].to_numpy(dtype=object)[item_at[with_cat]]
    top, share = _top_genre(codes[with_cat], cats, n)
    out["user_top_category_share"] = share
    out["user_top_category"] = top
    for col, src in (("user_country", "country"), ("user_age_bucket", "age_bucket")):
        values = np.full(n, UNKNOWN, dtype=object)
        values[at] = profile[src].to_numpy(dtype=object)
        out[col] = values
    return _finish(ids, out, USER_VIEW, end_us)


def item_features(inp: Inputs) -> pa.Table:
    """The ``item_stats`` rows of day D (one per catalog item created by the end of D)."""
    import numpy as np
    import pandas as pd

    end = known_at(inp.day)
    end_us = (end - _EPOCH) // _MICROSECOND
    ev = _Events.before(inp.events, end_us)
    items = inp.items
    catalog = items[_as_us(items["created_ts"]) < end_us].drop_duplicates("item_id", keep="last")
    # by id; a range pass brings each id's rank in the sorted history (same order, int sort)
    key = catalog[ID_RANK] if ID_RANK in catalog else catalog["item_id"].to_numpy(dtype=object)
    catalog = catalog.iloc[np.argsort(key, kind="stable")]
    ids = pd.Index(catalog["item_id"])
    n, codes = len(ids), _codes(ids, ev.item)
    ev = ev.subset(codes >= 0)  # events on items not (yet) in the catalog count for none
    codes = codes[codes >= 0]
    out = _window_counts(codes, ev, n, end_us, "item")
    out["item_ctr_28d"] = _ratio(out["item_clicks_28d"], out["item_views_28d"])
    out["item_conversion_28d"] = _ratio(out["item_purchases_28d"], out["item_views_28d"])
    out["item_mean_rating_28d"] = _mean_rating(codes, ev, n)
    out["item_age_days"] = _days(end_us - _as_us(catalog["created_ts"]))
    out["item_price"] = catalog["price"].to_numpy(dtype="float64")
    out["item_category"] = catalog["category"].to_numpy(dtype=object)
    return _finish(ids, out, ITEM_VIEW, end_us)


def _finish(ids: pd.Index, out: dict, view: str, end_us: int) -> pa.Table:
    import numpy as np
    import pyarrow as pa

    schema = arrow_schema(view)
    stamp = np.full(len(ids), end_us, dtype="int64")
    columns = {schema.names[0]: ids.to_numpy(dtype=object), **out}
    columns["event_timestamp"] = columns["created"] = stamp
    return pa.table([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


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


def compute_features(lake: Lake, day: dt.date) -> DaySummary:
    """Compute and write day D's partitions of every view (overwrites: idempotent per day)."""
    inp = load_inputs(lake, day)
    return _write_day(lake, inp, {USER_VIEW: user_features(inp), ITEM_VIEW: item_features(inp)})


def _write_day(lake: Lake, inp: Inputs, tables: dict[str, pa.Table]) -> DaySummary:
    rows, keys = {}, {}
    for view, table in tables.items():
        # the partition holds exactly this one file (a re-run replaces, never duplicates)
        key = lake.write(table, view, inp.day, zone=FEATURES, replace=True)
        rows[view], keys[view] = table.num_rows, key
    return DaySummary(
        day=inp.day.isoformat(),
        rows=rows,
        keys=keys,
        event_days=len(inp.event_days),
        missing_event_days=[d.isoformat() for d in inp.missing_days],
    )


# --- a range of days in one pass -----------------------------------------------------------


@dataclass
class History:
    """Validated data read once for a range of days; each row tagged with its partition's day.

    ``*_day`` are the partition days as ordinals (``date.toordinal()``), ascending, aligned with
    the frames' rows: slicing them gives exactly what :func:`load_inputs` reads for one day.
    """

    events: pd.DataFrame
    event_day: np.ndarray
    items: pd.DataFrame
    item_day: np.ndarray
    users: pd.DataFrame
    user_day: np.ndarray
    available: list[dt.date]  # every validated events partition (not only the range's)


def _read_tagged(lake: Lake, table: Table, days: list[dt.date]) -> tuple[pd.DataFrame, np.ndarray]:
    """The validated partitions of ``days`` (ascending) and the day ordinal of every row."""
    import numpy as np
    import pyarrow as pa

    schema = table.arrow_schema()
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:  # Parquet decodes without the GIL
        parts = list(
            pool.map(lambda d: lake.read(table.name, [d], zone=VALIDATED, schema=schema), days)
        )
    tags = [
        np.full(t.num_rows, d.toordinal(), dtype="int64") for d, t in zip(days, parts, strict=True)
    ]
    frame = pa.concat_tables([schema.empty_table(), *parts]).to_pandas()
    return frame, np.concatenate([np.empty(0, dtype="int64"), *tags])


def load_history(lake: Lake, start: dt.date, end: dt.date) -> History:
    """Everything the days in [start, end] need, read once (only the partitions they use)."""
    import pandas as pd

    available = sorted(lake.partitions(VALIDATED, EVENTS.name))
    first_window = start - dt.timedelta(days=MAX_WINDOW - 1)
    event_days = [d for d in available if first_window <= d <= end]
    items, item_day = _read_tagged(
        lake, ITEMS, sorted(d for d in lake.partitions(VALIDATED, ITEMS.name) if d <= end)
    )
    items[ID_RANK] = pd.Index(items["item_id"].unique()).sort_values().get_indexer(items["item_id"])
    users, user_day = _read_tagged(
        lake, USERS, sorted(d for d in lake.partitions(VALIDATED, USERS.name) if d <= end)
    )
    events, event_day = _read_tagged(lake, EVENTS, event_days)
    return History(events, event_day, items, item_day, users, user_day, available)


def inputs_of(history: History, day: dt.date) -> Inputs:
    """Day D's :class:`Inputs` cut from a :class:`History` (what :func:`load_inputs` reads)."""
    import numpy as np

    if day not in history.available:
        raise FeatureError(f"no validated events for {day}; run the ingest for that day first")
    window = [day - dt.timedelta(days=k) for k in range(MAX_WINDOW - 1, -1, -1)]
    have = set(history.available)
    event_days = [d for d in window if d in have]
    missing = [d for d in window if d >= history.available[0] and d not in have]
    ordinal = day.toordinal()
    lo = np.searchsorted(history.event_day, window[0].toordinal(), side="left")
    hi = np.searchsorted(history.event_day, ordinal, side="right")
    n_items = np.searchsorted(history.item_day, ordinal, side="right")
    n_users = np.searchsorted(history.user_day, ordinal, side="right")
    return Inputs(
        day=day,
        events=history.events.iloc[lo:hi].reset_index(drop=True),
        items=history.items.iloc[:n_items],
        users=history.users.iloc[:n_users],
        event_days=event_days,
        missing_days=missing,
    )


def compute_range(
    lake: Lake, start: dt.date, end: dt.date, days: list[dt.date] | None = None
) -> list[DaySummary]:
    """Every day in [start, end] with validated events (or only ``days``), in one pass.

    Reads the validated data once and writes each day's partitions with exactly what
    :func:`compute_features` writes for that day. Days without a validated events partition
    (quarantined, or nothing happened) are skipped: they have no features either way.
    """
    if end < start:
        raise FeatureError(f"empty range: {start} is after {end}")
    history = load_history(lake, start, end)
    wanted = set(days) if days is not None else None
    todo = [d for d in history.available if start <= d <= end and (wanted is None or d in wanted)]
    if wanted is not None and wanted - set(todo):
        gone = sorted(wanted - set(todo))
        raise FeatureError(
            f"no validated events for {', '.join(map(str, gone[:5]))}"
            f"{' …' if len(gone) > 5 else ''}; run the ingest for those days first"
        )
    # computing is CPU in this thread; Parquet encoding and fsync run beside it, without the GIL
    out: list[DaySummary] = []
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        pending: deque = deque()
        for day in todo:
            inp = inputs_of(history, day)
            tables = {USER_VIEW: user_features(inp), ITEM_VIEW: item_features(inp)}
            pending.append(pool.submit(_write_day, lake, inp, tables))
            if len(pending) > 4 * WRITE_THREADS:  # bounded: a few days' tables in memory
                out.append(pending.popleft().result())
        out.extend(p.result() for p in pending)
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
