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
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, run_isolated

FULL = {"days": 21, "users": 5000, "items": 1000}
QUICK = {"days": 8, "users": 300, "items": 120}


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


def run(quick: bool) -> list[Row]:
    sizes = QUICK if quick else FULL
    case = ("quick " if quick else "mid ") + f"{sizes['days']}d/{sizes['users']}u/{sizes['items']}i"
    with tempfile.TemporaryDirectory(prefix="bench-training-") as home:
        location, prep_s, _ = run_isolated(prepare, home, sizes)
        rows_loaded, _, base_mb = run_isolated(load_only, home, location)
        tt, tt_s, tt_mb = run_isolated(train_two_tower, home, location, sizes["days"])
        base, _, _ = run_isolated(fit_baselines, home, location, sizes["days"])
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
    return out
