"""The production profile against this machine's services.

Redis (own Feast project name, so own keys; torn down after), Postgres (own database
``flywheel_test_feast_<random>`` for the SQL registry, dropped after) and an S3 lake on a moto
server over real HTTP (the file offline store reads ``s3://`` Parquet through the endpoint).
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pytest

from features import store as fstore
from features.columns import USER_FEATURES
from features.compute import read_features
from tests.fixtures.lake import item_id, user_id, write_validated
from tests.s3_server import moto_s3

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

START = dt.date(2026, 4, 1)
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def production(fw_home, monkeypatch):
    import psycopg

    tag = uuid.uuid4().hex[:10]
    db = f"flywheel_test_feast_{tag}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        with moto_s3("flywheel-feast") as endpoint:
            for k, v in {
                "FLYWHEEL_PROFILE": "production",
                "FLYWHEEL_LAKE_URI": "s3://flywheel-feast/lake",
                "FLYWHEEL_S3_ENDPOINT_URL": endpoint,
                "FLYWHEEL_FEAST_REGISTRY_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
                "FLYWHEEL_FEAST_PROJECT": f"fwtest_{tag}",
                "FLYWHEEL_REDIS_URL": "redis://127.0.0.1:6379/0",
            }.items():
                monkeypatch.setenv(k, v)
            yield {"project": f"fwtest_{tag}", "db": db}
            store = fstore.get_store()
            store.teardown()  # removes the project's keys from Redis
            store.registry.teardown()
    finally:
        fstore._STORES.clear()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _redis_keys(project: str) -> int:
    import redis

    return sum(
        1 for _ in redis.Redis.from_url("redis://127.0.0.1:6379/0").scan_iter(f"*{project}*")
    )


def test_production_profile_on_redis_postgres_and_s3(production):
    from core.lake import S3Lake, get_lake

    lake = get_lake()
    assert isinstance(lake, S3Lake)
    days = write_validated(lake, START, 2, n_users=20, n_items=8, events_per_day=150, seed=1)
    for day in days:
        fstore.compute_day(day)
    store = fstore.get_store()
    assert store.config.online_store.type == "redis"
    assert store.config.registry.registry_type == "sql"

    assert fstore.apply_if_changed()["applied"] is True
    assert fstore.apply_if_changed()["applied"] is False  # the SQL registry remembers
    fstore.materialize_day(days[1])
    assert _redis_keys(production["project"]) > 0
    fstore.check_freshness(days[1])

    users = [user_id(i) for i in range(20)]
    online = fstore.online_features(user_ids=users)["users"].set_index("user_id")
    offline = read_features(lake, "user_stats", days[1], days[1]).set_index("user_id").loc[users]
    for col in USER_FEATURES:
        np.testing.assert_array_equal(online[col].to_numpy(), offline[col].to_numpy(), err_msg=col)

    # training frame through the file offline store reading s3:// Parquet
    entity = pd.DataFrame(
        {
            "user_id": [user_id(3)],
            "item_id": [item_id(1)],
            "event_timestamp": [pd.Timestamp("2026-04-02 08:00", tz="UTC")],
        }
    )
    frame = fstore.build_training_frame(entity)
    day1 = read_features(lake, "user_stats", days[0], days[0]).set_index("user_id").loc[user_id(3)]
    assert frame.loc[0, "user_views_28d"] == day1["user_views_28d"]

    # a fresh store object (another worker) sees the same registry in Postgres
    fstore._STORES.clear()
    assert {fv.name for fv in fstore.get_store().list_feature_views()} == {
        "user_stats_fv",
        "item_stats_fv",
    }
    fstore.get_store().teardown()
    assert _redis_keys(production["project"]) == 0
