"""The store config of each profile is rendered from the settings."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import get_settings
from features.store import (
    config_dict,
    redis_connection_string,
    render_yaml,
    source_location,
)


def test_embedded_config_lives_under_flywheel_home(fw_home, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", "proj_a")
    cfg = config_dict(get_settings())
    assert cfg["project"] == "proj_a"
    assert cfg["registry"]["path"] == str(fw_home.resolve() / "feast" / "registry.db")
    assert cfg["online_store"] == {
        "type": "sqlite",
        "path": str(fw_home.resolve() / "feast" / "online_store.db"),
    }
    assert cfg["offline_store"]["type"] == "file"
    path, endpoint = source_location("user_stats")
    assert path == str(fw_home.resolve() / "lake" / "features" / "user_stats") + "/"
    assert endpoint is None
    assert "registry.db" in render_yaml().read_text()


def test_production_config_renders_redis_postgres_and_s3(fw_home, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_PROFILE", "production")
    monkeypatch.setenv("FLYWHEEL_FEAST_REGISTRY_URL", "postgresql+psycopg://u:p@db:5432/feast")
    monkeypatch.setenv("FLYWHEEL_REDIS_URL", "redis://:secret@cache:6380/2")
    monkeypatch.setenv("FLYWHEEL_LAKE_URI", "s3://bucket/lake")
    monkeypatch.setenv("FLYWHEEL_S3_ENDPOINT_URL", "http://minio:9000")
    cfg = config_dict(get_settings())
    assert cfg["registry"]["registry_type"] == "sql"
    assert cfg["registry"]["path"] == "postgresql+psycopg://u:p@db:5432/feast"
    assert cfg["online_store"]["type"] == "redis"
    assert cfg["online_store"]["connection_string"] == "cache:6380,db=2,password=secret"
    assert source_location("item_stats") == (
        "s3://bucket/lake/features/item_stats/",
        "http://minio:9000",
    )


def test_production_without_registry_url_is_a_config_error(fw_home, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_PROFILE", "production")
    monkeypatch.delenv("FLYWHEEL_FEAST_REGISTRY_URL", raising=False)
    with pytest.raises(ConfigError, match="FLYWHEEL_FEAST_REGISTRY_URL"):
        config_dict(get_settings())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379", "127.0.0.1:6379"),
        ("redis://h:1/3", "h:1,db=3"),
        ("rediss://:pw@h:1", "h:1,password=pw,ssl=true"),
        ("redis://:p%40ss%2Fw@h:1/1", "h:1,db=1,password=p@ss/w"),  # percent-encoded
        ("h:1,db=0", "h:1,db=0"),
    ],
)
def test_redis_url_to_feast_connection_string(url, expected):
    assert redis_connection_string(url) == expected


def test_redis_password_feast_cannot_carry_is_refused():
    with pytest.raises(ConfigError, match="may not contain"):
        redis_connection_string("redis://:a%2Cb@h:1")


def test_rendered_feature_store_yaml_is_private(fw_home):
    import stat

    from features.store import render_yaml

    path = render_yaml(get_settings())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it can hold the Redis password
