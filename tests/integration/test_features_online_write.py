"""The streamed online write (``features.online``) leaves what Feast's ``materialize`` leaves.

Each test builds the same lake twice over: one Feast project materialized with Feast's stock
``store.materialize`` and one with :func:`features.store.materialize_day_fast` (the streamed,
pipelined path); every entity's online values must be the same through
``get_online_features`` -- and on Redis the very same hash bytes (keys differ only by project).
Redis: 127.0.0.1:6379 under this test's own project names (torn down after); the SQL registry
in a throw-away Postgres database. SQLite: the embedded profile.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pandas as pd
import pyarrow as pa
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from core.names import ITEM_VIEW, USER_VIEW, VIEWS
from features import store as fstore
from features.compute import arrow_schema
from features.online import write_batches
from tests.fixtures.lake import write_validated

START = dt.date(2026, 5, 1)
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _days(lake) -> list[dt.date]:
    days = write_validated(lake, START, 3, n_users=60, n_items=25, events_per_day=400, seed=7)
    fstore.compute_days(days)
    return days


def _ids(lake, view: str, day: dt.date) -> list[str]:
    key = fstore.JOIN_KEY[view]
    return lake.read(view, [day], columns=[key], zone="features").column(key).to_pylist()


def _online(store, lake, day: dt.date) -> dict[str, dict]:
    """Every feature of every entity of day D's partitions, as ``get_online_features`` reads."""
    ids = {
        "users": _ids(lake, USER_VIEW, day) + ["p_nobody"],
        "items": _ids(lake, ITEM_VIEW, day) + ["nothing"],
    }
    frames = fstore.online_features(ids["users"], ids["items"], store=store)
    # NaN != NaN: the unknown ids' missing values compare as None
    return {
        kind: frame.astype(object).where(frame.notna(), None).to_dict(orient="list")
        for kind, frame in frames.items()
    }


def _stock(store, day: dt.date) -> None:
    start, end = fstore.interval_of(day)
    store.materialize(start, end, feature_views=[fstore.fv_name(v) for v in VIEWS])


def _use_project(monkeypatch, project: str):
    monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", project)
    store = fstore.get_store()
    fstore.apply_if_changed(store)
    return store


@pytest.fixture
def sqlite_lake(lake):
    yield lake
    fstore._STORES.clear()


def test_sqlite_streamed_write_equals_stock_materialize(sqlite_lake, monkeypatch):
    lake = sqlite_lake
    days = _days(lake)
    stock = _use_project(monkeypatch, "fwonline_stock")
    assert stock.config.online_store.type == "sqlite"
    _stock(stock, days[-1])
    want = _online(stock, lake, days[-1])
    fast = _use_project(monkeypatch, "fwonline_fast")
    summary = fstore.materialize_day_fast(days[-1], store=fast)
    assert summary["rows"] == {v: len(_ids(lake, v, days[-1])) for v in VIEWS}
    got = _online(fast, lake, days[-1])
    assert got == want
    assert got["users"]["user_country"][-1] is None  # the unknown id reads nothing
    interval = fast.get_feature_view(fstore.fv_name(USER_VIEW)).materialization_intervals
    assert interval and interval[-1][1] == fstore.known_at(days[-1])


@pytest.fixture
def redis_projects(fw_home, monkeypatch):
    """Production profile on this machine's Redis and Postgres; a local lake."""
    import psycopg

    tag = uuid.uuid4().hex[:10]
    db = f"flywheel_test_online_{tag}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    projects = [f"fwonline_{tag}_stock", f"fwonline_{tag}_fast"]
    env = {
        "FLYWHEEL_PROFILE": "production",
        "FLYWHEEL_LAKE_URI": (fw_home / "lake").as_uri(),
        "FLYWHEEL_FEAST_REGISTRY_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
        "FLYWHEEL_REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        yield projects
        for project in projects:
            monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", project)
            store = fstore.get_store()
            store.teardown()  # removes the project's keys from Redis
    finally:
        fstore._STORES.clear()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _hashes(project: str) -> dict[bytes, dict]:
    """Every Redis hash of ``project``, by key without the project suffix."""
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    suffix = project.encode()
    return {
        key[: -len(suffix)]: client.hgetall(key)
        for key in client.scan_iter(match=b"*" + suffix, count=1000)
    }


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_streamed_write_equals_stock_materialize(redis_projects, monkeypatch):
    from core.lake import get_lake

    stock_project, fast_project = redis_projects
    monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", stock_project)
    lake = get_lake()
    days = _days(lake)
    stock = _use_project(monkeypatch, stock_project)
    assert stock.config.online_store.type == "redis"
    _stock(stock, days[-1])
    want = _online(stock, lake, days[-1])
    fast = _use_project(monkeypatch, fast_project)
    fstore.materialize_day_fast(days[-1], store=fast)
    assert _online(fast, lake, days[-1]) == want
    stock_hashes, fast_hashes = _hashes(stock_project), _hashes(fast_project)
    assert len(fast_hashes) == sum(len(_ids(lake, v, days[-1])) for v in VIEWS)
    assert fast_hashes == stock_hashes  # byte for byte: keys, fields, values, timestamps

    # Feast's rule holds: an older day never replaces a newer one; the same instant is a no-op
    fstore.materialize_day_fast(days[0], store=fast)
    assert _hashes(fast_project) == stock_hashes
    fv = fast.get_feature_view(fstore.fv_name(USER_VIEW))
    batch = lake.read(USER_VIEW, [days[-1]], zone="features").to_batches()
    again = write_batches(fast, fv, batch)
    assert (again.rows, again.written, again.skipped) == (60, 0, 60)

    # one batch naming a key twice: the rule applies within the batch too, as in Feast's store
    frame = lake.read(USER_VIEW, [days[-1]], zone="features").slice(0, 3).to_pandas()
    frame["user_id"] = ["p_twice", "p_twice", "p_once"]
    # newer then older for p_twice (the newer stays), p_once older than nothing (written)
    frame.loc[1:, "event_timestamp"] -= pd.Timedelta(days=1)
    batch = pa.Table.from_pandas(frame, schema=arrow_schema(USER_VIEW), preserve_index=False)
    stock.write_to_online_store(fstore.fv_name(USER_VIEW), frame)  # Feast's own writer
    write_batches(fast, fv, batch.to_batches())
    after = _hashes(fast_project)
    assert after == _hashes(stock_project)
    twice = next(h for k, h in after.items() if b"p_twice" in k)
    stamp = Timestamp.FromString(twice[b"_ts:user_stats_fv"]).ToDatetime(dt.UTC)
    assert stamp == fstore.known_at(days[-1])  # the newer row of the two


def test_a_conversion_error_reaches_the_caller(sqlite_lake, monkeypatch):
    """The converting thread's failure is raised in the writer, not lost with the thread."""
    lake = sqlite_lake
    days = _days(lake)
    store = _use_project(monkeypatch, "fwonline_err")
    fv = store.get_feature_view(fstore.fv_name(USER_VIEW))
    good = lake.read(USER_VIEW, [days[-1]], zone="features").to_batches()
    bad = pa.record_batch({"user_id": ["x"]})  # no feature columns
    with pytest.raises(KeyError):
        write_batches(store, fv, [*good, bad])
