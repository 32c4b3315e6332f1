"""Train the two-tower recommender on a training set (see ``training/data.py``).

On one device (CUDA when present, else CPU)::

    python -m training.train --data training_sets/dt=2026-01-14/
    python -m training.train --build-end-day 2026-01-14 --set train.epochs=5
    python -m training.train --config my.toml --data /tmp/set --set train.epochs=5 --set model.embedding_dim=64

With DDP on 2 processes (NCCL on GPUs, gloo on CPU)::

    torchrun --nproc-per-node 2 -m training.train --data /tmp/set --run-key demo-ddp

``--data`` is a lake prefix or a local folder written by ``flywheel train`` / the
``build_training_set`` task (or ``--build-end-day YYYY-MM-DD`` builds it first). Every default is
in :class:`training.config.TrainingConfig`; ``--config FILE`` and ``--set group.key=value``
override it. bf16 autocast on CUDA only, everything seeded. Under torchrun the same code runs
with DDP; only rank 0 logs to MLflow, evaluates and saves.

The flow, :func:`run_training`: config → :func:`setup` (seed, threads, device, DDP) → the data →
:func:`build_job` (encoder, model, optimizer) → :func:`resume` → per epoch :func:`train_epoch`
then :func:`end_epoch` (validate under ``torch.no_grad()``, keep the best weights, log, save a
checkpoint) → :func:`evaluate_and_log` (holdout metrics, the pyfunc model ``model`` in MLflow).

A train split of ``train.stream_min_rows`` rows or more (default 2M) is not held as tensors: it
is written as Parquet shards, encoded once into a local cache and streamed by a
:class:`training.stream.ShardStream` (:func:`build_stream_job`, :func:`stream_epoch`); smaller ones
are encoded into in-memory tensors (:func:`build_job`, :func:`train_epoch`).

Every epoch is checkpointed (model, optimizer, config, encoder, epoch, best metric, history, the
MLflow run id) locally under ``$FLYWHEEL_HOME/checkpoints/<run key>/`` and to the run's artifacts
(``checkpoints/last.pt``). Started again with the same ``--run-key`` (an Airflow retry uses the
DAG run id) it resumes from the last checkpoint, in the same MLflow run. Training stops early when
validation NDCG@10 has not improved for ``train.patience`` epochs. With ``train.refit`` (the
default) a fresh model is then trained on train + validation for the best epoch's count
(:func:`refit`; every rank under DDP), else the best epoch's weights are kept; the final model is
evaluated on the holdout (with the popularity baseline and, on simulated data, the oracle)
and logged as the pyfunc model ``model``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from torch import distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from core.errors import FlywheelError
from core.lake import LocalLake, get_lake
from core.settings import get_settings
from training.config import TrainConfig, TrainingConfig, at_catalog_scale
from training.data import (
    TrainingDataError,
    TrainingSet,
    build_training_set,
    load_training_set,
    read_meta,
    train_shards,
)
from training.evaluation import holdout_metrics, validation_metrics
from training.model import FeatureEncoder, Retriever, TwoTower, history_index
from training.pyfunc import load_blob, log_recommender, plain, save_artifacts
from training.registry import configure_mlflow, describe_trigger, experiment_id
from training.stream import ShardStream, encode_shards, fitted_encoder, loader, write_shards

log = logging.getLogger("training.train")

CHECKPOINT = "last.pt"
SPARSE_MIN_ROWS = 1024  # embedding tables from this many rows are sparse (train.sparse_embeddings)
SHARD_ROWS = 262_144  # rows per shard written from an in-memory frame (~60 MB encoded)


# --- the run ----------------------------------------------------------------------------------


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


def run_training(
    cfg: TrainingConfig,
    data: str | Path | TrainingSet,
    run_key: str | None = None,
    tags: dict[str, str] | None = None,
    log_mlflow: bool = True,
) -> TrainResult:
    """Train, checkpoint, early-stop, evaluate and log one model; see the module docstring."""
    device, d = setup(cfg.train)
    shards = None if isinstance(data, TrainingSet) else stream_shards(data, cfg)
    ts = data if isinstance(data, TrainingSet) else load_training_set(data, lean=bool(shards))
    run_key = run_key or f"manual-{ts.meta['window_end']}-{config_digest(cfg)}"
    job = build_job(cfg, ts, device, shards=shards)
    client = configure_mlflow() if log_mlflow and d.main else None
    progress = resume(job, cfg, run_key, client, d)
    net = distributed(job.model, device, d)
    location = "in-memory" if isinstance(data, TrainingSet) else str(data)
    tags = run_tags(ts, run_key, device, d, tags) if client else {}
    rows, seconds = 0, 0.0
    with mlflow_run(client, cfg, ts, progress, tags, location) as run_id:
        progress.mlflow_run_id = run_id or progress.mlflow_run_id
        while not progress.stop and progress.epoch < cfg.train.epochs:
            progress.epoch += 1
            loss, epoch_rows, epoch_s = train_epoch(net, job, cfg.train, progress.epoch, d)
            rows, seconds = rows + epoch_rows, seconds + epoch_s
            if d.main:
                end_epoch(job, ts, cfg, progress, loss, run_key, use_mlflow=client is not None)
            progress.stop = agree_to_stop(progress.stop, device, d)
            if cfg.train.epoch_delay_s:
                time.sleep(cfg.train.epoch_delay_s)
        result = TrainResult(
            run_id=progress.mlflow_run_id,
            model_uri=None,
            epochs_run=progress.epoch,
            best_epoch=0,
            resumed_from=progress.resumed_from,
            metrics={},
            interactions_per_s=rows / seconds if seconds else 0.0,
        )
        final = job
        if d.main:  # the scoring-time blend, on the best epoch's weights (only rank 0 scores)
            cfg = pick_personal_weight(job, ts, cfg, progress)
        epochs = refit_epochs(cfg, ts, progress, device, d)
        if epochs:
            final = refit(cfg, ts, device, d, epochs, shards)
        if d.main:
            evaluate_and_log(
                final,
                ts,
                cfg,
                progress,
                result,
                use_mlflow=client is not None,
                refitted=final is not job,
            )
    if d.enabled:
        torch_dist.barrier()
    if d.main:  # finished: a later run with this key starts afresh (the run keeps its artifact)
        shutil.rmtree(checkpoint_dir(run_key), ignore_errors=True)
    return result


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


def setup(train: TrainConfig) -> tuple[torch.device, Dist]:
    """Device, process group, CPU threads and seeds: everything before the first tensor."""
    device = pick_device(train.device)
    d = setup_distributed(device)
    if train.num_threads:
        torch.set_num_threads(train.num_threads)
    seed_everything(train.seed)
    log.info("rank %d/%d on %s", d.rank, d.world_size, device)
    return device, d


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
    """``auto``: this process's GPU when CUDA is present (``LOCAL_RANK`` under torchrun), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def distributed(model: TwoTower, device: torch.device, d: Dist) -> torch.nn.Module:
    """The model under DDP when there are several ranks (gradients averaged across them)."""
    if not d.enabled:
        return model
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    """The commit of the code that trains (``unknown`` outside a git checkout)."""
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


