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
(no event in the window). Every entity known by D gets a row every day, so one day's partition is
a full snapshot and materializing it refreshes every entity online.
"""

from __future__ import annotations

import datetime as dt
import logging
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


def _window_counts(events: pd.DataFrame, key: str, end: dt.datetime, prefix: str) -> pd.DataFrame:
    """``<prefix>_<word>_<w>d`` for every counted event type and window, indexed by ``key``."""
    import pandas as pd

    cols = {}
    for w in FEATURE_WINDOWS:
        in_w = events[events["event_ts"] >= end - dt.timedelta(days=w)]
        counts = in_w.groupby([key, "event_type"]).size().unstack(fill_value=0)
        for etype, word in COUNTED_EVENTS.items():
            col = counts[etype] if etype in counts.columns else pd.Series(dtype="int64")
            cols[f"{prefix}_{word}_{w}d"] = col
    return pd.DataFrame(cols)


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den > 0)).fillna(0.0).astype("float64")


def _mean_rating(events: pd.DataFrame, key: str) -> pd.Series:
    rated = events[events["event_type"] == "rating"]
    return rated.groupby(key)["value"].mean()


def user_features(inp: Inputs) -> pd.DataFrame:
    """The ``user_stats`` rows of day D (one per user known by D)."""
    import pandas as pd

    end = known_at(inp.day)
    ev = inp.events[inp.events["event_ts"] < end]
    ids = pd.Index(sorted(set(inp.users["user_id"]) | set(ev["user_id"])), name="user_id")
    out = _window_counts(ev, "user_id", end, "user").reindex(ids).fillna(0).astype("int64")
    out["user_ctr_28d"] = _ratio(out["user_clicks_28d"], out["user_views_28d"])
    out["user_purchase_rate_28d"] = _ratio(out["user_purchases_28d"], out["user_views_28d"])
    out["user_mean_rating_28d"] = _mean_rating(ev, "user_id").reindex(ids).fillna(0.0)
    last = ev.groupby("user_id")["event_ts"].max().reindex(ids)
    since = (end - last).dt.total_seconds() / 86400.0
    out["user_days_since_last_event"] = since.fillna(float(MAX_WINDOW)).clip(upper=MAX_WINDOW)
    active = ev.assign(d=ev["event_ts"].dt.floor("D")).groupby("user_id")["d"].nunique()
    out["user_active_days_28d"] = active.reindex(ids).fillna(0).astype("float64")
    profile = inp.users.drop_duplicates("user_id", keep="last").set_index("user_id").reindex(ids)
    tenure = (end - profile["signup_ts"]).dt.total_seconds() / 86400.0
    out["user_tenure_days"] = tenure.fillna(0.0).clip(lower=0.0)
    # top category by share of the user's events (ties: alphabetical), over 28 days
    cat = inp.items.drop_duplicates("item_id", keep="last").set_index("item_id")["category"]
    with_cat = ev.assign(category=ev["item_id"].map(cat)).dropna(subset=["category"])
    by_cat = with_cat.groupby(["user_id", "category"]).size().rename("n").reset_index()
    by_cat = by_cat.sort_values(["user_id", "n", "category"], ascending=[True, False, True])
    totals = by_cat.groupby("user_id")["n"].sum()
    top = by_cat.drop_duplicates("user_id").set_index("user_id")
    out["user_top_category_share"] = (top["n"] / totals).reindex(ids).fillna(0.0)
    out["user_top_category"] = top["category"].reindex(ids).fillna(UNKNOWN)
    out["user_country"] = profile["country"].fillna(UNKNOWN)
    out["user_age_bucket"] = profile["age_bucket"].fillna(UNKNOWN)
    return _finish(out, USER_VIEW, end)


def item_features(inp: Inputs) -> pd.DataFrame:
    """The ``item_stats`` rows of day D (one per catalog item created by the end of D)."""
    end = known_at(inp.day)
    ev = inp.events[inp.events["event_ts"] < end]
    catalog = inp.items[inp.items["created_ts"] < end].drop_duplicates("item_id", keep="last")
    catalog = catalog.set_index("item_id").sort_index()
    ids = catalog.index
    out = _window_counts(ev, "item_id", end, "item").reindex(ids).fillna(0).astype("int64")
    out["item_ctr_28d"] = _ratio(out["item_clicks_28d"], out["item_views_28d"])
    out["item_conversion_28d"] = _ratio(out["item_purchases_28d"], out["item_views_28d"])
    out["item_mean_rating_28d"] = _mean_rating(ev, "item_id").reindex(ids).fillna(0.0)
    out["item_age_days"] = (end - catalog["created_ts"]).dt.total_seconds() / 86400.0
    out["item_price"] = catalog["price"].astype("float64")
    out["item_category"] = catalog["category"]
    return _finish(out, ITEM_VIEW, end)


def _finish(out: pd.DataFrame, view: str, end: dt.datetime) -> pd.DataFrame:
    import pandas as pd

    schema = arrow_schema(view)
    out = out.reset_index()
    ts = pd.Timestamp(end).as_unit("us")
    out["event_timestamp"] = ts
    out["created"] = ts
    return out[schema.names]


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
    import pyarrow as pa

    inp = load_inputs(lake, day)
    frames = {USER_VIEW: user_features(inp), ITEM_VIEW: item_features(inp)}
    rows, keys = {}, {}
    for view, frame in frames.items():
        table = pa.Table.from_pandas(frame, schema=arrow_schema(view), preserve_index=False)
        # the partition holds exactly this one file (a re-run replaces, never duplicates)
        key = lake.write(table, view, day, zone=FEATURES, replace=True)
        rows[view], keys[view] = table.num_rows, key
    return DaySummary(
        day=day.isoformat(),
        rows=rows,
        keys=keys,
        event_days=len(inp.event_days),
        missing_event_days=[d.isoformat() for d in inp.missing_days],
    )


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
