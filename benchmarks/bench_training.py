"""Training benchmark: throughput and memory on CPU, quality against the oracle and the baselines.

One simulated lake (validated partitions written directly, contract features), one training set
(temporal split), then in separate processes: the two-tower training (default config), the
baselines of :mod:`training.baselines` (popularity, recent popularity, implicit's ALS, BPR and
item-kNN, each with a popularity fallback for users it cannot score) on the same data, and a
baseline process that only loads the set (for the memory overhead). All quality figures use the
same holdout requests (:func:`training.evaluation.requests_for`: users, truth, exclusions, K).
The target is the strongest baseline; the share of holdout users the implicit models fell back
for is reported.

* mid-size (full): 21 days, 5 000 users, 1 000 items;  quick: 8 days, 300 users, 120 items.

Throughput of the streaming path (:mod:`training.stream`) against a bare PyTorch loop of the same
model over the same in-memory tensors (:func:`bare_loop`, the machine's limit), on a synthetic set
built in memory (:func:`synthetic_set`): 500k rows, 50k users, 2k items (quick: 20k rows),
default config, alternating rounds in one process (:func:`stream_throughput`). Target (issue 17):
≥ 100k interactions/s, ≥ 0.7× the bare loop.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, run_isolated

FULL = {"days": 21, "users": 5000, "items": 1000}
QUICK = {"days": 8, "users": 300, "items": 120}
#: stream_throughput(rows, users, items, steps per round): full, quick
THROUGHPUT = {False: (500_000, 50_000, 2_000, 30), True: (20_000, 2_000, 200, 10)}


def _env(home: str) -> None:
    import os

    os.environ["FLYWHEEL_HOME"] = home
    os.environ.setdefault("FLYWHEEL_PSEUDONYM_KEY", "benchmark-key")
    os.environ.pop("FLYWHEEL_LAKE_URI", None)


def _overrides(days: int) -> list[str]:
    return ["data.feature_source=contract", f"data.window_days={days}"]


def prepare(home: str, sizes: dict) -> str:
    """Simulate, write validated partitions, build the training set; returns its folder."""
    _env(home)
    from core.lake import get_lake
    from tests.fixtures.lake import write_simulated
    from training.config import TrainingConfig
    from training.data import build_training_set

    lake = get_lake()
    end = write_simulated(
        lake, days=sizes["days"], users=sizes["users"], items=sizes["items"], seed=11
    )
    cfg = TrainingConfig.load(None, _overrides(sizes["days"]))
    return build_training_set(lake, end, cfg.data, Path(home) / "set")["location"]


def load_only(home: str, location: str) -> int:
    """Baseline process: imports and the loaded set, no model."""
    _env(home)
    import torch  # noqa: F401  (same imports as training)

    from training.data import load_training_set

    return len(load_training_set(location).train)


def train_two_tower(home: str, location: str, days: int) -> dict:
    _env(home)
    from training.config import TrainingConfig
    from training.train import run_training

    cfg = TrainingConfig.load(None, _overrides(days))
    t0 = time.perf_counter()
    r = run_training(cfg, location, run_key="bench", log_mlflow=False)
    return {**r.metrics, "epochs_run": r.epochs_run, "wall_s": time.perf_counter() - t0}


def fit_baselines(home: str, location: str, days: int) -> dict:
    """Every baseline of training/baselines.py on the same requests as the model, each scored like
    it (:func:`training.evaluation.baseline_metrics`); the ALS fit's throughput."""
    _env(home)
    from training.baselines import ALS
    from training.config import TrainingConfig
    from training.data import load_training_set
    from training.evaluation import baseline_metrics, baseline_models, requests_for

    cfg = TrainingConfig.load(None, _overrides(days))
    ts = load_training_set(location)
    reqs = requests_for(ts, cfg)
    fitted = baseline_models(ts, cfg)
    metrics, _ = baseline_metrics(ts, cfg, reqs, fitted)
    als = fitted["als"]
    return {
        "metrics": metrics,
        "users": len(reqs.users),
        "fallback_share": sum(u not in als.users for u in reqs.users) / max(1, len(reqs.users)),
        "als_interactions_per_s": als.matrix.nnz * ALS["iterations"] / als.fit_s,
    }


# --- throughput: the streaming path against a bare PyTorch loop ------------------------------