# --- the model and its data -----------------------------------------------------------------


@dataclass
class Job:
    """What one run trains: the encoder, the model, its optimizer and the encoded train rows."""

    encoder: FeatureEncoder
    model: TwoTower
    optimizer: torch.optim.Optimizer
    users: dict[str, torch.Tensor]  # the user side of every train row, on the device
    items: dict[str, torch.Tensor]  # the item side of every train row, on the device
    log_q: torch.Tensor  # log popularity of each item index: the logQ correction
    device: torch.device
    catalog: dict[str, torch.Tensor] | None = None  # every vocabulary item (full softmax)
    weight: torch.Tensor | None = None  # each train row's loss weight (recency)
    stream: ShardStream | None = None  # the streaming path: batches from encoded shards
    loader_workers: int = 0  # DataLoader processes reading the stream ahead

    @property
    def rows(self) -> int:
        return self.stream.manifest.rows if self.stream is not None else len(self.users["id"])


def build_job(
    cfg: TrainingConfig,
    ts: TrainingSet,
    device: torch.device,
    with_val: bool = False,
    shards: list[Path] | None = None,
) -> Job:
    """Fit the encoder on the train split (``with_val``: train + validation); the model, its
    optimizer and the encoded rows, each with the user's history before it.

    A train split of :func:`stream_min_rows` rows or more streams from encoded shards instead
    (:func:`build_stream_job`: the set's own Parquet ``shards`` when given)."""
    cfg = at_catalog_scale(cfg, len(ts.items))  # model.loss="auto" decided by the catalog
    n_rows = len(ts.train) if with_val else ts.split_rows("train")
    if n_rows >= cfg.train.stream_min_rows:
        return build_stream_job(cfg, ts, device, with_val, shards)
    if ts.lean:
        raise TrainingDataError(
            f"this training set was loaded without its features (lean) for streaming, but its "
            f"{n_rows} rows are under train.stream_min_rows={cfg.train.stream_min_rows}"
        )
    rows = ts.train if with_val else ts.split("train")
    encoder = FeatureEncoder.fit(rows, ts.users, ts.items, ts.columns)
    model = TwoTower(encoder, cfg.model).to(device)
    n = cfg.model.history_len
    model.known_histories = ts.histories(n, before="holdout" if with_val else "val")
    optimizer = make_optimizer(model, cfg.train)
    users = encoder.user.encode(rows["user_id"].tolist(), rows)
    items = encoder.item.encode(rows["item_id"].tolist(), rows)
    if n > 0:
        codes = pd.factorize(rows["user_id"])[0]
        stamps = pd.to_datetime(rows["event_timestamp"], utc=True).astype("int64").to_numpy()
        users["hist"] = torch.from_numpy(history_index(codes, stamps, items["id"].numpy(), n))
    weight = recency_weights(rows["event_timestamp"], cfg.train.recency_half_life_days)
    counts = torch.bincount(
        items["id"], weights=weight, minlength=len(encoder.item.ids) + 1
    ).float()
    model.init_item_bias(counts.cpu())
    model.init_item_freshness(items["id"], _stamps_ns(rows))
    catalog = None
    if cfg.model.loss == "full":
        catalog = {k: v.to(device) for k, v in catalog_inputs(encoder, rows, ts.items).items()}
    return Job(
        encoder=encoder,
        model=model,
        optimizer=optimizer,
        users={k: v.to(device) for k, v in users.items()},
        items={k: v.to(device) for k, v in items.items()},
        log_q=item_log_q(items["id"], len(encoder.item.ids)).to(device),
        device=device,
        catalog=catalog,
        weight=None if weight is None else weight.to(device),
    )


