"""Scoring on the temporal split: validation during training, the holdout after it.

**The protocol.** Every model answers the same requests (:func:`requests_for`): the holdout users
with at least one positive not excluded (capped to ``data.max_eval_users``, a seeded sample), each
with the items they may not be recommended (``eval.exclude``: ``"all"`` -- default -- every item
they interacted with before the holdout in the window, any event type, so a film rated 2 stars
does not take a top-10 slot; ``"positives"``; ``"none"``). The truth is the user's holdout
positives minus those exclusions. Users are **warm** when they have a positive before the
holdout (a training row) and **cold** otherwise (new users, users with only views or low
ratings). Every metric is reported for all, warm and cold users, NDCG and Recall with a 95 %
bootstrap interval over users (``eval.bootstrap`` resamples, seeded): real holdouts hold
70-150 users, and a difference inside the interval is noise.

The trained model (:func:`holdout_metrics`), a loaded pyfunc -- the candidate, or the champion
through :func:`training.pipeline.champion_metrics` -- (:func:`evaluate_model`), the baselines of
:mod:`training.baselines` (:func:`baseline_metrics`) and, on simulated data, the simulator's
ground truth ranking (:func:`oracle_metrics`) all answer them. The metrics are in :mod:`training.metrics`.

**Rolling-origin validation** (:func:`rolling_origin_sets`): a real validation split holds a few
dozen users (ml-latest-small: 37), too few to choose a setting on. The same split moved back in
time -- several earlier "holdouts" of the same shape, each strictly before the real one, with
its own validation days before it -- pools a few hundred users without touching the holdout.
Settings are chosen there (``python -m benchmarks --only realdata --folds N`` reports the model
and every baseline on them), and only then scored on the holdout.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from core.contract import EVENTS
from core.lake import SIM, get_lake
from core.privacy import pseudonymise_many
from simulation.simulator import load_truth
from training.baselines import Implicit, Popularity, fit_baselines, recent_popularity
from training.config import TrainingConfig
from training.data import TrainingSet, item_sets
from training.metrics import (
    METRICS,
    bootstrap_ci,
    evaluate,
    ideal_dcg,
    oracle_recommendations,
    popularity_counts,
)
from training.model import FeatureEncoder, Retriever, TwoTower

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel

log = logging.getLogger(__name__)

GROUPS = ("all", "warm", "cold")
INTERVAL_METRICS = ("ndcg", "recall")  # with a bootstrap interval, at every K of eval.ks


@dataclass
class Requests:
    """The holdout requests every model answers (see the module docstring)."""

    truth: dict[str, set[str]]  # user -> holdout positives not excluded
    exclude: dict[str, set[str]]  # user -> items not to recommend
    warm: frozenset[str]  # users with a positive before the holdout
    ks: tuple[int, ...]

    @property
    def users(self) -> list[str]:
        return list(self.truth)

    @property
    def k(self) -> int:
        return max(self.ks)

    def group(self, name: str) -> list[str]:
        if name == "warm":
            return [u for u in self.truth if u in self.warm]
        if name == "cold":
            return [u for u in self.truth if u not in self.warm]
        return self.users


def exclude_mode(cfg: TrainingConfig) -> str:
    """``eval.exclude``, or ``"none"`` when the older switch ``eval.exclude_seen`` is off."""
    return cfg.eval.exclude if cfg.eval.exclude_seen else "none"


def interactions_before(ts: TrainingSet, users: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Every item each user (``users`` only, when given) interacted with before the holdout, any
    event type: the set's ``interacted`` pairs, else the window's validated events read from the
    lake (a set written before it kept them, or a rolling-origin copy); plus the positives."""
    if ts.interacted is not None:
        return ts.interacted_before(users)
    seen = ts.seen(users)
    cutoff = dt.date.fromisoformat(ts.meta["holdout_start"])
    days = [dt.date.fromisoformat(d) for d in ts.meta.get("days", [])]
    days = [d for d in days if d < cutoff]
    table = get_lake().read(EVENTS.name, days, columns=["user_id", "item_id"]) if days else None
    if table is None or table.num_rows == 0:
        if days:
            log.warning("no validated events for the window's days: excluding positives only")
        return seen
    frame = table.to_pandas()
    frame["user_id"] = frame["user_id"].astype(str)
    if users is not None:
        frame = frame[frame["user_id"].isin(pd.Index(list(users), dtype=object))]
    for u, items in frame.groupby("user_id")["item_id"]:
        seen.setdefault(u, set()).update(items.astype(str))
    return seen


