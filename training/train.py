"""Train the two-tower recommender on a training set (see ``training/data.py``).

    python -m training.train --data training_sets/dt=2026-01-14/
    python -m training.train --config my.toml --data /tmp/set --set train.epochs=5 --set model.embedding_dim=64
    torchrun --nproc-per-node 2 -m training.train --data /tmp/set --run-key demo-ddp

``--data`` is a lake prefix or a local folder written by ``flywheel train`` / the
``build_training_set`` task (or ``--build-end-day YYYY-MM-DD`` builds it first). The device is
chosen automatically (CUDA when present, else CPU), bf16 autocast on CUDA only, everything seeded.
Under torchrun the same code runs with DDP (NCCL on GPU, gloo on CPU); only rank 0 logs to MLflow,
evaluates and saves.

Every epoch is checkpointed (model, optimizer, config, encoder, epoch, best metric, history, the
MLflow run id) locally under ``$FLYWHEEL_HOME/checkpoints/<run key>/`` and to the run's artifacts
(``checkpoints/last.pt``). Started again with the same ``--run-key`` (an Airflow retry uses the
DAG run id) it resumes from the last checkpoint, in the same MLflow run. Training stops early when
validation NDCG@10 has not improved for ``train.patience`` epochs; the best epoch's weights are
kept, evaluated on the holdout (with the popularity baseline and, on simulated data, the oracle)
and logged as the pyfunc model ``model``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as torch_dist

from core.errors import FlywheelError
from training.config import TrainingConfig
from training.data import TrainingSet, load_training_set
from training.metrics import evaluate, popularity_counts
from training.model import FeatureEncoder, Retriever, TwoTower

log = logging.getLogger("training.train")

CHECKPOINT = "last.pt"


# --- process setup --------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(
        torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_dir(run_key: str) -> Path:
    from core.settings import get_settings

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_key)
    return get_settings().home / "checkpoints" / safe


def find_checkpoint(run_key: str, client=None) -> dict[str, Any] | None:
    """The last checkpoint of ``run_key``: local first, else the unfinished MLflow run's artifact."""
    local = checkpoint_dir(run_key) / CHECKPOINT
    if local.exists():
        return torch.load(local, map_location="cpu", weights_only=False)
    if client is None:
        return None
    from training.registry import experiment_id

    runs = client.search_runs(
        [experiment_id(client)],
        filter_string=f"tags.run_key = '{run_key}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    for run in runs:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run.info.run_id, f"checkpoints/{CHECKPOINT}", tmp)
            except Exception:  # no checkpoint logged before the crash
                return None
            return torch.load(path, map_location="cpu", weights_only=False)
    return None


def config_digest(cfg: TrainingConfig) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def check_compatible(
    ckpt: dict[str, Any], cfg: TrainingConfig, encoder: FeatureEncoder, run_key: str
) -> None:
    """A checkpoint resumes only the same model on the same data (else a clear error)."""
    old = TrainingConfig.from_dict(ckpt["config"])
    for group in ("data", "model"):
        a, b = getattr(old, group), getattr(cfg, group)
        if a != b:
            diff = [
                f"{group}.{k}: {v} != {getattr(b, k)}"
                for k, v in vars(a).items()
                if v != getattr(b, k)
            ]
            raise FlywheelError(
                f"checkpoint of run key {run_key!r} ({checkpoint_dir(run_key)}) was made with another config "
                f"({'; '.join(diff)}); use another --run-key or delete that folder"
            )
    if ckpt["encoder"] != encoder.to_dict():
        raise FlywheelError(
            f"checkpoint of run key {run_key!r} ({checkpoint_dir(run_key)}) was made on other training data; "
            "use another --run-key or delete that folder"
        )


def save_checkpoint(state: dict[str, Any], run_key: str, log_artifact: bool) -> Path:
    folder = checkpoint_dir(run_key)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT)  # atomic: a kill never leaves half a checkpoint
    if log_artifact:
        import mlflow

        mlflow.log_artifact(str(folder / CHECKPOINT), artifact_path="checkpoints")
    return folder / CHECKPOINT


# --- evaluation -----------------------------------------------------------------------------


def recommend_all(
    retriever: Retriever, users: list[str], k: int, exclude: dict[str, set[str]]
) -> dict[str, list[str]]:
    ids, _ = retriever.recommend(users, k, [sorted(exclude.get(u, ())) for u in users])
    return dict(zip(users, ids, strict=True))


