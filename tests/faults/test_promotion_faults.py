"""Promotion under a real MLflow outage: no half promotion, and the retry completes it once.

A real ``mlflow server`` (SQLite store in the test's ``FLYWHEEL_HOME``, a free port) serves the
registry. The candidate is registered through it; then, at the moment between the gate's
decision and the alias move, the server process group is SIGKILLed. The promotion fails, and the
store shows nothing half-done: no ``champion`` alias and no ``promoted`` tag. The server comes
back on the same store and port; the retried register + promote tasks find the version already
registered for the run and complete the promotion: one version, the alias, consistent tags.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import training.registry
from tests.fixtures.lake import write_simulated
from tests.fixtures.models import seed_tracking_db
from tests.s3_server import free_port
from training import pipeline
from training.config import TrainingConfig

MODEL = "flywheel-recommender"


class MlflowServer:
    """``mlflow server`` on a fixed port over one SQLite store, killed and started again."""

    def __init__(self, db: Path, artifacts: Path, port: int):
        self.db, self.artifacts, self.port = db, artifacts, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        self.proc = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.db}",
                "--default-artifact-root",
                self.artifacts.as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill takes its workers too
        )
        deadline = time.time() + timeout_s
        while True:
            assert self.proc.poll() is None, f"mlflow server exited with {self.proc.returncode}"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert time.time() < deadline, f"mlflow server not up within {timeout_s} s"
            time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL the server and its workers: an outage, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def trained_candidate(fw_home, lake):
    """A trained and evaluated candidate on the local SQLite store, which the gate would promote."""
    seed_tracking_db(fw_home)
    end = write_simulated(lake, days=8, users=300, items=120, seed=3)
    cfg = TrainingConfig.load(
        None,
        [
            "data.feature_source=contract",
            "data.window_days=8",
            "train.epochs=2",
            "eval.baselines=popularity,recent_popularity",
        ],
    )
    summary = pipeline.build(end, cfg)
    trained = pipeline.train(cfg, summary["location"], "outage", {"trigger": "manual"})
    evaluation = pipeline.evaluate(cfg, summary["location"], trained)
    evaluation["candidate"]["ndcg_at_10"] = evaluation["baseline"]["ndcg_at_10"] + 0.1
    return cfg, summary, trained, evaluation


def _store(db: Path, run_id: str) -> dict:
    """What the registry holds, read from the SQLite store itself (the server may be down)."""
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    versions = client.search_model_versions(f"name='{MODEL}'")
    return {
        "versions_of_run": sorted(str(v.version) for v in versions if v.run_id == run_id),
        "aliases": {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()},
        "version_tags": {str(v.version): v.tags.get("promotion_decision") for v in versions},
        "run_tag": client.get_run(run_id).data.tags.get("promotion_decision"),
    }


def test_mlflow_down_during_promotion_no_half_promotion(
    trained_candidate, fw_home, tmp_path, monkeypatch
):
    cfg, summary, trained, evaluation = trained_candidate
    db = fw_home / "mlflow" / "mlflow.db"
    server = MlflowServer(db, fw_home / "mlflow" / "artifacts", free_port())
    server.start()
    try:
        monkeypatch.setenv("FLYWHEEL_MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while it is down
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        monkeypatch.setattr(training.registry, "RETRY_WAIT_S", 0.01)
        version = pipeline.register(trained, summary)
        assert version == "1"

        real_move = MlflowClient.set_registered_model_alias

        def outage_then_move(client, *args, **kwargs):
            server.kill()  # MLflow goes down between the decision and the alias move
            return real_move(client, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", outage_then_move)
        with pytest.raises(MlflowException, match="API request to"):
            pipeline.promote(cfg, summary["location"], trained, evaluation, version)
        assert server.proc.returncode is not None  # the server really was killed
        # nothing half-done: no champion, and nothing says "promoted"
        assert _store(db, trained["run_id"]) == {
            "versions_of_run": ["1"],
            "aliases": {},
            "version_tags": {"1": None},
            "run_tag": None,
        }

        # MLflow is back on the same store: the retried tasks complete the promotion once
        monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real_move)
        server.start()
        version = pipeline.register(trained, summary)
        decision = pipeline.promote(cfg, summary["location"], trained, evaluation, version)
        assert decision["promoted"] and version == "1", decision
        assert _store(db, trained["run_id"]) == {
            "versions_of_run": ["1"],
            "aliases": {"champion": "1"},
            "version_tags": {"1": "promoted"},
            "run_tag": "promoted",
        }
    finally:
        server.kill()