def requests_for(ts: TrainingSet, cfg: TrainingConfig) -> Requests:
    """The holdout requests (capped to ``data.max_eval_users``, seeded)."""
    mode = exclude_mode(cfg)
    truth = ts.truth(exclude_seen=False)
    if mode == "none":
        exclude: dict[str, set[str]] = {}
    else:
        seen = interactions_before(ts, truth) if mode == "all" else ts.seen(truth)
        exclude = {u: seen[u] for u in truth if u in seen}
    truth = {u: s - exclude.get(u, set()) for u, s in truth.items()}
    users = sample_users(sorted(u for u, s in truth.items() if s), cfg, "holdout")
    known = ts.train["user_id"]
    warm = frozenset(known[known.isin(pd.Index(users, dtype=object))].astype(str))
    return Requests(
        {u: truth[u] for u in users},
        {u: exclude[u] for u in users if u in exclude},
        warm,
        tuple(cfg.eval.ks),
    )


def sample_users(users: list[str], cfg: TrainingConfig, what: str) -> list[str]:
    """``users`` (sorted), or a seeded sample of ``data.max_eval_users`` of them when there are
    more (the same users for every model scored with this seed); the sample's size is logged."""
    cap = cfg.data.max_eval_users
    if len(users) <= cap:
        return users
    log.info("%s evaluation: a seeded sample of %d of %d users", what, cap, len(users))
    return sorted(random.Random(cfg.train.seed).sample(users, cap))