def synthetic_set(rows: int, users: int, items: int, seed: int = 0, days: int = 14):
    """A :class:`training.data.TrainingSet` of ``rows`` train rows (contract features, long-tailed
    item popularity, one day of validation), built in memory in seconds: throughput only."""
    import numpy as np
    import pandas as pd

    from training.data import CONTRACT_COLUMNS, TrainingSet

    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    pop = 1.0 / np.arange(1, items + 1) ** 0.9
    item = rng.choice(items, size=rows, p=pop / pop.sum())
    user = rng.integers(0, users, rows)
    ts = start + pd.to_timedelta(np.sort(rng.integers(0, days * 86_400, rows)), unit="s")
    uid = np.array([f"u{i}" for i in range(users)], dtype=object)
    iid = np.array([f"i{i}" for i in range(items)], dtype=object)
    cats = np.array(["a", "b|c", "d", "e|f|g"], dtype=object)
    countries = np.array(["DE", "FR", "US", "BR", "JP"], dtype=object)
    ages = np.array(["18-24", "25-34", "35-44", "45+"], dtype=object)
    train = pd.DataFrame(
        {
            "user_id": uid[user],
            "item_id": iid[item],
            "event_timestamp": ts,
            "split": np.where(ts >= start + pd.Timedelta(days=days - 1), "val", "train"),
            "user_features_missing": 0.0,
            "user_country": countries[user % 5],
            "user_age_bucket": ages[user % 4],
            "item_price": (item % 97).astype("float64") + 0.5,
            "item_features_missing": 0.0,
            "item_category": cats[item % 4],
        }
    )
    users_f = pd.DataFrame(
        {
            "user_id": uid,
            "user_features_missing": 0.0,
            "user_country": countries[np.arange(users) % 5],
        }
    )
    users_f["user_age_bucket"] = ages[np.arange(users) % 4]
    items_f = pd.DataFrame({"item_id": iid, "item_price": np.arange(items) % 97 + 0.5})
    items_f["item_features_missing"] = 0.0
    items_f["item_category"] = cats[np.arange(items) % 4]
    end = (start + pd.Timedelta(days=days)).date()
    meta = {
        "feature_columns": CONTRACT_COLUMNS.to_dict(),
        "window_start": str(start.date()),
        "window_end": str(end),
        "holdout_start": str(end),
        "val_start": str(end - pd.Timedelta(days=1)),
        "feature_service": "contract",
        "synthetic": [rows, users, items, seed],
    }
    holdout = train.iloc[:0][["user_id", "item_id", "event_timestamp"]]
    return TrainingSet(train=train, holdout=holdout, users=users_f, items=items_f, meta=meta)