def validation_metrics(
    model: TwoTower, encoder: FeatureEncoder, ts: TrainingSet, cfg: TrainingConfig
) -> dict[str, float]:
    """NDCG/Recall@K on the validation days (users' earlier positives excluded)."""
    val = ts.split("val")
    if val.empty:
        return {}
    truth = val.groupby("user_id")["item_id"].agg(set).to_dict()
    seen = (
        ts.split("train").groupby("user_id")["item_id"].agg(set).to_dict()
        if cfg.eval.exclude_seen
        else {}
    )
    truth = {u: s - seen.get(u, set()) for u, s in truth.items()}
    truth = {u: s for u, s in truth.items() if s}
    users = sorted(truth)[: cfg.data.max_eval_users]
    truth = {u: truth[u] for u in users}
    retriever = Retriever(model, encoder, ts.items, ts.users)
    return evaluate(recommend_all(retriever, users, max(cfg.eval.ks), seen), truth, cfg.eval.ks)


def holdout_metrics(retriever: Retriever, ts: TrainingSet, cfg: TrainingConfig) -> dict[str, float]:
    """Model, popularity and (on simulated data) oracle metrics on the holdout, prefixed."""
    from training.registry import holdout_requests, popularity_metrics

    truth, exclude = holdout_requests(ts, cfg)
    users = list(truth)
    pop = popularity_counts(ts.train["item_id"])
    model_m = evaluate(
        recommend_all(retriever, users, max(cfg.eval.ks), exclude),
        truth,
        cfg.eval.ks,
        len(ts.items),
        pop,
    )
    out = {f"holdout_{k}": v for k, v in model_m.items()}
    out |= {f"popularity_{k}": v for k, v in popularity_metrics(ts, cfg).items() if k != "users"}
    oracle = oracle_metrics(ts, cfg, truth, exclude)
    if oracle:
        out |= {f"oracle_{k}": v for k, v in oracle.items() if k != "users"}
        if oracle.get("ndcg_at_10"):
            out["ndcg_to_oracle_ratio"] = model_m["ndcg_at_10"] / oracle["ndcg_at_10"]
    return out


def oracle_metrics(ts: TrainingSet, cfg: TrainingConfig, truth, exclude) -> dict[str, float] | None:
    """Holdout metrics of the simulator's ground truth ranking, when the lake holds ``sim/``."""
    from core.lake import get_lake

    lake = get_lake()
    if not lake.list("sim/"):
        return None
    try:
        from core.privacy import pseudonymise_many
        from simulation.simulator import load_truth
    except ImportError:
        return None
    from training.metrics import oracle_recommendations

    gt = load_truth(lake)
    raw_users = list(gt.user_pos)
    to_raw = dict(zip(pseudonymise_many(raw_users), raw_users, strict=True))
    users = [u for u in truth if u in to_raw]
    if not users:
        return None
    catalog = ts.items["item_id"].astype(str).tolist()

    def relevance(chunk: list[str], items: list[str]):
        return gt.relevance(
            [to_raw[u] for u in chunk], items, dt.date.fromisoformat(ts.meta["holdout_start"])
        )

    recs = oracle_recommendations(relevance, users, catalog, max(cfg.eval.ks), exclude)
    return evaluate(recs, {u: truth[u] for u in users}, cfg.eval.ks)