def holdout_requests(
    ts: TrainingSet, cfg: TrainingConfig
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(truth, exclusions) of :func:`requests_for`."""
    reqs = requests_for(ts, cfg)
    return reqs.truth, reqs.exclude


def score(
    recs: Mapping[str, Sequence[str]],
    reqs: Requests,
    n_boot: int = 1000,
    seed: int = 0,
    catalog_size: int | None = None,
    popularity: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """:func:`~training.metrics.evaluate` of ``recs`` on ``reqs`` for all users, plus per group
    (``ndcg_at_10_warm``, ``users_cold`` …) and 95 % intervals (``ndcg_at_10_lo``/``_hi``,
    ``recall_at_20_cold_lo`` …) of NDCG and Recall."""
    out = evaluate(recs, reqs.truth, reqs.ks, catalog_size, popularity)
    for group in GROUPS:
        users = reqs.group(group)
        suffix = "" if group == "all" else f"_{group}"
        if group != "all":
            out[f"users{suffix}"] = float(len(users))
        for name, fn in METRICS.items():
            for k in reqs.ks:
                vals = np.array([fn(recs.get(u, ()), reqs.truth[u], k) for u in users])
                key = f"{name}_at_{k}{suffix}"
                out[key] = float(vals.mean()) if len(vals) else 0.0
                if name in INTERVAL_METRICS:
                    out[f"{key}_lo"], out[f"{key}_hi"] = bootstrap_ci(vals, n_boot, seed)
    return out


def per_user(
    recs: Mapping[str, Sequence[str]], reqs: Requests, metric: str = "ndcg", k: int = 10
) -> np.ndarray:
    """One metric per request user, in ``reqs.users`` order (for paired comparisons)."""
    fn = METRICS[metric]
    return np.array([fn(recs.get(u, ()), reqs.truth[u], k) for u in reqs.users])


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
    train = ts.train[ts.train["split"] == "train"]  # no copy of the keys: a view is enough
    seen = item_sets([train], truth) if exclude_mode(cfg) != "none" else {}
    truth = {u: s - seen.get(u, set()) for u, s in truth.items()}
    truth = {u: s for u, s in truth.items() if s}
    users = sample_users(sorted(truth), cfg, "validation")
    truth = {u: truth[u] for u in users}
    retriever = Retriever(model, encoder, ts.items, ts.users)
    return evaluate(recommend_all(retriever, users, max(cfg.eval.ks), seen), truth, cfg.eval.ks)


# --- on the holdout -------------------------------------------------------------------------


@torch.no_grad()
def holdout_metrics(retriever: Retriever, ts: TrainingSet, cfg: TrainingConfig) -> dict[str, float]:
    """Model, popularity and (on simulated data) oracle metrics on the holdout, prefixed."""
    reqs = requests_for(ts, cfg)
    model_m = score_lists(recommend_all(retriever, reqs.users, reqs.k, reqs.exclude), reqs, ts, cfg)
    out = {f"holdout_{k}": v for k, v in model_m.items()}
    out |= {f"popularity_{k}": v for k, v in popularity_metrics(ts, cfg, reqs).items()}
    out.pop("popularity_users", None)
    oracle = oracle_metrics(ts, cfg, reqs.truth, reqs.exclude)
    if oracle:
        out |= {f"oracle_{k}": v for k, v in oracle.items() if k != "users"}
        if oracle.get("ndcg_at_10"):
            out["ndcg_to_oracle_ratio"] = model_m["ndcg_at_10"] / oracle["ndcg_at_10"]
    return out


def score_lists(
    recs: Mapping[str, Sequence[str]], reqs: Requests, ts: TrainingSet, cfg: TrainingConfig
) -> dict[str, float]:
    """:func:`score` with the config's resamples and seed; novelty from the training positives."""
    pop = popularity_counts(ts.train["item_id"])
    return score(recs, reqs, cfg.eval.bootstrap, cfg.train.seed, len(ts.items), pop)


def cutoff_of(ts: TrainingSet) -> pd.Timestamp:
    """The first instant of the holdout (00:00 UTC of its first day)."""
    day = dt.date.fromisoformat(ts.meta["holdout_start"])
    return pd.Timestamp(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))


def popularity_metrics(
    ts: TrainingSet, cfg: TrainingConfig, reqs: Requests | None = None
) -> dict[str, float]:
    """The all-time popularity baseline on the holdout (counts of the positives before it)."""
    reqs = reqs or requests_for(ts, cfg)
    pop = fit_baselines(ts.train, ts.items["item_id"], cutoff_of(ts), names=("popularity",))
    return score_lists(pop["popularity"].recommend(reqs.users, reqs.k, reqs.exclude), reqs, ts, cfg)


def pick_recent_days(ts: TrainingSet, cfg: TrainingConfig) -> int:
    """The ``eval.recent_days`` window whose recent popularity scores best on the validation
    split (trained on the train split); 30 days (else the first) without validation rows."""
    choices = list(cfg.eval.recent_days)
    default = 30 if 30 in choices else choices[0]
    val, train = ts.split("val"), ts.split("train")
    if len(choices) == 1 or val.empty or train.empty:
        return default
    seen = train.groupby("user_id")["item_id"].agg(set).to_dict()
    truth = {
        u: s - seen.get(u, set()) for u, s in val.groupby("user_id")["item_id"].agg(set).items()
    }
    truth = {u: s for u, s in truth.items() if s}
    val_cut = pd.Timestamp(
        dt.datetime.combine(dt.date.fromisoformat(ts.meta["val_start"]), dt.time(), tzinfo=dt.UTC)
    )
    catalog = ts.items["item_id"].astype(str).tolist()
    best, best_ndcg = default, -1.0
    for days in sorted(choices):
        recs = recent_popularity(train, val_cut, days, catalog).recommend(truth, 10, seen)
        ndcg = evaluate(recs, truth, (10,))["ndcg_at_10"]
        if ndcg > best_ndcg + 1e-12:
            best, best_ndcg = days, ndcg
    return best


