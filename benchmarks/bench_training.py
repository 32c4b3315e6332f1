"""Training benchmark: throughput and memory on CPU, quality against the oracle and implicit's ALS.

One simulated lake (validated partitions written directly, contract features), one training set
(temporal split), then in separate processes: the two-tower training (default config), implicit's
ALS on the same train split, and a baseline process that only loads the set (for the memory
overhead). All quality figures use the same holdout users, truth, exclusions and K
(:func:`training.evaluation.holdout_requests`, ``eval.ks``). ALS cannot score a user it never saw
in its train split; those users get the popularity baseline's list (the training positives'
popularity, same exclusions, :func:`training.evaluation.popularity_lists`), as a practitioner
would serve them -- scoring them 0 would flatter the model. The share of holdout users that fell
back is reported.

* mid-size (full): 21 days, 5 000 users, 1 000 items;  quick: 8 days, 300 users, 120 items.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, run_isolated

FULL = {"days": 21, "users": 5000, "items": 1000}
QUICK = {"days": 8, "users": 300, "items": 120}
ALS = {"factors": 64, "regularization": 0.05, "iterations": 15, "alpha": 2.0}
ALS_LABEL = "implicit ALS + popularity fallback"


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


def train_als(home: str, location: str, days: int) -> dict:
    """implicit's ALS on the train split, evaluated like the two-tower model."""
    _env(home)
    import numpy as np
    from implicit.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    from training.config import TrainingConfig
    from training.data import load_training_set
    from training.evaluation import holdout_requests, popularity_lists
    from training.metrics import evaluate, popularity_counts

    cfg = TrainingConfig.load(None, _overrides(days))
    ts = load_training_set(location)
    train = ts.split("train")
    users = {u: i for i, u in enumerate(sorted(train["user_id"].unique()))}
    items = {v: i for i, v in enumerate(sorted(train["item_id"].unique()))}
    rows = train["user_id"].map(users).to_numpy()
    cols = train["item_id"].map(items).to_numpy()
    mat = csr_matrix(
        (np.full(len(rows), ALS["alpha"], dtype=np.float32), (rows, cols)),
        shape=(len(users), len(items)),
    )
    mat.sum_duplicates()
    model = AlternatingLeastSquares(
        factors=ALS["factors"],
        regularization=ALS["regularization"],
        iterations=ALS["iterations"],
        random_state=11,
    )
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):
        model.fit(mat, show_progress=False)
    fit_s = time.perf_counter() - t0
    truth, exclude = holdout_requests(ts, cfg)
    inv = np.array(sorted(items, key=items.get), dtype=object)
    k = max(cfg.eval.ks)
    cold = [u for u in truth if u not in users]  # ALS has no factors for them: popularity
    recs = popularity_lists(ts, cold, k, exclude)
    for u in truth:
        if u in recs:
            continue
        scores = model.user_factors[users[u]] @ model.item_factors.T
        for item in exclude.get(u, ()):
            if item in items:
                scores[items[item]] = -np.inf
        top = np.argsort(-scores)[:k]
        recs[u] = [inv[j] for j in top if np.isfinite(scores[j])]
    pop = popularity_counts(ts.train["item_id"])  # novelty as in the model's holdout metrics
    m = evaluate(recs, truth, cfg.eval.ks, len(ts.items), pop)
    return {
        **m,
        "fallback_share": len(cold) / len(truth) if truth else 0.0,
        "fit_s": fit_s,
        "interactions_per_s": len(train) * ALS["iterations"] / fit_s,
    }


def run(quick: bool) -> list[Row]:
    sizes = QUICK if quick else FULL
    case = ("quick " if quick else "mid ") + f"{sizes['days']}d/{sizes['users']}u/{sizes['items']}i"
    with tempfile.TemporaryDirectory(prefix="bench-training-") as home:
        location, prep_s, _ = run_isolated(prepare, home, sizes)
        rows_loaded, _, base_mb = run_isolated(load_only, home, location)
        tt, tt_s, tt_mb = run_isolated(train_two_tower, home, location, sizes["days"])
        als, _, _ = run_isolated(train_als, home, location, sizes["days"])
    if als["users"] != tt["holdout_users"]:  # every baseline answers the same requests
        raise RuntimeError(f"ALS scored {als['users']} users, the model {tt['holdout_users']}")
    ndcg = tt["holdout_ndcg_at_10"]
    out = [
        Row(
            "training",
            case,
            "interactions/s (CPU, train steps)",
            tt["interactions_per_s"],
            "implicit ALS fit (interactions×iterations/s)",
            tt["interactions_per_s"] / als["interactions_per_s"],
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

    def ndcg_vs(name: str, base: float | None, least: float | None = None) -> Row:
        """NDCG@10 against a baseline model's on the same holdout (target: ratio ≥ ``least``)."""
        r = ndcg / base if base else None
        target = f"≥ {least}" if least is not None else ""
        ok = None if least is None else (r is None or r >= least)  # a zero baseline is beaten
        return Row("training", case, "NDCG@10", ndcg, f"{name} NDCG@10 {base:.4f}", r, target, ok)

    oracle = tt.get("oracle_ndcg_at_10")
    if oracle:
        out.append(ndcg_vs("oracle", oracle, 0.8))
    out.append(ndcg_vs(ALS_LABEL, als["ndcg_at_10"], 1.0))
    out.append(ndcg_vs("popularity", tt["popularity_ndcg_at_10"]))
    recall = tt["holdout_recall_at_20"]
    for name, base in (
        (ALS_LABEL, als["recall_at_20"]),
        ("popularity", tt["popularity_recall_at_20"]),
    ):
        out.append(
            Row(
                "training",
                case,
                "Recall@20",
                recall,
                f"{name} Recall@20 {base:.4f}",
                recall / base if base else None,
            )
        )
    out.append(
        Row(
            "training",
            case,
            "share of holdout users ALS falls back for",
            als["fallback_share"],
            f"{int(als['users'])} holdout users",
        )
    )
    del rows_loaded
    return out
