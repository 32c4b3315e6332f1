"""Process-level training: resume after a killed run, DDP with world size 2 on CPU (gloo), and
checkpoints and model files that would run code when loaded are refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--set",
    "data.feature_source=contract",
    "--set",
    "data.window_days=8",
    "--set",
    "train.patience=10",
]


@pytest.fixture
def train_set(fw_home, lake):
    from tests.fixtures.lake import write_simulated
    from training.config import TrainingConfig
    from training.data import build_training_set

    end = write_simulated(lake, days=8, users=200, items=80, seed=5)
    cfg = TrainingConfig.load(None, ["data.feature_source=contract", "data.window_days=8"])
    return build_training_set(lake, end, cfg.data, fw_home / "set")["location"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(fw_home: Path) -> dict[str, str]:
    return {**os.environ, "FLYWHEEL_HOME": str(fw_home), "PYTHONPATH": str(ROOT)}


def test_resume_after_killed_training(train_set, fw_home, tmp_path):
    from tests.fixtures.models import seed_tracking_db
    from training.registry import configure_mlflow
    from training.train import checkpoint_dir

    seed_tracking_db(fw_home)
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "--data",
        train_set,
        "--run-key",
        "killed",
        *ARGS,
        "--set",
        "train.epochs=4",
    ]
    ckpt = checkpoint_dir("killed") / "last.pt"
    # checkpoint_dir() follows FLYWHEEL_HOME of this process: the same as the child's
    assert str(ckpt).startswith(str(fw_home))
    proc = subprocess.Popen(
        [*cmd, "--set", "train.epoch_delay_s=30"],
        cwd=ROOT,
        env=_env(fw_home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not ckpt.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        time.sleep(1.0)  # the MLflow copy of the checkpoint follows the local one
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    import torch

    first = torch.load(ckpt, weights_only=True)  # tensors and plain values only
    assert first["epoch"] == 1
    # a retry on another worker has no local checkpoint: it must come from the artifact store
    shutil.rmtree(ckpt.parent)
    out = tmp_path / "result.json"
    done = subprocess.run(
        [*cmd, "--result-json", str(out)],
        cwd=ROOT,
        env=_env(fw_home),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed killed from epoch 1" in done.stderr
    result = json.loads(out.read_text())
    assert result["resumed_from"] == 1 and result["epochs_run"] == 4
    assert result["run_id"] == first["mlflow_run_id"]  # the same MLflow run continues
    client = configure_mlflow()
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_epoch"] == "1"
    steps = [m.step for m in client.get_metric_history(result["run_id"], "train_loss")]
    assert sorted(steps) == [1, 2, 3, 4]


def test_ddp_world_size_2_on_cpu(train_set, fw_home, tmp_path):
    out = tmp_path / "result.json"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [
        str(torchrun),
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "training.train",
        "--data",
        train_set,
        "--run-key",
        "ddp",
        "--no-mlflow",
        *ARGS,
        "--set",
        "train.epochs=2",
        "--result-json",
        str(out),
    ]
    done = subprocess.run(
        cmd, cwd=ROOT, env=_env(fw_home), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0/2 on cpu" in done.stderr and "rank 1/2 on cpu" in done.stderr
    result = json.loads(out.read_text())
    assert result["epochs_run"] == 2
    assert result["metrics"]["holdout_ndcg_at_10"] > 0


class RunsCode:
    """Pickles as "call exec(...)": loading it with weights_only=False would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _crafted(path: Path, marker: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model": {}, "payload": RunsCode(marker)}, path)
    return path


def test_crafted_checkpoint_or_model_file_is_refused_without_running_code(fw_home, tmp_path):
    """A checkpoint found locally or downloaded from an unfinished MLflow run with a matching
    run key, and a model's ``recommender.pt``, load with weights_only=True: a pickled object
    that would run code is refused and never runs."""
    from core.errors import FlywheelError
    from tests.fixtures.models import seed_tracking_db
    from training.pyfunc import load_retriever
    from training.registry import configure_mlflow, experiment_id
    from training.train import checkpoint_dir, find_checkpoint

    marker = tmp_path / "code-ran"
    _crafted(checkpoint_dir("evil-local") / "last.pt", marker)
    with pytest.raises(FlywheelError, match="holds more than tensors and plain values; refused"):
        find_checkpoint("evil-local")

    # a tampered artifact of an unfinished run tagged with the run key (another worker's retry)
    seed_tracking_db(fw_home)
    client = configure_mlflow()
    run = client.create_run(experiment_id(client), tags={"run_key": "evil-remote"})
    upload = _crafted(tmp_path / "upload" / "last.pt", marker)
    client.log_artifact(run.info.run_id, str(upload), artifact_path="checkpoints")
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    with pytest.raises(FlywheelError, match="refused"):
        find_checkpoint("evil-remote", client)

    # a model folder whose recommender.pt was swapped (what serving and infra-validation load)
    _crafted(tmp_path / "model" / "recommender.pt", marker)
    with pytest.raises(FlywheelError, match="refused"):
        load_retriever(tmp_path / "model")
    assert not marker.exists()