def curve_plot(history: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(
        epochs,
        [h.get("val_ndcg_at_10", float("nan")) for h in history],
        "s-",
        color="tab:orange",
        label="val NDCG@10",
    )
    ax2.set_ylabel("validation NDCG@10", color="tab:orange")
    fig.suptitle("training curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- training -------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_id: str | None
    model_uri: str | None
    epochs_run: int
    best_epoch: int
    resumed_from: int
    metrics: dict[str, float]
    interactions_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _batches(n: int, batch_size: int, seed: int, epoch: int, d: Dist) -> list[np.ndarray]:
    """Equal number of batches on every rank (DDP needs the same number of steps)."""
    order = np.random.default_rng(seed + epoch).permutation(n)
    per_rank = n // d.world_size
    mine = order[d.rank * per_rank : (d.rank + 1) * per_rank] if d.enabled else order
    # the last short batch is merged into the previous one (a 1-row batch has no negatives)
    bounds = list(range(0, len(mine), batch_size))
    out = [mine[s : s + batch_size] for s in bounds]
    if len(out) > 1 and len(out[-1]) < 2:
        out[-2] = np.concatenate([out[-2], out.pop()])
    return out


def run_training(
    cfg: TrainingConfig,
    data: str | Path | TrainingSet,
    run_key: str | None = None,
    tags: dict[str, str] | None = None,
    log_mlflow: bool = True,
) -> TrainResult:
    """Train, checkpoint, early-stop, evaluate and log one model; see the module docstring."""
    device = pick_device(cfg.train.device)
    d = setup_distributed(device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    log.info("rank %d/%d on %s", d.rank, d.world_size, device)
    ts = data if isinstance(data, TrainingSet) else load_training_set(data)
    run_key = run_key or f"manual-{ts.meta['window_end']}-{config_digest(cfg)}"
    train = ts.split("train")
    encoder = FeatureEncoder.fit(train, ts.users, ts.items, ts.columns)
    model = TwoTower(encoder, cfg.model).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )
    user_t = {
        k: v.to(device) for k, v in encoder.user.encode(train["user_id"].tolist(), train).items()
    }
    item_t = {
        k: v.to(device) for k, v in encoder.item.encode(train["item_id"].tolist(), train).items()
    }
    counts = np.bincount(item_t["id"].cpu().numpy(), minlength=len(encoder.item.ids) + 1).astype(
        "float64"
    )
    log_q_all = (
        torch.from_numpy(np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0)))
        .float()
        .to(device)
    )

    use_mlflow = log_mlflow and d.main
    client = None
    if use_mlflow:
        from training.registry import configure_mlflow

        client = configure_mlflow()
    ckpt = find_checkpoint(run_key, client)
    if (
        d.enabled
    ):  # every rank resumes from the same checkpoint (rank 0 may have found it in MLflow)
        holder = [ckpt]
        torch_dist.broadcast_object_list(holder, src=0)
        ckpt = holder[0]
    start_epoch, best, best_state, history, bad_epochs, mlflow_run_id = 0, -1.0, None, [], 0, None
    if ckpt is not None:
        check_compatible(ckpt, cfg, encoder, run_key)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, best, best_state = ckpt["epoch"], ckpt["best_metric"], ckpt["best_state"]
        history, bad_epochs, mlflow_run_id = (
            ckpt["history"],
            ckpt["bad_epochs"],
            ckpt.get("mlflow_run_id"),
        )
        if d.main:
            log.info("resumed %s from epoch %d (best val NDCG@10 %.4f)", run_key, start_epoch, best)
    resumed_from = start_epoch

    ddp_model = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    run_ctx = contextlib.nullcontext()
    if use_mlflow:
        import mlflow

        from training.registry import experiment_id

        run_tags = {
            "run_key": run_key,
            "data_window_start": ts.meta["window_start"],
            "data_window_end": ts.meta["window_end"],
            "holdout_start": ts.meta["holdout_start"],
            "feature_service": ts.meta["feature_service"],
            "validation_ids": ",".join(ts.meta.get("validation_ids", [])),
            "git_commit": git_commit(),
            "trigger": "manual",
            "device": str(device),
            "world_size": str(d.world_size),
            **(tags or {}),
        }
        run_ctx = mlflow.start_run(
            run_id=mlflow_run_id,
            experiment_id=None if mlflow_run_id else experiment_id(client),
            run_name=None if mlflow_run_id else f"train-{ts.meta['window_end']}",
            tags=run_tags,
            log_system_metrics=True,
        )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    rows_trained, train_seconds = 0, 0.0
    with run_ctx as active:
        if use_mlflow:
            mlflow_run_id = active.info.run_id
            if resumed_from == 0:
                mlflow.log_params(
                    cfg.flat()
                    | {
                        "data.location": str(
                            data if not isinstance(data, TrainingSet) else "in-memory"
                        )
                    }
                )
                mlflow.log_dict(ts.meta, "training_set_meta.json")
            else:
                mlflow.set_tag("resumed_from_epoch", str(resumed_from))
        stop = bad_epochs >= cfg.train.patience
        epoch = start_epoch
        while not stop and epoch < cfg.train.epochs:
            epoch += 1
            ddp_model.train()
            t0 = time.perf_counter()
            losses = []
            for idx_np in _batches(len(train), cfg.train.batch_size, cfg.train.seed, epoch, d):
                idx = torch.from_numpy(idx_np).to(device)
                u = {k: v[idx] for k, v in user_t.items()}
                i = {k: v[idx] for k, v in item_t.items()}
                with autocast:
                    loss = ddp_model(u, i, log_q_all[i["id"]])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                rows_trained += len(idx_np) * d.world_size
            train_seconds += time.perf_counter() - t0
            entry = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
            }
            flag = torch.zeros(1)
            if d.main:
                model.eval()
                val = validation_metrics(model, encoder, ts, cfg)
                entry |= {f"val_{k}": v for k, v in val.items() if k != "users"}
                score = val.get("ndcg_at_10", -entry["train_loss"])
                if score > best:
                    best, bad_epochs = score, 0
                    best_state = {
                        k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                    }
                else:
                    bad_epochs += 1
                history.append(entry)
                log.info(
                    "epoch %d: %s", epoch, json.dumps({k: round(v, 5) for k, v in entry.items()})
                )
                if use_mlflow:
                    mlflow.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=epoch)
                state = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "config": cfg.to_dict(),
                    "encoder": encoder.to_dict(),
                    "epoch": epoch,
                    "best_metric": best,
                    "best_state": best_state,
                    "bad_epochs": bad_epochs,
                    "history": history,
                    "mlflow_run_id": mlflow_run_id,
                    "run_key": run_key,
                }
                save_checkpoint(state, run_key, log_artifact=use_mlflow)
                stop = bad_epochs >= cfg.train.patience
                flag[0] = float(stop)
            if d.enabled:
                torch_dist.broadcast(flag, src=0)
                stop = bool(flag[0])
            if cfg.train.epoch_delay_s:
                time.sleep(cfg.train.epoch_delay_s)
        epochs_run = epoch
        result = TrainResult(
            mlflow_run_id,
            None,
            epochs_run,
            0,
            resumed_from,
            {},
            rows_trained / train_seconds if train_seconds else 0.0,
        )
        if d.main:
            if best_state is not None:
                model.load_state_dict(best_state)
            model.eval()
            best_epoch = (
                max(history, key=lambda h: h.get("val_ndcg_at_10", -h["train_loss"]))["epoch"]
                if history
                else 0
            )
            retriever = Retriever(model, encoder, ts.items, ts.users)
            metrics = holdout_metrics(retriever, ts, cfg)
            metrics["interactions_per_s"] = result.interactions_per_s
            metrics["best_epoch"] = float(best_epoch)
            if device.type == "cuda":
                metrics["gpu_max_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
            result.metrics, result.best_epoch = metrics, best_epoch
            log.info("holdout: %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}))
            if use_mlflow:
                result.model_uri = _log_outcome(
                    model, encoder, cfg, ts, retriever, history, metrics
                )
    if d.enabled:
        torch_dist.barrier()
    if d.main:  # finished: a later run with this key starts afresh (the run keeps its artifact)
        import shutil

        shutil.rmtree(checkpoint_dir(run_key), ignore_errors=True)
    return result


def _log_outcome(model, encoder, cfg, ts, retriever, history, metrics) -> str:
    import mlflow

    from training.pyfunc import log_recommender, save_artifacts

    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(curve_plot(history, Path(tmp) / "training_curve.png")))
        folder = save_artifacts(
            Path(tmp) / "recommender",
            model,
            encoder,
            cfg,
            retriever.item_ids,
            retriever.item_embeddings,
            ts.users,
        )
        info = log_recommender(
            folder,
            sorted(ts.holdout["user_id"].unique())[:2],
            encoder.user.numeric,
            list(encoder.user.categorical),
        )
    return info.model_uri


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--config", type=Path, help="TOML or JSON file with config groups")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="GROUP.KEY=VALUE",
        help="override a config value",
    )
    ap.add_argument("--data", help="training set location (lake prefix or local folder)")
    ap.add_argument(
        "--build-end-day",
        type=dt.date.fromisoformat,
        help="build the set for the window ending on this day first",
    )
    ap.add_argument("--run-key", help="checkpoint/resume key (default: manual-<window end>-<seed>)")
    ap.add_argument("--no-mlflow", action="store_true", help="train and evaluate without logging")
    ap.add_argument(
        "--result-json", type=Path, help="write the result (run id, model uri, metrics) here"
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(argv)
    try:
        cfg = TrainingConfig.load(args.config, args.set)
        data = args.data
        if args.build_end_day:
            from core.lake import get_lake
            from training.data import build_training_set

            data = build_training_set(get_lake(), args.build_end_day, cfg.data, data)["location"]
        if not data:
            raise FlywheelError("--data (a training set location) or --build-end-day is required")
        result = run_training(cfg, data, run_key=args.run_key, log_mlflow=not args.no_mlflow)
    except FlywheelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    if args.result_json and (int(os.environ.get("RANK", "0")) == 0):
        args.result_json.write_text(json.dumps(result.as_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
