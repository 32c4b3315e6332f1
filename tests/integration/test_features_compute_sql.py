"""The engine's SQL features against the numpy implementation they replaced (the oracle).

The oracle below is the pandas/numpy computation features were made with before they moved to
DuckDB over the window's partitions (``features.compute``): it reads the whole 28-day window
into memory, so it only serves small data, here. Both run on a simulated month with the cases
that break naive SQL: a quarantined day (a gap in the windows), users and items appearing during
the month, items without events, items not yet created, a re-listed item (its last row wins),
multi-genre categories with ties, events of unknown users and on unknown items, and events
stamped outside their partition's day. Ids, strings and counts must be equal; floats equal to
1e-12 (SQL may sum in another order).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from core.contract import EVENTS, ITEMS, USERS, Table
from core.lake import FEATURES, VALIDATED, Lake
from core.names import COUNTED_EVENTS, FEATURE_WINDOWS, ITEM_VIEW, USER_VIEW, VIEWS
from features.compute import (
    GENRE_SEP,
    MAX_WINDOW,
    UNKNOWN,
    arrow_schema,
    compute_features,
    compute_range,
    known_at,
)
from tests.fixtures.lake import write_simulated, write_table

# --- the oracle: the numpy implementation, as it was -----------------------------------------

_US_PER_DAY = 86_400_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass
class Inputs:
    day: dt.date
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


def _read(lake: Lake, table: Table, days: list[dt.date]) -> pd.DataFrame:
    return lake.read(table.name, days, zone=VALIDATED, schema=table.arrow_schema()).to_pandas()


def load_inputs(lake: Lake, day: dt.date) -> Inputs:
    available = set(lake.partitions(VALIDATED, EVENTS.name))
    window = [day - dt.timedelta(days=k) for k in range(MAX_WINDOW - 1, -1, -1)]
    return Inputs(
        day=day,
        events=_read(lake, EVENTS, [d for d in window if d in available]),
        items=_read(lake, ITEMS, [d for d in lake.partitions(VALIDATED, ITEMS.name) if d <= day]),
        users=_read(lake, USERS, [d for d in lake.partitions(VALIDATED, USERS.name) if d <= day]),
    )


def _as_us(col: pd.Series) -> np.ndarray:
    return col.dt.tz_convert(None).to_numpy().astype("datetime64[us]").astype("int64")


@dataclass
class _Events:
    user: np.ndarray
    item: np.ndarray
    etype: np.ndarray
    value: np.ndarray
    ts: np.ndarray

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


def _window_counts(codes, ev: _Events, n: int, end_us: int, prefix: str) -> dict:
    cols = {}
    for w in FEATURE_WINDOWS:
        in_w = ev.ts >= end_us - w * _US_PER_DAY
        for etype, word in COUNTED_EVENTS.items():
            hits = codes[in_w & (ev.etype == etype)]
            cols[f"{prefix}_{word}_{w}d"] = np.bincount(hits, minlength=n).astype("int64")
    return cols


def _ratio(num, den):
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _mean_rating(codes, ev: _Events, n: int):
    rated = ev.etype == "rating"
    total = np.bincount(codes[rated], weights=ev.value[rated], minlength=n)
    return _ratio(total, np.bincount(codes[rated], minlength=n))


def _days(delta_us):
    return delta_us / 1e6 / 86400.0


def _top_genre(ucodes, categories, n: int):
    top = np.full(n, UNKNOWN, dtype=object)
    share = np.zeros(n)
    if len(ucodes) == 0:
        return top, share
    cat_code, cats = pd.factorize(categories)
    split = [str(c).split(GENRE_SEP) for c in cats]
    genres = np.array(sorted({g for parts in split for g in parts}), dtype=object)
    where = {g: k for k, g in enumerate(genres)}
    member = np.zeros((len(cats), len(genres)), dtype="int64")
    for k, parts in enumerate(split):
        member[k, [where[g] for g in parts]] = 1
    users, row = np.unique(ucodes, return_inverse=True)
    by_cat = np.zeros((len(users), len(cats)), dtype="int64")
    np.add.at(by_cat, (row, cat_code), 1)
    by_genre = by_cat @ member
    best = by_genre.argmax(axis=1)
    top[users] = genres[best]
    share[users] = by_genre[np.arange(len(users)), best] / by_cat.sum(axis=1)
    return top, share


def oracle_users(inp: Inputs) -> pa.Table:
    end_us = (known_at(inp.day) - _EPOCH) // _MICROSECOND
    ev = _Events.before(inp.events, end_us)
    known = inp.users["user_id"].to_numpy(dtype=object)
    ids = pd.Index(np.concatenate([known, ev.user])).unique().sort_values()
    n, codes = len(ids), ids.get_indexer(ev.user)
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
    at = ids.get_indexer(profile["user_id"].to_numpy(dtype=object))
    tenure = np.zeros(n)
    tenure[at] = _days(end_us - _as_us(profile["signup_ts"]))
    out["user_tenure_days"] = np.maximum(tenure, 0.0)
    items = inp.items[inp.items["item_id"].isin(ev.item)]
    catalog = items.drop_duplicates("item_id", keep="last")
    item_at = pd.Index(catalog["item_id"]).get_indexer(ev.item)
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


def oracle_items(inp: Inputs) -> pa.Table:
    end_us = (known_at(inp.day) - _EPOCH) // _MICROSECOND
    ev = _Events.before(inp.events, end_us)
    items = inp.items
    catalog = items[_as_us(items["created_ts"]) < end_us].drop_duplicates("item_id", keep="last")
    catalog = catalog.iloc[np.argsort(catalog["item_id"].to_numpy(dtype=object), kind="stable")]
    ids = pd.Index(catalog["item_id"])
    n, codes = len(ids), ids.get_indexer(ev.item)
    ev = ev.subset(codes >= 0)
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
    schema = arrow_schema(view)
    stamp = np.full(len(ids), end_us, dtype="int64")
    columns = {schema.names[0]: ids.to_numpy(dtype=object), **out}
    columns["event_timestamp"] = columns["created"] = stamp
    return pa.table([pa.array(columns[f.name], type=f.type) for f in schema], schema=schema)


# --- the month ------------------------------------------------------------------------------

START = dt.date(2026, 1, 1)
GAP = dt.date(2026, 1, 12)  # quarantined: no validated events
EXTRA = dt.date(2026, 1, 15)  # a day with the odd cases


def _ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def _edge_cases(lake: Lake) -> None:
    """Rows that only some days meet: see the module docstring."""
    items = {
        "item_id": ["g1", "g2", "g3", "idle", "later", "i00001"],
        "category": ["Action|Comedy", "Comedy|Drama", "Action|Action|", "books", "toys", "toys"],
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.5],
        # "later" enters the catalog two days after it is listed; i00001 is re-listed
        "created_ts": [_ts("2026-01-15")] * 4 + [_ts("2026-01-17 08:00"), _ts("2026-01-15")],
    }
    write_table(lake, "items", EXTRA, items)
    users = {
        "user_id": ["p_tie", "p_" + "0" * 24],
        "signup_ts": [_ts("2026-01-16 06:00"), _ts("2026-01-15 03:00")],  # a future signup
        "country": ["SE", "NO"],
        "age_bucket": ["25-34", "55+"],
    }
    write_table(lake, "users", EXTRA, users)
    day = lake.read("events", [EXTRA], zone=VALIDATED, schema=EVENTS.arrow_schema()).to_pandas()
    rows = [
        ("x1", "p_tie", "g1", "rating", 4.5, _ts("2026-01-15 10:00")),
        ("x2", "p_tie", "g2", "click", 1.0, _ts("2026-01-15 11:00")),
        ("x3", "p_tie", "g3", "view", 1.0, _ts("2026-01-15 12:00")),
        ("x4", "p_ghost", "g1", "purchase", 1.0, _ts("2026-01-15 13:00")),  # no profile
        ("x5", "p_tie", "nowhere", "view", 1.0, _ts("2026-01-15 14:00")),  # unknown item
        ("x6", "p_tie", "later", "view", 1.0, _ts("2026-01-15 15:00")),  # item not created yet
        ("x7", "p_tie", "g2", "view", 1.0, _ts("2026-01-13 15:00")),  # late: an earlier day
        ("x8", "p_tie", "g1", "view", 1.0, _ts("2026-01-16 00:00")),  # after the day's end
    ]
    extra = pd.DataFrame(rows, columns=day.columns)
    write_table(lake, "events", EXTRA, pd.concat([day, extra], ignore_index=True))


@pytest.fixture
def month(lake) -> list[dt.date]:
    last = write_simulated(lake, days=30, users=120, items=60, seed=3, start=START)
    lake.delete_prefix(f"{VALIDATED}/events/dt={GAP.isoformat()}/")
    _edge_cases(lake)
    days = lake.partitions(VALIDATED, EVENTS.name)
    assert GAP not in days and last in days
    return days


def _assert_same(got: pa.Table, want: pa.Table, view: str, day: dt.date) -> None:
    assert got.schema == want.schema, (view, day)
    assert got.num_rows == want.num_rows, (view, day)
    for f in want.schema:
        a, b = got.column(f.name).to_numpy(), want.column(f.name).to_numpy()
        if pa.types.is_floating(f.type):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"{view} {day} {f}")
        else:
            assert (a == b).all(), (view, day, f.name)


def test_sql_features_equal_the_numpy_oracle_on_a_simulated_month(month, lake):
    summaries = compute_range(lake, month[0], month[-1])
    assert [s.day for s in summaries] == [d.isoformat() for d in month]
    gap = next(s for s in summaries if s.day == EXTRA.isoformat())
    assert gap.missing_event_days == [GAP.isoformat()] and gap.event_days == 14
    for day in month:
        inp = load_inputs(lake, day)
        want = {USER_VIEW: oracle_users(inp), ITEM_VIEW: oracle_items(inp)}
        for view in VIEWS:
            got = lake.read(view, [day], zone=FEATURES, schema=arrow_schema(view))
            _assert_same(got, want[view], view, day)


def test_the_edge_cases_are_met(month, lake):
    """The month holds what the comparison is meant to cover (so it cannot pass vacuously)."""
    compute_features(lake, EXTRA)
    users = lake.read(USER_VIEW, [EXTRA], zone=FEATURES).to_pandas().set_index("user_id")
    tie = users.loc["p_tie"]
    # Action: g1 + g3 (counted once although listed twice) = 2; Comedy: g1 + g2 + g2 = 3 … but
    # the late x7 (g2) counts too: Comedy 3, Drama 2, Action 2, "" 1 of 5 events with a category
    assert (tie.user_top_category, tie.user_top_category_share) == ("Comedy", pytest.approx(3 / 5))
    assert tie.user_tenure_days == 0.0 and tie.user_country == "SE"  # signs up tomorrow
    assert users.loc["p_ghost", "user_country"] == UNKNOWN
    assert users.loc["p_ghost", "user_purchases_1d"] == 1
    items = lake.read(ITEM_VIEW, [EXTRA], zone=FEATURES).to_pandas().set_index("item_id")
    assert "later" not in items.index and "nowhere" not in items.index
    assert items.loc["idle", "item_views_28d"] == 0 and items.loc["idle", "item_ctr_28d"] == 0.0
    assert items.loc["i00001", "item_price"] == 6.5  # the re-listed row wins
    assert items.loc["g1", "item_views_1d"] == 0  # x8 belongs to the next day