def make_optimizer(model: TwoTower, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam over every parameter; with ``train.sparse_embeddings`` the large embedding tables
    take sparse gradients and
    a lazy :class:`torch.optim.SparseAdam` (only the rows of a batch are updated: a step no
    longer costs the whole catalog), the rest Adam. CPU and gloo only (NCCL has no sparse
    all-reduce)."""
    nccl = torch_dist.is_initialized() and torch_dist.get_backend() == "nccl"
    if nccl and train.sparse_embeddings:
        log.info("sparse embeddings off under NCCL (no sparse all-reduce): dense Adam")
    if not train.sparse_embeddings or nccl:
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    big = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding | torch.nn.EmbeddingBag)
        and m.weight.shape[0] >= SPARSE_MIN_ROWS
        and m.weight.requires_grad
    ]
    if not big:
        return torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    for module in big:
        module.sparse = True  # read at every forward: the table's gradient holds its batch rows
    return SparseDenseAdam(model, [m.weight for m in big], train)


class SparseDenseAdam(torch.optim.Optimizer):
    """:class:`torch.optim.SparseAdam` for the sparse tables, Adam (with weight decay) for the
    rest: one optimizer for the loop and the checkpoint. The tables get no weight decay (SparseAdam
    has none; the default is 1e-6) and their moments move only on the rows of a batch."""

    def __init__(self, model: torch.nn.Module, tables: list[torch.Tensor], train: TrainConfig):
        ids = {id(t) for t in tables}
        self.dense = torch.optim.Adam(
            [p for p in model.parameters() if id(p) not in ids],
            lr=train.lr,
            weight_decay=train.weight_decay,
        )
        self.sparse = torch.optim.SparseAdam(tables, lr=train.lr)
        super().__init__([{"params": list(model.parameters())}], {"lr": train.lr})

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):  # noqa: ARG002 (the signature of Optimizer.step)
        self.dense.step()
        self.sparse.step()

    def state_dict(self) -> dict[str, Any]:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


def build_stream_job(
    cfg: TrainingConfig,
    ts: TrainingSet,
    device: torch.device,
    with_val: bool = False,
    shards: list[Path] | None = None,
) -> Job:
    """:func:`build_job` on the streaming path: the train rows as Parquet shards (``shards``, else
    written once from ``ts.train``), the encoder fit shard by shard, every shard encoded once
    into a cache under ``$FLYWHEEL_HOME/cache/train-stream/`` (rank 0 first under DDP), and
    batches read from it by a :class:`training.stream.ShardStream` (rank set per epoch)."""
    cfg = at_catalog_scale(cfg, len(ts.items))  # also when called directly (benchmarks)
    splits = ("train", "val") if with_val else ("train",)
    cache = get_settings().home / "cache" / "train-stream"
    n = cfg.model.history_len

    def prepare():
        if shards is None and ts.lean:
            raise TrainingDataError("a lean training set streams from its shards: none given")
        paths = shards if shards is not None else frame_shards(ts, cache / "shards")
        encoder = fitted_encoder(paths, ts.users, ts.items, ts.columns, cache / "encoders", splits)
        hl = cfg.train.recency_half_life_days
        return encoder, encode_shards(paths, encoder, cache / "encoded", n, hl, ts.items, splits)

    encoder, manifest = _rank_zero_first(prepare)
    model = TwoTower(encoder, cfg.model).to(device)
    model.known_histories = ts.histories(n, before="holdout" if with_val else "val")
    optimizer = make_optimizer(model, cfg.train)
    stats = manifest.stats()
    model.init_item_bias(torch.from_numpy(stats["weighted_counts"]).float())
    seen = np.flatnonzero(stats["first_ns"] < np.iinfo(np.int64).max)
    if len(seen):  # each item's first row, and the newest row (the cutoff)
        idx = np.r_[seen, seen[:1]]
        model.init_item_freshness(
            torch.from_numpy(idx), np.r_[stats["first_ns"][seen], stats["span_ns"][1:]]
        )
    catalog = None
    if cfg.model.loss == "full":
        catalog = {k: v.to(device) for k, v in manifest.catalog().items()}
    return Job(
        encoder=encoder,
        model=model,
        optimizer=optimizer,
        users={},
        items={},
        log_q=log_q_of_counts(stats["counts"]).to(device),
        device=device,
        catalog=catalog,
        stream=ShardStream(manifest, cfg.train.batch_size, cfg.train.seed),
        loader_workers=cfg.train.loader_workers,
    )


def stream_shards(location: str | Path, cfg: TrainingConfig) -> list[Path] | None:
    """The set's train shards as local files when its train split streams (``train.
    stream_min_rows`` rows or more): a local set's own files, an embedded lake's files where they
    lie, an object store's copied once under ``$FLYWHEEL_HOME/cache/train-stream/sets/``. None
    for a set loaded whole (small, or written before shards)."""
    meta = read_meta(location)
    if not meta.get("train_shards") or meta["rows"]["train"] < cfg.train.stream_min_rows:
        return None
    keys = train_shards(location)
    if Path(location).is_dir():
        return [Path(k) for k in keys]
    lake = get_lake()
    if isinstance(lake, LocalLake):
        return [lake.path(k) for k in keys]
    digest = hashlib.sha256(json.dumps([str(location), meta], default=str).encode()).hexdigest()
    folder = get_settings().home / "cache" / "train-stream" / "sets" / digest[:16]
    paths = [folder / Path(k).name for k in keys]
    if not (folder / "complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for key, path in zip(keys, paths, strict=True):  # one shard in memory at a time
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(lake.read_bytes(key))
            tmp.replace(path)
        (folder / "complete").write_text(str(len(paths)))
    return paths


def frame_shards(ts: TrainingSet, root: Path) -> list[Path]:
    """``ts.train`` as Parquet shards under ``root/<digest of the set>/`` (written once)."""
    key = hashlib.sha256(json.dumps(ts.meta, sort_keys=True, default=str).encode())
    cols = ts.train[["user_id", "item_id", "event_timestamp", "split"]]
    key.update(f"{len(cols)}:{pd.util.hash_pandas_object(cols, index=False).sum()}".encode())
    folder = root / key.hexdigest()[:16]
    done = folder / "complete"
    if done.exists():
        return sorted(folder.glob("part-*.parquet"))
    paths = write_shards(ts.train, folder, SHARD_ROWS)
    done.write_text(str(len(ts.train)))
    return paths


def _rank_zero_first(fn):
    """``fn()`` on rank 0, then on the other ranks (which find rank 0's files) under DDP."""
    if not torch_dist.is_initialized():
        return fn()
    out = fn() if torch_dist.get_rank() == 0 else None
    torch_dist.barrier()
    return out if out is not None else fn()


def _stamps_ns(rows: pd.DataFrame) -> np.ndarray:
    """Each row's event time in ns since the epoch (UTC)."""
    stamps = pd.to_datetime(rows["event_timestamp"], utc=True)
    return stamps.dt.as_unit("ns").astype("int64").to_numpy()  # the lake stores microseconds


def recency_weights(stamps: pd.Series, half_life_days: float) -> torch.Tensor | None:
    """Loss weight per row: 1 for the newest, halving every ``half_life_days`` before it."""
    if not half_life_days or len(stamps) == 0:
        return None
    t = pd.to_datetime(stamps, utc=True)
    age = (t.max() - t).dt.total_seconds().to_numpy() / 86_400.0
    return torch.from_numpy(0.5 ** (age / half_life_days)).float()


def catalog_inputs(
    encoder: FeatureEncoder, rows: pd.DataFrame, items: pd.DataFrame
) -> dict[str, torch.Tensor]:
    """Item tensors of every vocabulary item, in index order (1..n): the full softmax's classes.

    Each item's features are its snapshot row, else its latest training row.
    """
    cols = [c for c in encoder.item.numeric + list(encoder.item.categorical) if c in rows]
    latest = rows.sort_values("event_timestamp", kind="stable")[["item_id", *cols]]
    frame = pd.concat([latest, items[["item_id", *[c for c in cols if c in items]]]])
    frame = frame.drop_duplicates("item_id", keep="last").set_index("item_id")
    frame = frame.reindex(encoder.item.ids).reset_index()
    return encoder.item.encode(encoder.item.ids, frame)


def pick_personal_weight(
    job: Job, ts: TrainingSet, cfg: TrainingConfig, progress: Progress
) -> TrainingConfig:
    """The config with ``model.personal_weights`` resolved to one value: the one whose validation
    NDCG@10 is highest with the best epoch's weights (the first of equals). The result is what
    the final model is built, evaluated and saved with; one candidate, or no validation rows,
    keeps the first."""
    weights = cfg.model.personal_weights
    if len(weights) > 1 and ts.split_rows("val") and progress.best_state is not None:
        job.model.load_state_dict(progress.best_state)
        job.model.eval()
        scores = []
        for w in weights:
            job.model.personal_weight = float(w)
            scores.append(validation_metrics(job.model, job.encoder, ts, cfg).get("ndcg_at_10", 0))
        pick = weights[int(np.argmax(scores))]
        log.info(
            "personal weight %g picked on validation (NDCG@10 %s)",
            pick,
            ", ".join(f"{w:g}: {v:.4f}" for w, v in zip(weights, scores, strict=True)),
        )
        weights = (pick,)
    job.model.personal_weight = float(weights[0])
    return cfg.merged({"model": {"personal_weights": (weights[0],)}})


def refit_epochs(
    cfg: TrainingConfig, ts: TrainingSet, progress: Progress, device: torch.device, d: Dist
) -> int:
    """Epochs of the refit on train + validation: the best epoch (rank 0 knows it, every rank
    follows), 0 when there is nothing to refit (``train.refit`` off, no validation rows)."""
    epochs = 0
    if cfg.train.refit and ts.split_rows("val") and progress.history:
        epochs = best_epoch(progress.history)
    if d.enabled:
        flag = torch.tensor([float(epochs)], device=device)
        torch_dist.broadcast(flag, src=0)
        epochs = int(flag[0])
    return epochs


def refit(
    cfg: TrainingConfig,
    ts: TrainingSet,
    device: torch.device,
    d: Dist,
    epochs: int,
    shards: list[Path] | None = None,
) -> Job:
    """A fresh model trained on train + validation for ``epochs`` (the epoch early stopping
    picked): the validation days are the freshest data, too valuable to leave out."""
    seed_everything(cfg.train.seed)
    job = build_job(cfg, ts, device, with_val=True, shards=shards)
    net = distributed(job.model, device, d)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loss, _, _ = train_epoch(net, job, cfg.train, epoch, d)
        if d.main:
            log.info("refit epoch %d/%d on train + validation: loss %.5f", epoch, epochs, loss)
    if d.main:
        log.info("refit: %d epochs, %.1f s", epochs, time.perf_counter() - t0)
    return job


def item_log_q(item_index: torch.Tensor, n_items: int) -> torch.Tensor:
    """log P(item) among the train positives, per item index (0 = unknown; unseen count as 1)."""
    counts = np.bincount(item_index.cpu().numpy(), minlength=n_items + 1).astype("float64")
    return log_q_of_counts(counts)


def log_q_of_counts(counts: np.ndarray) -> torch.Tensor:
    """log P(item) from positives per item index (unseen count as 1)."""
    counts = np.asarray(counts, dtype="float64")
    return torch.from_numpy(np.log(np.maximum(counts, 1.0) / max(counts.sum(), 1.0))).float()


# --- the loop -------------------------------------------------------------------------------


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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(
    net: torch.nn.Module, job: Job, train: TrainConfig, epoch: int, d: Dist
) -> tuple[float, int, float]:
    """One pass over this rank's rows: (mean loss, rows trained on all ranks, seconds)."""
    if job.stream is not None:
        return stream_epoch(net, job, epoch, d)
    net.train()
    t0 = time.perf_counter()
    losses, rows = LossMeter(job.device), 0
    for idx_np in _batches(job.rows, train.batch_size, train.seed, epoch, d):
        idx = torch.from_numpy(idx_np).to(job.device)
        u = {k: v[idx] for k, v in job.users.items()}
        i = {k: v[idx] for k, v in job.items.items()}
        w = job.weight[idx] if job.weight is not None else None
        losses.add(train_step(net, job, u, i, w))
        rows += len(idx_np) * d.world_size
    return losses.mean(), rows, time.perf_counter() - t0


def stream_epoch(
    net: torch.nn.Module, job: Job, epoch: int, d: Dist, max_steps: int | None = None
) -> tuple[float, int, float]:
    """:func:`train_epoch` on the streaming path (at most ``max_steps`` steps: benchmarks)."""
    net.train()
    t0 = time.perf_counter()
    stream = job.stream
    stream.rank, stream.world_size = d.rank, d.world_size
    stream.set_epoch(epoch)
    cuda = job.device.type == "cuda"
    losses, rows = LossMeter(job.device), 0
    for step, batch in enumerate(loader(stream, job.loader_workers, pin_memory=cuda)):
        if max_steps is not None and step >= max_steps:
            break
        u = {k: v.to(job.device, non_blocking=cuda) for k, v in batch["user"].items()}
        i = {k: v.to(job.device, non_blocking=cuda) for k, v in batch["item"].items()}
        w = batch.get("weight")
        w = None if w is None else w.to(job.device, non_blocking=cuda)
        losses.add(train_step(net, job, u, i, w))
        rows += len(u["id"]) * d.world_size
    return losses.mean(), rows, time.perf_counter() - t0


def train_step(
    net: torch.nn.Module,
    job: Job,
    u: dict[str, torch.Tensor],
    i: dict[str, torch.Tensor],
    w: torch.Tensor | None,
) -> torch.Tensor:
    """One optimizer step on a batch; the detached loss (read once per epoch: no sync per step)."""
    with autocast(job.device):
        loss = net(u, i, job.log_q[i["id"]], job.catalog, w)
    job.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    job.optimizer.step()
    return loss.detach()


class LossMeter:
    """The epoch's mean batch loss, summed on the device (one sync for the whole epoch).

    A sum in one tensor, not a list of every step's loss: on CPU, 10k small long-lived tensors
    between each step's large temporaries fragment the heap (measured: +0.3 GB of RSS per 1000
    steps at 100k items)."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.steps = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach().double()
        self.steps += 1

    def mean(self) -> float:
        return float(self.total.cpu()) / self.steps if self.steps else float("nan")


def end_epoch(
    job: Job,
    ts: TrainingSet,
    cfg: TrainingConfig,
    progress: Progress,
    train_loss: float,
    run_key: str,
    use_mlflow: bool,
) -> None:
    """Rank 0 after an epoch: validate, keep the best weights, log, checkpoint, decide to stop."""
    entry = {"epoch": progress.epoch, "train_loss": train_loss}
    job.model.eval()
    val = validation_metrics(job.model, job.encoder, ts, cfg)  # under torch.no_grad()
    entry |= {f"val_{k}": v for k, v in val.items() if k != "users"}
    score = val.get("ndcg_at_10", -train_loss)
    if score > progress.best_metric:
        progress.best_metric, progress.bad_epochs = score, 0
        progress.best_state = {
            k: v.detach().cpu().clone() for k, v in job.model.state_dict().items()
        }
    else:
        progress.bad_epochs += 1
    progress.history.append(entry)
    log.info("epoch %d: %s", progress.epoch, json.dumps({k: round(v, 5) for k, v in entry.items()}))
    if use_mlflow:
        mlflow.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=progress.epoch)
    save_checkpoint(checkpoint_state(job, cfg, progress, run_key), run_key, log_artifact=use_mlflow)
    progress.stop = progress.bad_epochs >= cfg.train.patience


def agree_to_stop(stop: bool, device: torch.device, d: Dist) -> bool:
    """Rank 0 decides early stopping; every rank follows (DDP ranks must take the same steps)."""
    if not d.enabled:
        return stop
    flag = torch.tensor([float(stop)], device=device)  # NCCL broadcasts CUDA tensors only
    torch_dist.broadcast(flag, src=0)
    return bool(flag[0])


# --- checkpoints ----------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a run stands: saved in every checkpoint, restored by :func:`resume`."""

    epoch: int = 0
    best_metric: float = -1.0  # validation NDCG@10 of the best epoch (minus the loss without val)
    best_state: dict[str, torch.Tensor] | None = None  # the best epoch's weights, on the CPU
    bad_epochs: int = 0  # epochs since the best one (early stopping at train.patience)
    history: list[dict[str, float]] = field(default_factory=list)
    mlflow_run_id: str | None = None
    resumed_from: int = 0  # the epoch this process started after
    stop: bool = False  # early stopping decided (rank 0's decision, shared by every rank)


def checkpoint_state(
    job: Job, cfg: TrainingConfig, progress: Progress, run_key: str
) -> dict[str, Any]:
    """The checkpoint: model, optimizer, config, encoder, epoch, best metric and the rest.

    Only tensors and plain values (dict, list, str, int, float, bool, None), so
    :func:`load_checkpoint` reads it with ``weights_only=True``.
    """
    return {
        "model": job.model.state_dict(),
        "optimizer": job.optimizer.state_dict(),
        "config": plain(cfg.to_dict()),
        "encoder": plain(job.encoder.to_dict()),
        "epoch": int(progress.epoch),
        "best_metric": float(progress.best_metric),
        "best_state": progress.best_state,
        "bad_epochs": int(progress.bad_epochs),
        "history": plain(progress.history),
        "mlflow_run_id": progress.mlflow_run_id,
        "run_key": run_key,
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, loaded weights-only (:func:`training.pyfunc.load_blob`)."""
    return load_blob(path, "checkpoint")


def resume(
    job: Job, cfg: TrainingConfig, run_key: str, client: MlflowClient | None, d: Dist
) -> Progress:
    """Load the last checkpoint of ``run_key`` into the job; a fresh :class:`Progress` if none."""
    ckpt = find_checkpoint(run_key, client)
    if (
        d.enabled
    ):  # every rank resumes from the same checkpoint (rank 0 may have found it in MLflow)
        holder = [ckpt]
        torch_dist.broadcast_object_list(holder, src=0)
        ckpt = holder[0]
    if ckpt is None:
        return Progress()
    check_compatible(ckpt, cfg, job.encoder, run_key)
    job.model.load_state_dict(ckpt["model"])
    job.optimizer.load_state_dict(ckpt["optimizer"])
    progress = Progress(
        epoch=ckpt["epoch"],
        best_metric=ckpt["best_metric"],
        best_state=ckpt["best_state"],
        bad_epochs=ckpt["bad_epochs"],
        history=ckpt["history"],
        mlflow_run_id=ckpt.get("mlflow_run_id"),
        resumed_from=ckpt["epoch"],
        stop=ckpt["bad_epochs"] >= cfg.train.patience,
    )
    if d.main:
        log.info(
            "resumed %s from epoch %d (best val NDCG@10 %.4f)",
            run_key,
            progress.epoch,
            progress.best_metric,
        )
    return progress


def checkpoint_dir(run_key: str) -> Path:
    """``$FLYWHEEL_HOME/checkpoints/<run key>/`` (the key made safe for a folder name)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_key)
    return get_settings().home / "checkpoints" / safe


def find_checkpoint(run_key: str, client: MlflowClient | None = None) -> dict[str, Any] | None:
    """The last checkpoint of ``run_key``: local first, else the unfinished MLflow run's artifact."""
    local = checkpoint_dir(run_key) / CHECKPOINT
    if local.exists():
        return load_checkpoint(local)
    if client is None:
        return None
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
            return load_checkpoint(path)
    return None


def config_digest(cfg: TrainingConfig) -> str:
    """A short hash of the config (names a manual run's key)."""
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
    """Write ``state`` atomically under :func:`checkpoint_dir` (and to the MLflow run)."""
    folder = checkpoint_dir(run_key)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / CHECKPOINT)  # atomic: a kill never leaves half a checkpoint
    if log_artifact:
        mlflow.log_artifact(str(folder / CHECKPOINT), artifact_path="checkpoints")
    return folder / CHECKPOINT


