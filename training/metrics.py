"""Ranking metrics on a holdout, bootstrap intervals and the simulator's oracle.

Conventions: ``recs`` maps a user to a ranked list of item ids; ``truth`` maps a user to the set of
items they interacted with positively in the holdout. Metrics average over users with at least one
holdout positive. Binary relevance everywhere.

* Recall@K = hits in top K / min(K, |truth|)  (so a perfect list scores 1 even when |truth| > K)
* NDCG@K   = DCG of the list / DCG of the ideal list of min(K, |truth|) hits
* MAP@K    = mean over users of (sum of precision at each hit rank) / min(K, |truth|)
* HitRate@K = share of users with at least one hit in top K
* coverage = share of the catalog recommended to anyone (top max K)
* novelty  = mean self-information -log2(p(item)) of recommended items, p from training popularity
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

_DISCOUNT = 1.0 / np.log2(np.arange(2, 1002))


def _hits(ranked: Sequence[str], relevant: set[str], k: int) -> list[int]:
    return [1 if item in relevant else 0 for item in ranked[:k]]


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    return sum(_hits(ranked, relevant, k)) / min(k, len(relevant))


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    hits = _hits(ranked, relevant, k)
    dcg = float(np.dot(hits, _DISCOUNT[: len(hits)])) if hits else 0.0
    return dcg / ideal_dcg(len(relevant), k)


def ideal_dcg(n_relevant: int, k: int) -> float:
    """DCG@``k`` of a perfect list for a user with ``n_relevant`` relevant items."""
    return float(_DISCOUNT[: min(k, n_relevant)].sum())


def map_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    total, found = 0.0, 0
    for rank, hit in enumerate(_hits(ranked, relevant, k), start=1):
        if hit:
            found += 1
            total += found / rank
    return total / min(k, len(relevant))


def hit_rate_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return 1.0 if any(_hits(ranked, relevant, k)) else 0.0


METRICS: dict[str, Callable[[Sequence[str], set[str], int], float]] = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "map": map_at_k,
    "hit_rate": hit_rate_at_k,
}


def coverage(recs: Mapping[str, Sequence[str]], catalog_size: int, k: int) -> float:
    if catalog_size <= 0:
        return 0.0
    seen = {i for r in recs.values() for i in r[:k]}
    return len(seen) / catalog_size


def novelty(recs: Mapping[str, Sequence[str]], popularity: Mapping[str, int], k: int) -> float:
    """Mean -log2 p(item) of recommended items (unseen items get count 1)."""
    total = sum(popularity.values()) or 1
    values = [
        -math.log2(max(popularity.get(i, 0), 1) / total) for r in recs.values() for i in r[:k]
    ]
    return float(np.mean(values)) if values else 0.0


def evaluate(
    recs: Mapping[str, Sequence[str]],
    truth: Mapping[str, set[str]],
    ks: Iterable[int] = (10, 20),
    catalog_size: int | None = None,
    popularity: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """All metrics as ``{"ndcg_at_10": …, "recall_at_20": …, "coverage": …, "novelty": …}``."""
    ks = list(ks)
    users = [u for u, rel in truth.items() if rel]
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in METRICS.items():
            vals = [fn(recs.get(u, ()), truth[u], k) for u in users]
            out[f"{name}_at_{k}"] = float(np.mean(vals)) if vals else 0.0
    kmax = max(ks)
    if catalog_size is not None:
        out["coverage"] = coverage({u: recs.get(u, ()) for u in users}, catalog_size, kmax)
    if popularity is not None:
        out["novelty"] = novelty({u: recs.get(u, ()) for u in users}, popularity, kmax)
    out["users"] = float(len(users))
    return out


def popularity_counts(item_ids: Iterable[str]) -> Counter:
    """Rows per item id (as a string): the novelty metric's popularity."""
    counts = pd.Series(item_ids, dtype=object).astype(str).value_counts(sort=False)
    return Counter(dict(zip(counts.index, counts.to_numpy().tolist(), strict=True)))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per user), resampling users.

    ``n_boot`` resamples with replacement, seeded (the same ``seed`` and size give the same
    resamples, so two models' intervals -- and the interval of their per-user difference -- are
    computed on the same draws). With no values it is ``(0, 0)``; with ``n_boot=0`` the mean twice.
    """
    vals = np.asarray(values, dtype="float64")
    if vals.size == 0:
        return 0.0, 0.0
    if n_boot <= 0 or vals.size == 1:
        return float(vals.mean()), float(vals.mean())
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 4_000_000 // vals.size)  # resamples per block: bounded memory for big holdouts
    for start in range(0, n_boot, step):
        n = min(step, n_boot - start)
        means[start : start + n] = vals[rng.integers(0, vals.size, size=(n, vals.size))].mean(1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


ORACLE_CELLS = 4_000_000  # user × item scores per oracle batch (~32 MB of float64)


def oracle_recommendations(
    relevance: Callable[[list[str], list[str]], np.ndarray],
    users: list[str],
    catalog: list[str],
    k: int,
    exclude: Mapping[str, set[str]] | None = None,
    batch_size: int | None = None,
) -> dict[str, list[str]]:
    """Top-``k`` items per user by the simulator's true preference ``relevance(users, items)``.

    ``relevance`` returns a ``[len(users), len(catalog)]`` array (higher = preferred); users are
    scored ``batch_size`` at a time (default: 512, fewer for a big catalog so that one batch is
    at most :data:`ORACLE_CELLS` scores: relevance makes several such arrays).
    """
    batch_size = batch_size or max(1, min(512, ORACLE_CELLS // max(len(catalog), 1)))
    out: dict[str, list[str]] = {}
    items = np.asarray(catalog, dtype=object)
    pos = {v: j for j, v in enumerate(catalog)}
    for start in range(0, len(users), batch_size):
        chunk = users[start : start + batch_size]
        scores = np.array(relevance(chunk, list(catalog)), dtype="float64", copy=True)
        for r, u in enumerate(chunk):
            if exclude and exclude.get(u):
                scores[r, [pos[i] for i in exclude[u] if i in pos]] = -np.inf
        kk = min(k, len(catalog))
        top = (
            np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            if kk
            else np.zeros((len(chunk), 0), int)
        )
        for r, u in enumerate(chunk):
            idx = top[r][np.argsort(-scores[r, top[r]], kind="stable")]
            out[u] = [str(items[j]) for j in idx if np.isfinite(scores[r, j])]
    return out
