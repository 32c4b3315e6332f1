"""The native twin end to end: the production topology as processes runs the whole loop.

Starts Postgres-backed Airflow with CeleryExecutor on Redis (workers for queues ``default`` and
``gpu``), api-server, scheduler, dag-processor, triggerer, an MLflow server on Postgres with
artifacts on an S3 endpoint (moto), the lake on the same S3, Feast on Redis. Then, only through
Airflow's REST API: simulate → ingest the days (catch-up) → features → train → the taste shift →
drift → retrain → promotion; asserts where each task ran and the final state.

Slow (several minutes): marked ``slow``; ``make test-integration`` runs it.
"""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from core.assets import DRIFT
from core.names import (
    CHAMPION,
    DEFAULT_QUEUE,
    DRIFT_DAG,
    FEATURES_DAG,
    GPU_QUEUE,
    TRAIN_DAG,
    TRAINING_POOL,
)
from deploy.twin import Twin, venv_bin
from flywheel.loop import Progress, run_loop
from tests.integration.airflow_api import read_asset_events

pytestmark = [
    pytest.mark.twin,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(2400),  # 6-8 min idle, 12.6 min on a slower day: room for a loaded CI
]

START = dt.date(2026, 1, 1)
DAYS = 8
SHIFT_DAY = 5


def _upstream_assets(client, dag_id: str, run_id: str) -> set[str]:
    import urllib.parse

    run = urllib.parse.quote(run_id, safe="")
    path = f"/dags/{dag_id}/dagRuns/{run}/upstreamAssetEvents"
    events = read_asset_events(lambda: client.get(path))["asset_events"]
    return {e["uri"] for e in events}


def test_twin_runs_the_loop_on_the_production_topology(tmp_path):
    twin = Twin(tmp_path / "twin")
    twin.start(progress=Progress())
    try:
        env = twin.run_env()
        sim = subprocess.run(
            [
                venv_bin("flywheel"), "simulate", "--days", str(DAYS), "--users", "500",
                "--items", "100", "--scenario", "taste_shift", "--shift-day", str(SHIFT_DAY),
                "--start", START.isoformat(), "--seed", "3", "--no-progress",
            ],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert sim.returncode == 0, sim.stderr[-2000:]

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=twin.endpoints.mlflow_url)
        name = "flywheel-recommender"

        def has_champion() -> bool:
            from training.registry import current_champion

            return current_champion(client, name) is not None

        # phase 1: the days before the shift until the loop settles, then a champion (the
        # asset-triggered trainings, else one manual run); phase 2: the shifted days → drift →
        # retraining
        status = run_loop(
            twin.client, START, DAYS, SHIFT_DAY, Progress(), has_champion, twin.group,
            timeout=1800, settle_s=15,
        )  # fmt: skip
        assert status["first_training"] is not None and has_champion(), status

        # every simulated day went through the gate; the loop ran every stage
        assert len(status["ingested"]) == DAYS, status
        for dag_id in (FEATURES_DAG, TRAIN_DAG, DRIFT_DAG):
            assert status["dags"][dag_id].get("success", 0) >= 1, (dag_id, status["dags"])

        # where each task ran: training on the gpu worker, everything else on the default one
        tis = [
            ti for ti in twin.client.all_task_instances() if ti["state"] in ("success", "failed")
        ]
        train = [ti for ti in tis if (ti["dag_id"], ti["task_id"]) == (TRAIN_DAG, "train")]
        assert train, "no training task ran"
        for ti in train:
            assert ti["queue"] == GPU_QUEUE and ti["pool"] == TRAINING_POOL, ti
            assert ti["hostname"].endswith("-worker-gpu"), ti["hostname"]
        for ti in tis:
            if ti not in train:
                assert ti["queue"] == DEFAULT_QUEUE, (ti["dag_id"], ti["task_id"], ti["queue"])
                assert ti["hostname"].endswith("-worker-default"), (ti["task_id"], ti["hostname"])

        # the shift was detected, emitted the drift Asset, and that started a retraining
        drift_runs = [r for r in twin.client.dag_runs(DRIFT_DAG) if r["state"] == "success"]
        emitted = [
            r
            for r in drift_runs
            if any(
                ti["task_id"] == "emit_drift" and ti["state"] == "success"
                for ti in twin.client.task_instances(DRIFT_DAG, r["dag_run_id"])
            )
        ]
        assert emitted, "no drift decided after the taste shift"
        retrain = [
            r
            for r in twin.client.dag_runs(TRAIN_DAG)
            if DRIFT.uri in _upstream_assets(twin.client, TRAIN_DAG, r["dag_run_id"])
        ]
        assert retrain and any(r["state"] == "success" for r in retrain), "drift did not retrain"

        # final state: versions in the MLflow server (Postgres + S3 artifacts), a champion
        versions = client.search_model_versions(f"name='{name}'")
        assert len(versions) >= 2
        champion = client.get_model_version_by_alias(name, CHAMPION)
        assert champion.source or champion.run_id
        # promotion after the shift: the champion now was trained on shifted days
        shift_date = (START + dt.timedelta(days=SHIFT_DAY)).isoformat()
        assert champion.tags["data_window_end"] >= shift_date, (champion.version, champion.tags)
        assert champion.tags.get("promotion_decision") == "promoted", champion.tags
        keys = [
            o["Key"]
            for o in twin.s3_client().list_objects_v2(Bucket="flywheel").get("Contents", [])
        ]
        assert any(k.startswith("lake/validated/events/dt=") for k in keys)
        assert any(k.startswith("mlflow/") for k in keys), "MLflow artifacts are not on S3"
    finally:
        twin.stop()