# --- logging and the outcome ---------------------------------------------------------------


def run_tags(
    ts: TrainingSet, run_key: str, device: torch.device, d: Dist, extra: dict[str, str] | None
) -> dict[str, str]:
    """The MLflow run's lineage tags: data window, feature service, gate ids, code, trigger."""
    return {
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
        **(extra or {}),
    }


@contextlib.contextmanager
def mlflow_run(
    client: MlflowClient | None,
    cfg: TrainingConfig,
    ts: TrainingSet,
    progress: Progress,
    tags: dict[str, str],
    location: str,
) -> Iterator[str | None]:
    """The run's MLflow run (the checkpoint's when resuming); yields its id, or None without MLflow.

    A new run logs the config (flat ``group.key`` params), the data location and the set's meta;
    a resumed one is tagged ``resumed_from_epoch``.
    """
    if client is None:
        yield None
        return
    known = progress.mlflow_run_id
    with mlflow.start_run(
        run_id=known,
        experiment_id=None if known else experiment_id(client),
        run_name=None if known else run_name(ts, tags),
        tags=tags,
        log_system_metrics=True,
    ) as active:
        if progress.resumed_from == 0:
            mlflow.log_params(cfg.flat() | {"data.location": location})
            mlflow.log_dict(ts.meta, "training_set_meta.json")
            log_datasets(ts, location)
        else:
            mlflow.set_tag("resumed_from_epoch", str(progress.resumed_from))
        yield active.info.run_id


