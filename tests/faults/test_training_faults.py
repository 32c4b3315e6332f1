"""A training worker SIGKILLed mid-epoch resumes from its last checkpoint, in the same MLflow run.

``python -m training.train`` runs as a real process on a tiny training set with many small
epochs (small batches, so an epoch takes a while). Right after its first checkpoint lands the
process is SIGKILLed -- in the middle of the next epoch or of the checkpoint's upload, as a lost
worker would be. Started again with the same run key (an Airflow retry uses the DAG run id) it
resumes from the epoch of the checkpoint it left, continues the same MLflow run and finishes:
every epoch logged once, the model logged, the run FINISHED.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.fixtures.lake import write_simulated
from tests.fixtures.models import seed_tracking_db
from training.config import TrainingConfig
from training.data import build_training_set
from training.registry import configure_mlflow
from training.train import checkpoint_dir

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6


@pytest.fixture
def train_set(fw_home, lake):
    end = write_simulated(lake, days=8, users=200, items=80, seed=5)
    cfg = TrainingConfig.load(None, ["data.feature_source=contract", "data.window_days=8"])
    return build_training_set(lake, end, cfg.data, fw_home / "set")["location"]


def test_training_worker_sigkilled_mid_epoch_resumes_in_the_same_run(train_set, fw_home, tmp_path):
    seed_tracking_db(fw_home)
    env = {**os.environ, "FLYWHEEL_HOME": str(fw_home), "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "--data",
        train_set,
        "--run-key",
        "killed-mid-epoch",
        "--set",
        "data.feature_source=contract",
        "--set",
        "data.window_days=8",
        "--set",
        f"train.epochs={EPOCHS}",
        "--set",
        f"train.patience={EPOCHS}",
        "--set",
        "train.batch_size=4",  # many small steps: an epoch is long enough to be killed inside
    ]
    ckpt = checkpoint_dir("killed-mid-epoch") / "last.pt"
    assert str(ckpt).startswith(str(fw_home))  # the child's FLYWHEEL_HOME is this test's
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 90
        while not ckpt.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "no checkpoint within 90 s"
            time.sleep(0.05)
        time.sleep(0.3)  # into the next epoch
        assert proc.poll() is None, "training finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_log = proc.stderr.read()

    left = torch.load(ckpt, weights_only=True)  # what the killed worker left (atomic: whole)
    assert 1 <= left["epoch"] < EPOCHS
    # killed after that epoch's checkpoint and before the next epoch ended: inside it
    assert f"epoch {left['epoch']}: " in killed_log
    assert f"epoch {left['epoch'] + 1}: " not in killed_log, killed_log[-2000:]
    run_id = left["mlflow_run_id"]
    client = configure_mlflow()
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: nobody ended it

    out = tmp_path / "result.json"
    done = subprocess.run(
        [*cmd, "--result-json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed killed-mid-epoch from epoch {left['epoch']}" in done.stderr
    result = json.loads(out.read_text())
    assert result["run_id"] == run_id  # the same MLflow run continues
    assert result["resumed_from"] == left["epoch"] and result["epochs_run"] == EPOCHS
    assert result["model_uri"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == str(left["epoch"])
    assert "holdout_ndcg_at_10" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert set(steps) == set(range(1, EPOCHS + 1)), steps
    assert not ckpt.parent.exists()  # finished: the next run with this key starts afresh
