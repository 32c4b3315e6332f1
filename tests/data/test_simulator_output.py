"""What ``simulate`` writes: deterministic, within the data contract, seasonal, and learnable."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from core.contract import AGE_BUCKETS, EVENT_TYPES, ISO_COUNTRIES, TABLES
from core.lake import RAW, Lake, part_key, partition_prefix
from simulation.simulator import load_truth, simulate

D0 = dt.date(2026, 1, 5)  # a Monday: two full weeks
DAYS = 14


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    lake = Lake.from_uri(str(tmp_path_factory.mktemp("sim-stable")))
    summary = simulate(lake, days=DAYS, users=800, items=200, seed=7, start=D0)
    return lake, summary


def frames(lake: Lake, table: str) -> pd.DataFrame:
    """All partitions of a raw table, with the partition day in ``dt``."""
    parts = []
    for day in lake.partitions(RAW, table):
        t = lake.read_parquet(partition_prefix(RAW, table, day))
        assert t.schema.equals(TABLES[table].arrow_schema()), (table, day)
        parts.append(t.to_pandas().assign(dt=day))
    return pd.concat(parts, ignore_index=True)


def test_same_seed_same_bytes_other_seed_other_data(run, tmp_path):
    lake, _ = run
    again = Lake.from_uri(str(tmp_path / "again"))
    simulate(again, days=DAYS, users=800, items=200, seed=7, start=D0)
    keys = lake.list()
    assert keys == again.list()
    assert all(lake.read_bytes(k) == again.read_bytes(k) for k in keys)
    other = Lake.from_uri(str(tmp_path / "other"))
    simulate(other, days=2, users=800, items=200, seed=8, start=D0)
    key = part_key(RAW, "events", D0)
    assert other.read_bytes(key) != lake.read_bytes(key)


def test_partitions_follow_the_contract(run):
    lake, summary = run
    days = [D0 + dt.timedelta(days=d) for d in range(DAYS)]
    for table in TABLES:
        assert lake.partitions(RAW, table) == days
    ev, items, users = frames(lake, "events"), frames(lake, "items"), frames(lake, "users")
    assert len(ev) == summary.total_events > 30_000
    for df in (ev, items, users):
        assert not df.isna().any().any()
    # keys unique across the whole run
    assert ev.event_id.is_unique and items.item_id.is_unique and users.user_id.is_unique
    assert ev.event_id.str.match(r"^e\d{8}-\d{7}$").all()
    assert users.user_id.str.match(r"^u\d{6}$").all() and items.item_id.str.match(r"^i\d{5}$").all()
    # allowed values and ranges
    assert set(ev.event_type) == set(EVENT_TYPES)
    rating = ev.event_type == "rating"
    assert ev.value[rating].between(1, 5).all() and (ev.value[rating] % 1 == 0).all()
    assert (ev.value[~rating] == 1.0).all()
    assert (items.price >= 0).all() and set(users.country) <= ISO_COUNTRIES
    assert set(users.age_bucket) <= set(AGE_BUCKETS)
    # every time inside its partition's day (UTC)
    for df, col in ((ev, "event_ts"), (items, "created_ts"), (users, "signup_ts")):
        assert (df[col].dt.date == df.dt).all(), col
    # day 0 holds the initial catalog and population, later days a few new ones
    assert (items.dt == D0).sum() == 200 and (users.dt == D0).sum() == 800
    assert (items.dt > D0).sum() > 0 and (users.dt > D0).sum() > 0
    # every event's user and item exist by that day, and act after they exist
    ev = ev.merge(items[["item_id", "dt", "created_ts"]], on="item_id", suffixes=("", "_item"))
    ev = ev.merge(users[["user_id", "dt", "signup_ts"]], on="user_id", suffixes=("", "_user"))
    assert len(ev) == summary.total_events
    assert (ev.dt_item <= ev.dt).all() and (ev.dt_user <= ev.dt).all()
    assert (ev.event_ts > ev.created_ts).all() and (ev.event_ts > ev.signup_ts).all()


def test_funnel_and_long_tail(run):
    lake, _ = run
    ev = frames(lake, "events")
    counts = ev.event_type.value_counts()
    assert (
        counts["view"]
        > counts["click"]
        > counts["add_to_cart"]
        > counts["purchase"]
        > counts["rating"]
    )
    # every purchase follows a click on the same item by the same user that day
    clicks = set(
        zip(ev.user_id[ev.event_type == "click"], ev.item_id[ev.event_type == "click"], strict=True)
    )
    buys = ev[ev.event_type == "purchase"]
    assert all(p in clicks for p in zip(buys.user_id, buys.item_id, strict=True))
    # long-tailed popularity: the top 10% of items get far more than 10% of the views
    views = ev[ev.event_type == "view"].item_id.value_counts()
    assert views.iloc[: len(views) // 10].sum() / views.sum() > 0.3


def test_weekly_seasonality(run):
    _, summary = run
    per_day = pd.Series(summary.events_per_day)
    weekday = pd.to_datetime(per_day.index).weekday
    assert per_day[weekday >= 5].mean() > 1.15 * per_day[weekday < 5].mean()


def test_tastes_are_learnable_beyond_popularity(run):
    """On the last day's clicks, tastes (truth, or a simple per-user category model) beat popularity."""
    lake, _ = run
    ev, items = frames(lake, "events"), frames(lake, "items")
    last = ev.dt.max()
    train, test = ev[ev.dt < last], ev[(ev.dt == last) & (ev.event_type == "click")]
    top_pop = set(train[train.event_type == "click"].item_id.value_counts().index[:10])
    cat = dict(zip(items.item_id, items.category, strict=True))
    mix = (
        train.assign(cat=train.item_id.map(cat))
        .groupby(["user_id", "cat"])
        .size()
        .unstack(fill_value=0)
    )
    mix = mix.div(mix.sum(axis=1), axis=0)
    pop = train.item_id.value_counts(normalize=True)
    ids = items.item_id.to_numpy()
    item_pop, item_cat = pop.reindex(ids).fillna(0).to_numpy(), items.category.to_numpy()
    truth = load_truth(lake)
    users = test.user_id.unique()
    oracle = np.argsort(-truth.relevance(users, ids, last), axis=1)[:, :10]
    hits = {"popularity": 0, "category model": 0, "oracle": 0}
    for row, u in enumerate(users):
        clicked = set(test.item_id[test.user_id == u])
        hits["popularity"] += len(clicked & top_pop)
        hits["oracle"] += len(clicked & set(ids[oracle[row]]))
        if u in mix.index:
            score = mix.loc[u].reindex(item_cat).fillna(0).to_numpy() * item_pop
            hits["category model"] += len(clicked & set(ids[np.argsort(-score)[:10]]))
    assert hits["category model"] > 1.5 * hits["popularity"], hits
    assert hits["oracle"] > hits["category model"], hits