def run_name(ts: TrainingSet, tags: dict[str, str]) -> str:
    """``2026-01-01..2026-01-14 · drift on 2026-01-14 · 10:42:05Z``: the window, what started
    the run and when, so that several runs on one window can be told apart in the MLflow UI."""
    started = dt.datetime.now(dt.UTC).strftime("%H:%M:%SZ")
    window = f"{ts.meta['window_start']}..{ts.meta['window_end']}"
    return f"{window} · {describe_trigger(tags.get('trigger'))} · {started}"


def log_datasets(ts: TrainingSet, location: str) -> None:
    """The training rows and the holdout as MLflow datasets (the run's Inputs: name, digest,
    schema, where they lie). A dataset MLflow cannot describe is logged as a warning only."""
    end = ts.meta["window_end"]
    for frame, context in ((ts.train, "training"), (ts.holdout, "evaluation")):
        try:
            data = mlflow.data.from_pandas(frame, source=location, name=f"flywheel-{context}-{end}")
            mlflow.log_input(data, context=context)
        except Exception as exc:  # lineage metadata must not fail a training
            log.warning("could not log the %s set as an MLflow dataset: %s", context, exc)


def best_epoch(history: list[dict[str, float]]) -> int:
    """The epoch with the best validation NDCG@10 (the lowest loss without validation days)."""
    if not history:
        return 0
    return int(max(history, key=lambda h: h.get("val_ndcg_at_10", -h["train_loss"]))["epoch"])