def baseline_models(ts: TrainingSet, cfg: TrainingConfig) -> dict[str, Popularity | Implicit]:
    """Each baseline of ``eval.baselines`` fitted on the positives before the holdout (recent
    popularity over the :func:`pick_recent_days` window)."""
    days = pick_recent_days(ts, cfg) if "recent_popularity" in cfg.eval.baselines else 30
    fitted = fit_baselines(
        ts.train, ts.items["item_id"], cutoff_of(ts), days, cfg.train.seed, cfg.eval.baselines
    )
    log.info("baselines fitted (recent popularity over %d days)", days)
    return fitted


def baseline_metrics(
    ts: TrainingSet,
    cfg: TrainingConfig,
    reqs: Requests | None = None,
    fitted: Mapping[str, Popularity | Implicit] | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[str]]]]:
    """(metrics, lists) of every baseline on the holdout requests: ``{name: …}``."""
    reqs = reqs or requests_for(ts, cfg)
    fitted = fitted or baseline_models(ts, cfg)
    lists = {name: b.recommend(reqs.users, reqs.k, reqs.exclude) for name, b in fitted.items()}
    metrics = {name: score_lists(recs, reqs, ts, cfg) for name, recs in lists.items()}
    for name, b in fitted.items():
        if getattr(b, "days", None):  # recent popularity: the window picked on validation
            metrics[name]["window_days"] = float(b.days)
    return metrics, lists


def strongest(metrics: Mapping[str, Mapping[str, float]], key: str = "ndcg_at_10") -> str:
    """The baseline with the highest ``key`` (the first listed on a tie)."""
    return max(metrics, key=lambda name: metrics[name][key])


def paired_difference(
    a: Mapping[str, Sequence[str]],
    b: Mapping[str, Sequence[str]],
    reqs: Requests,
    cfg: TrainingConfig,
    metric: str = "ndcg",
    k: int = 10,
) -> dict[str, float]:
    """Mean per-user ``metric@k`` of ``a`` minus ``b`` with its paired bootstrap 95 % interval."""
    diff = per_user(a, reqs, metric, k) - per_user(b, reqs, metric, k)
    lo, hi = bootstrap_ci(diff, cfg.eval.bootstrap, cfg.train.seed)
    key = f"{metric}_at_{k}_diff"
    return {key: float(diff.mean()) if len(diff) else 0.0, f"{key}_lo": lo, f"{key}_hi": hi}


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


def hindsight_list_metrics(reqs: Requests, group: str = "cold", k: int = 10) -> dict[str, object]:
    """NDCG@``k`` for ``group`` of the one list (the same for every user) that scores most there,
    built from those users' holdout answers: a ceiling for anything non-personal, not a method.

    A user without a history can only get a non-personal list, so this bounds what any model
    scores on cold users. Placing item ``i`` at position ``p`` adds ``d(p) · Σ 1/IDCG_u`` over
    the users ``u`` whose answers hold ``i``, so sorting items by that sum is the best list
    (exact for users without exclusions; an excluded item is skipped, as models skip it)."""
    users = reqs.group(group)
    weight: dict[str, float] = {}
    for u in users:
        for item in reqs.truth[u]:
            weight[item] = weight.get(item, 0.0) + 1.0 / ideal_dcg(len(reqs.truth[u]), k)
    ranked = sorted(weight, key=lambda i: (-weight[i], i))
    recs = {u: [i for i in ranked if i not in reqs.exclude.get(u, ())][:k] for u in users}
    fn = METRICS["ndcg"]
    vals = [fn(recs[u], reqs.truth[u], k) for u in users]
    return {
        f"ndcg_at_{k}": float(np.mean(vals)) if vals else 0.0,
        "users": len(users),
        "list": ranked[:k],
    }