def bare_loop(job, batch_size: int, steps: int, seed: int = 0) -> float:
    """Interactions/s of a plain PyTorch loop over ``job``'s in-memory tensors (the machine's limit
    for this model): random batches, ``loss.backward(); opt.step()``, nothing else."""
    import torch

    n = len(job.users["id"])
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    model, opt = job.model.train(), job.optimizer
    t0, done = time.perf_counter(), 0
    for s in range(steps):
        idx = order[(s * batch_size) % (n - batch_size + 1) :][:batch_size]
        u = {k: v[idx] for k, v in job.users.items()}
        i = {k: v[idx] for k, v in job.items.items()}
        w = job.weight[idx] if job.weight is not None else None
        loss = model(u, i, job.log_q[i["id"]], job.catalog, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += len(idx)
    return done / (time.perf_counter() - t0)


def stream_steps(job, batches, steps: int) -> float:
    """Interactions/s of ``steps`` steps of the streaming path: batches from ``batches`` (an
    iterator over a :class:`training.stream.ShardStream` loader), :func:`training.train.train_step`
    as in :func:`training.train.stream_epoch`."""
    from training.train import train_step

    job.model.train()
    t0, done = time.perf_counter(), 0
    for _ in range(steps):
        batch = next(batches)
        w = batch.get("weight")
        train_step(job.model, job, batch["user"], batch["item"], w)
        done += len(batch["user"]["id"])
    return done / (time.perf_counter() - t0)


def stream_throughput(
    home: str,
    rows: int,
    users: int,
    items: int,
    steps: int,
    overrides: list[str],
    rounds: int = 5,
    workers: int = 0,
) -> dict:
    """The bare loop and the streaming path on the same set and model config, in one process,
    in ``rounds`` alternating rounds of ``steps`` steps (the machine is shared: each round's
    ratio compares neighbours in time; the median is reported). Also the stream alone (batches
    read, no training: its rows/s) and the time to encode the shards, and to find them cached."""
    _env(home)
    import itertools
    import statistics

    import torch

    from training.config import TrainingConfig
    from training.stream import loader
    from training.train import build_job, build_stream_job, seed_everything

    cfg = TrainingConfig.load(None, overrides)
    torch.set_num_threads(cfg.train.num_threads or torch.get_num_threads())
    ts = synthetic_set(rows, users, items)
    device = torch.device("cpu")
    t0 = time.perf_counter()
    seed_everything(cfg.train.seed)
    job = build_job(cfg, ts, device)  # in memory (rows < train.stream_min_rows)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    seed_everything(cfg.train.seed)
    sjob = build_stream_job(cfg, ts, device)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_stream_job(cfg, ts, device)  # the cache: nothing encoded again
    cached_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data_rows = sum(len(b["user"]["id"]) for b in loader(sjob.stream, workers))
    data_rate = data_rows / (time.perf_counter() - t0)

    def epochs():
        for epoch in itertools.count(1):
            sjob.stream.set_epoch(epoch)
            yield from loader(sjob.stream, workers)

    batches = epochs()
    bare_loop(job, cfg.train.batch_size, 3)  # warm-up
    stream_steps(sjob, batches, 3)
    bare, streamed = [], []
    for r in range(rounds):
        bare.append(bare_loop(job, cfg.train.batch_size, steps, seed=r))
        streamed.append(stream_steps(sjob, batches, steps))
    return {
        "bare": statistics.median(bare),
        "stream": statistics.median(streamed),
        "ratio": statistics.median(s / b for s, b in zip(streamed, bare, strict=True)),
        "stream_data_rows_per_s": data_rate,
        "build_s": build_s,
        "encode_s": encode_s,
        "cached_s": cached_s,
        "rows": sjob.rows,
    }


def run(quick: bool) -> list[Row]:
    sizes = QUICK if quick else FULL
    case = ("quick " if quick else "mid ") + f"{sizes['days']}d/{sizes['users']}u/{sizes['items']}i"
    with tempfile.TemporaryDirectory(prefix="bench-training-") as home:
        location, prep_s, _ = run_isolated(prepare, home, sizes)
        rows_loaded, _, base_mb = run_isolated(load_only, home, location)
        tt, tt_s, tt_mb = run_isolated(train_two_tower, home, location, sizes["days"])
        base, _, _ = run_isolated(fit_baselines, home, location, sizes["days"])
        tp, _, tp_mb = run_isolated(stream_throughput, home, *THROUGHPUT[quick], [])
    if base["users"] != tt["holdout_users"]:  # every baseline answers the same requests
        raise RuntimeError(
            f"baselines scored {base['users']} users, the model {tt['holdout_users']}"
        )
    metrics = base["metrics"]
    best = max(metrics, key=lambda n: metrics[n]["ndcg_at_10"])
    ndcg = tt["holdout_ndcg_at_10"]
    out = [
        Row(
            "training",
            case,
            "interactions/s (CPU, train steps)",
            tt["interactions_per_s"],
            "implicit ALS fit (interactions×iterations/s)",
            tt["interactions_per_s"] / base["als_interactions_per_s"],
        ),
        Row(
            "training",
            case,
            "peak RSS MiB (training process)",
            tt_mb,
            "process that only loads the set",
            tt_mb / base_mb,
        ),
        Row(
            "training",
            case,
            "wall s (train + eval, no MLflow)",
            tt_s,
            "data preparation",
            tt_s / prep_s,
        ),
    ]

    def vs(metric: str, value: float, name: str, least: float | None = None) -> Row:
        """``metric`` against a baseline's on the same holdout (target: ratio ≥ ``least``)."""
        key = metric.lower().replace("@", "_at_")
        base_v = oracle if name == "oracle" else metrics[name][key]
        r = value / base_v if base_v else None
        label = name if name == "oracle" else f"{name}{' (strongest)' if name == best else ''}"
        ok = None if least is None else (r is None or r >= least)  # a zero baseline is beaten
        target = f"≥ {least}" if least is not None else ""
        return Row("training", case, metric, value, f"{label} {base_v:.4f}", r, target, ok)

    oracle = tt.get("oracle_ndcg_at_10")
    if oracle:
        out.append(vs("NDCG@10", ndcg, "oracle", 0.8))
    for name in metrics:
        out.append(vs("NDCG@10", ndcg, name, 1.0 if name == best else None))
    for name in metrics:
        out.append(vs("Recall@20", tt["holdout_recall_at_20"], name))
    out.append(
        Row(
            "training",
            case,
            "share of holdout users ALS/BPR/kNN fall back for",
            base["fallback_share"],
            f"{base['users']} holdout users",
        )
    )
    del rows_loaded
    return out + throughput_rows(tp, tp_mb, THROUGHPUT[quick][0])


def throughput_rows(tp: dict, peak_mb: float, rows: int) -> list[Row]:
    """The streaming path's interactions/s and its ratio to the bare loop (issue 17's targets)."""
    case = f"stream {rows:,} rows (default model)"
    bare = "bare PyTorch loop, same model + tensors"
    return [
        Row(
            "training",
            case,
            "interactions/s (CPU, streaming)",
            tp["stream"],
            "",
            None,
            "≥ 100k",
            tp["stream"] >= 100_000,
        ),
        Row(
            "training",
            case,
            "streaming / bare loop",
            tp["ratio"],
            bare,
            tp["ratio"],
            "≥ 0.7",
            tp["ratio"] >= 0.7,
        ),
        Row("training", case, "interactions/s (bare loop: the machine's limit)", tp["bare"]),
        Row(
            "training",
            case,
            "rows/s of the stream alone (no training)",
            tp["stream_data_rows_per_s"],
        ),
        Row(
            "training",
            case,
            "s to encode the shards once",
            tp["encode_s"],
            "cached (found again)",
            tp["encode_s"] / max(tp["cached_s"], 1e-9),
        ),
        Row("training", case, "peak RSS MiB (both paths, one process)", peak_mb),
    ]
