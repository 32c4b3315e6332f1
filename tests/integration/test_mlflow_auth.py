"""The registry behind MLflow's basic-auth app, as compose and the twin run it.

There a non-admin user asking for a model nobody registered yet gets 403 PERMISSION_DENIED, not
404 (MLflow does not reveal what exists). Before the first training that is the normal state:
the drift monitor, the promotion step and serving must read it as "no champion yet", not fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from serving.model import resolve_alias
from tests.s3_server import free_port
from training.registry import current_champion

WRITER = ("flywheel-airflow", "w" * 32)
READER = ("flywheel-serving", "r" * 32)


@pytest.fixture
def auth_server(tmp_path: Path):
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "MLFLOW_AUTH_DB_URL": f"sqlite:///{tmp_path / 'auth.db'}",
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a" * 20,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "s" * 40,
        "MLFLOW_AIRFLOW_PASSWORD": WRITER[1],
        "MLFLOW_SERVING_PASSWORD": READER[1],
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.mlflow_server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "the MLflow auth server exited"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the MLflow auth server did not start"
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _as(user: tuple[str, str], url: str, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])
    return MlflowClient(tracking_uri=url, registry_uri=url)  # not a registry set by another test


def test_no_model_yet_behind_auth_is_no_champion_not_an_error(auth_server, monkeypatch):
    name = "flywheel-recommender"
    for user in (READER, WRITER):  # both get 403 for a model that does not exist
        client = _as(user, auth_server, monkeypatch)
        assert current_champion(client, name) is None
        assert resolve_alias(client, name, "champion") is None
    writer = _as(WRITER, auth_server, monkeypatch)
    writer.create_registered_model(name)
    reader = _as(READER, auth_server, monkeypatch)
    assert current_champion(reader, name) is None  # the model exists, its alias does not yet
    # a real refusal is still an error: the reader may not move an alias
    with pytest.raises(Exception, match="403|PERMISSION_DENIED|Permission"):
        reader.set_registered_model_alias(name, "champion", "1")