# --- rolling-origin validation ---------------------------------------------------------------


def rolling_origin_sets(
    ts: TrainingSet,
    folds: int = 4,
    holdout_share: float = 0.10,
    val_share: float = 0.05,
    step: float = 0.05,
) -> list[TrainingSet]:
    """Earlier copies of ``ts``'s split, newest first, built from its rows before the holdout.

    Positions are shares of all the set's positives in time order (the real holdout starts near
    ``1 - holdout_share``). Fold ``i`` (1..``folds``) starts its holdout ``i * step`` earlier
    than the real one and keeps ``holdout_share`` of the positives (cut at the real holdout),
    its validation is the ``val_share`` before it and everything earlier trains; cuts fall on
    whole days, as the real split's do. Folds with no training, validation or holdout rows are
    left out. Each fold's meta lists only its days before its holdout, so the evaluation's
    exclusions (every earlier interaction) read the lake up to its cut.
    """
    real = _midnight_of(ts.meta["holdout_start"])
    rows = ts.train.assign(_t=pd.to_datetime(ts.train["event_timestamp"], utc=True))
    rows = rows.sort_values("_t", kind="stable").reset_index(drop=True)
    n = len(rows) + len(ts.holdout)
    origin = len(rows) / n if n else 0.0
    out = []
    for i in range(1, folds + 1):
        start = origin - i * step
        if start - val_share <= 0:
            break
        h0, v0 = _day_at(rows["_t"], start * n), _day_at(rows["_t"], (start - val_share) * n)
        end = (start + holdout_share) * n
        h1 = real if end >= len(rows) else min(_day_at(rows["_t"], end), real)
        before, t = rows[rows["_t"] < h0], rows["_t"]
        hold = rows[(t >= h0) & (t < h1)]
        split = np.where(before["_t"] < v0, "train", "val")
        if not (len(hold) and (split == "train").any() and (split == "val").any()):
            continue
        train = before.assign(split=split).drop(columns="_t").reset_index(drop=True)
        meta = dict(
            ts.meta,
            val_start=v0.date().isoformat(),
            holdout_start=h0.date().isoformat(),
            window_end=(h1 - pd.Timedelta(days=1)).date().isoformat(),
            days=[d for d in ts.meta.get("days", []) if d < h0.date().isoformat()],
            rolling_origin_fold=i,
        )
        holdout = hold[["user_id", "item_id", "event_timestamp"]].reset_index(drop=True)
        out.append(
            dataclasses.replace(ts, train=train, holdout=holdout, meta=meta, interacted=None)
        )
    return out


def _midnight_of(day: str) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), tzinfo=dt.UTC))


def _day_at(stamps: pd.Series, position: float) -> pd.Timestamp:
    """Midnight (UTC) of the day of the row at ``position`` (clipped to the rows)."""
    t = stamps.iloc[min(max(round(position), 0), len(stamps) - 1)]
    return t.normalize()


# --- loaded models (candidate and champion) -------------------------------------------------


def predict_lists(model: PyFuncModel, reqs: Requests) -> dict[str, list[str]]:
    """A loaded pyfunc's lists for ``reqs`` (sent as serving receives them)."""
    users = reqs.users
    frame = pd.DataFrame({"user_id": users, "k": [reqs.k] * len(users)})
    if reqs.exclude:
        frame["exclude_item_ids"] = [sorted(reqs.exclude.get(u, ())) for u in users]
    out = model.predict(frame)
    return {u: list(items) for u, items in zip(out["user_id"], out["item_ids"], strict=True)}


def evaluate_model(
    model: PyFuncModel, ts: TrainingSet, cfg: TrainingConfig, reqs: Requests | None = None
) -> dict[str, float]:
    """Holdout metrics of a loaded pyfunc (candidate or champion), same users and exclusions."""
    reqs = reqs or requests_for(ts, cfg)
    return score_lists(predict_lists(model, reqs), reqs, ts, cfg)
