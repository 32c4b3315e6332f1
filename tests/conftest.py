"""Test configuration shared by every suite.

Airflow reads its configuration once per process, at import, so the embedded Airflow of the test
session (its own ``AIRFLOW_HOME`` and SQLite database in a temporary folder) is set up here,
before anything imports ``airflow``. Each test gets its own ``FLYWHEEL_HOME`` (``fw_home``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="flywheel-tests-"))
os.environ["FLYWHEEL_HOME"] = str(_SESSION_ROOT / "home")
os.environ.setdefault("FLYWHEEL_PSEUDONYM_KEY", "test-pseudonym-key-0123456789abcdef")
os.environ.pop("FLYWHEEL_LAKE_URI", None)
os.environ.pop("FLYWHEEL_PROFILE", None)

from flywheel.airflow_env import apply_to_current_process  # noqa: E402

apply_to_current_process()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database for the session (for DagBag and ``dag.test()``)."""
    from flywheel.airflow_env import ensure_db

    ensure_db()
    return Path(os.environ["AIRFLOW_HOME"])


DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"


def load_dag(dag_id: str, filename: str | None = None):
    """One DAG parsed from ``dags/<filename or dag_id>.py`` by Airflow's DagBag, no import errors."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{filename or dag_id}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


@pytest.fixture
def fw_home(tmp_path, monkeypatch) -> Path:
    """A fresh ``FLYWHEEL_HOME`` (and so a fresh local lake) for one test."""
    home = tmp_path / "fw"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.delenv("FLYWHEEL_LAKE_URI", raising=False)
    return home


@pytest.fixture
def lake(fw_home):
    from core.lake import get_lake

    return get_lake()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A real S3 endpoint over HTTP (moto server) with bucket ``flywheel-test`` and test creds."""
    from tests.s3_server import moto_s3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto_s3() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        yield endpoint


@pytest.fixture
def s3_lake(fw_home, s3_endpoint, monkeypatch):
    """The lake on ``s3://flywheel-test/lake`` served by moto over HTTP."""
    from core.lake import get_lake

    monkeypatch.setenv("FLYWHEEL_LAKE_URI", "s3://flywheel-test/lake")
    return get_lake()
