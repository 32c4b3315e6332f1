"""Scoring on the temporal split: validation during training, the holdout after it.

Every model is judged on the same requests: the holdout users (capped to
``data.max_eval_users``, a seeded sample) with the items they had before the holdout excluded
(:func:`holdout_requests`). The trained model (:func:`holdout_metrics`), a loaded pyfunc --
the candidate or the champion -- (:func:`evaluate_model`, :func:`evaluate_champion`), the
popularity baseline (:func:`popularity_metrics`, its lists :func:`popularity_lists`) and, on
simulated data, the simulator's ground truth ranking (:func:`oracle_metrics`) all answer them.
The metrics are in :mod:`training.metrics`.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from core.lake import SIM, get_lake
from core.names import CHAMPION
from core.privacy import pseudonymise_many
from simulation.simulator import load_truth
from training.config import TrainingConfig
from training.data import TrainingSet
from training.metrics import (
    evaluate,
    oracle_recommendations,
    popularity_counts,
    popularity_recommendations,
)
from training.model import FeatureEncoder, Retriever, TwoTower
from training.registry import current_champion, load_recommender, model_name

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

#: Lake folder of the simulator's ground truth (present only on simulated data).


def holdout_requests(
    ts: TrainingSet, cfg: TrainingConfig
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(truth, exclusions) for the holdout users, capped to ``data.max_eval_users`` (seeded)."""
    truth = ts.truth(cfg.eval.exclude_seen)
    users = sorted(truth)
    if len(users) > cfg.data.max_eval_users:
        users = sorted(random.Random(cfg.train.seed).sample(users, cfg.data.max_eval_users))
        truth = {u: truth[u] for u in users}
    exclude = {}
    if cfg.eval.exclude_seen:
        seen = ts.seen()
        exclude = {u: seen[u] for u in users if u in seen}
    return truth, exclude


def recommend_all(
    retriever: Retriever, users: list[str], k: int, exclude: dict[str, set[str]]
) -> dict[str, list[str]]:
    """Top-``k`` item ids for every user, without the user's ``exclude`` items."""
    ids, _ = retriever.recommend(users, k, [sorted(exclude.get(u, ())) for u in users])
    return dict(zip(users, ids, strict=True))


# --- during training ------------------------------------------------------------------------


@torch.no_grad()
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


# --- on the holdout -------------------------------------------------------------------------


@torch.no_grad()
def holdout_metrics(retriever: Retriever, ts: TrainingSet, cfg: TrainingConfig) -> dict[str, float]:
    """Model, popularity and (on simulated data) oracle metrics on the holdout, prefixed."""
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


def _popularity(ts: TrainingSet, split: str) -> Counter:
    """Counts of the training positives: ``"all"`` = every split before the holdout."""
    source = ts.train if split == "all" else ts.split(split)
    return popularity_counts(source["item_id"])


def popularity_lists(
    ts: TrainingSet,
    users: Iterable[str],
    k: int,
    exclude: Mapping[str, set[str]],
    split: str = "all",
) -> dict[str, list[str]]:
    """The popularity baseline's top-``k`` list for each of ``users``.

    Catalog items ranked by their count among the training positives (``split="all"``: train +
    validation; ties by item id), without each user's ``exclude`` items. :func:`popularity_metrics`
    scores these lists; other baselines use them for the users they cannot score (the training
    benchmark's implicit ALS for users it never saw).
    """
    pop = _popularity(ts, split)
    return popularity_recommendations(pop, users, k, exclude, set(ts.items["item_id"]))


def popularity_metrics(
    ts: TrainingSet, cfg: TrainingConfig, split: str = "all"
) -> dict[str, float]:
    """The popularity baseline on the holdout (popularity of the training positives)."""
    truth, exclude = holdout_requests(ts, cfg)
    recs = popularity_lists(ts, truth, max(cfg.eval.ks), exclude, split)
    pop = _popularity(ts, split)
    return evaluate(recs, truth, cfg.eval.ks, catalog_size=len(ts.items), popularity=pop)


def oracle_metrics(
    ts: TrainingSet,
    cfg: TrainingConfig,
    truth: dict[str, set[str]],
    exclude: dict[str, set[str]],
) -> dict[str, float] | None:
    """Holdout metrics of the simulator's ground truth ranking, when the lake holds ``sim/``."""
    lake = get_lake()
    if not lake.list(f"{SIM}/"):
        return None
    gt = load_truth(lake)
    raw_users = list(gt.user_pos)
    to_raw = dict(zip(pseudonymise_many(raw_users), raw_users, strict=True))
    users = [u for u in truth if u in to_raw]
    if not users:
        return None
    catalog = ts.items["item_id"].astype(str).tolist()
    holdout_start = dt.date.fromisoformat(ts.meta["holdout_start"])

    def relevance(chunk: list[str], items: list[str]) -> np.ndarray:
        return gt.relevance([to_raw[u] for u in chunk], items, holdout_start)

    recs = oracle_recommendations(relevance, users, catalog, max(cfg.eval.ks), exclude)
    return evaluate(recs, {u: truth[u] for u in users}, cfg.eval.ks)


# --- loaded models (candidate and champion) -------------------------------------------------


def evaluate_model(model: PyFuncModel, ts: TrainingSet, cfg: TrainingConfig) -> dict[str, float]:
    """Holdout metrics of a loaded pyfunc (candidate or champion), same users and exclusions."""
    truth, exclude = holdout_requests(ts, cfg)
    users = list(truth)
    k = max(cfg.eval.ks)
    frame = pd.DataFrame({"user_id": users, "k": [k] * len(users)})
    if exclude:
        frame["exclude_item_ids"] = [sorted(exclude.get(u, ())) for u in users]
    out = model.predict(frame)
    recs = dict(zip(out["user_id"], out["item_ids"], strict=True))
    pop = popularity_counts(ts.train["item_id"])  # as in training's holdout metrics (novelty)
    return evaluate(recs, truth, cfg.eval.ks, catalog_size=len(ts.items), popularity=pop)


def evaluate_champion(
    client: MlflowClient, ts: TrainingSet, cfg: TrainingConfig
) -> tuple[dict[str, float] | None, str | None, str]:
    """(metrics, version, note): ``metrics`` is None when there is no usable champion."""
    name = model_name()
    mv = current_champion(client, name)
    if mv is None:
        return None, None, "no champion yet"
    try:
        model = load_recommender(f"models:/{name}@{CHAMPION}")
        return evaluate_model(model, ts, cfg), mv.version, f"champion v{mv.version}"
    except Exception as exc:  # a missing/corrupt artifact must not block the pipeline
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("champion v%s cannot be loaded: %s", mv.version, msg)
        return (
            None,
            mv.version,
            f"champion v{mv.version} cannot be loaded ({type(exc).__name__}: {msg}), candidate judged against popularity",
        )
