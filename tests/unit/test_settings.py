from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings, get_settings


def test_embedded_defaults_live_under_home(fw_home):
    s = get_settings()
    assert s.profile == "embedded"
    assert s.home == fw_home.resolve()
    assert s.lake_uri == (fw_home / "lake").resolve().as_uri()
    assert s.mlflow_tracking_uri == f"sqlite:///{fw_home.resolve() / 'mlflow' / 'mlflow.db'}"
    assert s.airflow_home == fw_home.resolve() / "airflow"


def test_env_prefix_and_reload(monkeypatch, fw_home):
    monkeypatch.setenv("FLYWHEEL_LAKE_URI", "s3://bucket/prefix")
    monkeypatch.setenv("FLYWHEEL_PROFILE", "production")
    s = get_settings()
    assert s.lake_uri == "s3://bucket/prefix"
    assert s.profile == "production"


def test_aws_endpoint_is_honoured(monkeypatch, fw_home):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert get_settings().s3_endpoint_url == "http://127.0.0.1:9000"


def test_unknown_profile_is_rejected(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_PROFILE", "staging")
    with pytest.raises(Exception, match="profile"):
        Settings()


def test_unwritable_home_gives_one_clear_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    s = Settings(home=ro / "sub")
    try:
        if __import__("os").geteuid() == 0:
            # root ignores mode bits; use a path under a regular file instead
            f = tmp_path / "file"
            f.write_text("x")
            s = Settings(home=Path(f) / "sub")
        with pytest.raises(ConfigError, match="not writable"):
            s.ensure_home()
    finally:
        ro.chmod(0o700)