def evaluate_and_log(
    job: Job,
    ts: TrainingSet,
    cfg: TrainingConfig,
    progress: Progress,
    result: TrainResult,
    use_mlflow: bool,
    refitted: bool = False,
) -> None:
    """Rank 0 at the end: the final model (the refit on train + validation, else the best
    epoch's weights) on the holdout, into ``result`` (and MLflow)."""
    if progress.best_state is not None and not refitted:
        job.model.load_state_dict(progress.best_state)
    job.model.eval()
    result.best_epoch = best_epoch(progress.history)
    job.model.known_histories = ts.histories(cfg.model.history_len, before="holdout")
    retriever = Retriever(job.model, job.encoder, ts.items, ts.users)
    metrics = holdout_metrics(retriever, ts, cfg)  # under torch.no_grad()
    metrics["interactions_per_s"] = result.interactions_per_s
    metrics["best_epoch"] = float(result.best_epoch)
    metrics["refit"] = float(refitted)
    metrics["personal_weight"] = float(job.model.personal_weight)
    for side, n in (ts.meta.get("rows_with_missing_features") or {}).items():
        metrics[f"training_rows_missing_{side}_features"] = float(n)
    if job.device.type == "cuda":
        metrics["gpu_max_memory_mib"] = torch.cuda.max_memory_allocated(job.device) / 2**20
    result.metrics = metrics
    log.info("holdout: %s", json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    if use_mlflow:
        result.model_uri = log_outcome(job, cfg, ts, retriever, progress.history, metrics)


def log_outcome(
    job: Job,
    cfg: TrainingConfig,
    ts: TrainingSet,
    retriever: Retriever,
    history: list[dict[str, float]],
    metrics: dict[str, float],
) -> str:
    """Holdout metrics, the training curve and the pyfunc model to the active run; its URI."""
    mlflow.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(curve_plot(history, Path(tmp) / "training_curve.png")))
        folder = save_artifacts(
            Path(tmp) / "recommender",
            job.model,
            job.encoder,
            cfg,
            retriever.item_ids,
            retriever.item_embeddings,
            ts.users,
            retriever.histories,
        )
        info = log_recommender(
            folder,
            sorted(ts.holdout["user_id"].unique())[:2],
            job.encoder.user.numeric,
            list(job.encoder.user.categorical),
        )
    return info.model_uri


def curve_plot(history: list[dict[str, float]], path: Path) -> Path:
    """Train loss and validation NDCG@10 per epoch, as a PNG at ``path``."""
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
