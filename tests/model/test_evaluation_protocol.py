"""The evaluation protocol: exclusions, warm/cold users, bootstrap intervals, the baselines and
the promotion gate against the strongest of them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from training.baselines import BASELINES, fit_baselines
from training.config import TrainingConfig
from training.metrics import bootstrap_ci
from training.registry import decide

# --- bootstrap intervals ------------------------------------------------------------------------


def test_bootstrap_interval_covers_the_mean_narrows_and_is_seeded():
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(2000)
    lo, hi = bootstrap_ci(small, 1000, seed=7)
    assert lo < small.mean() < hi
    assert 0 < hi - lo < 0.4
    lo_l, hi_l = bootstrap_ci(large, 1000, seed=7)
    assert lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi - lo) / 3  # ~1/sqrt(40) as wide with 40x the users
    assert bootstrap_ci(small, 1000, seed=7) == (lo, hi)  # same seed, same interval
    assert bootstrap_ci(small, 1000, seed=8) != (lo, hi)
    assert bootstrap_ci([], 1000) == (0.0, 0.0)
    assert bootstrap_ci([0.3, 0.3, 0.3], 1000) == pytest.approx((0.3, 0.3))
    assert bootstrap_ci(small, 0) == (small.mean(), small.mean())  # no resamples: no interval


# --- requests: exclusions, warm and cold users ------------------------------------------------------

D = [dt.date(2026, 1, d) for d in range(1, 6)]


def _write_day(lake, day: dt.date, rows: list[tuple[str, str, str, float]]) -> None:
    from tests.fixtures.lake import write_table

    ts = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    write_table(
        lake,
        "events",
        day,
        {
            "event_id": [f"e-{day}-{n}" for n in range(len(rows))],
            "user_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "value": [r[3] for r in rows],
            "event_ts": [ts + dt.timedelta(minutes=n) for n in range(len(rows))],
        },
    )


@pytest.fixture
def small_set(lake, tmp_path):
    """Five days: u1 warm (also rated i2 low and viewed i3), u2 warm, u3 only viewed (cold),
    u4 new on the holdout day (cold). Holdout = day 5, validation = day 4."""
    from tests.fixtures.lake import write_table
    from training.data import build_training_set, load_training_set

    start = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
    items = [f"i{n}" for n in range(1, 7)]
    write_table(
        lake,
        "items",
        D[0],
        {"item_id": items, "category": ["c"] * 6, "price": [1.0] * 6, "created_ts": [start] * 6},
    )
    users = ["u1", "u2", "u3", "u4"]
    write_table(
        lake,
        "users",
        D[0],
        {
            "user_id": users,
            "signup_ts": [start] * 4,
            "country": ["DE"] * 4,
            "age_bucket": ["25-34"] * 4,
        },
    )
    _write_day(
        lake,
        D[0],
        [
            ("u1", "i1", "rating", 5.0),
            ("u1", "i2", "rating", 2.0),  # low rating: seen, not positive
            ("u1", "i3", "view", 1.0),  # a view: seen, not positive
            ("u2", "i1", "click", 1.0),
            ("u3", "i4", "view", 1.0),  # u3 has no positive before the holdout: cold
        ],
    )
    _write_day(lake, D[1], [("u2", "i2", "click", 1.0), ("u1", "i4", "click", 1.0)])
    _write_day(lake, D[3], [("u2", "i3", "click", 1.0)])
    _write_day(
        lake,
        D[4],
        [
            ("u1", "i2", "click", 1.0),  # rated low before: excluded under "all"
            ("u1", "i5", "click", 1.0),
            ("u2", "i1", "click", 1.0),  # an earlier positive: excluded unless "none"
            ("u3", "i1", "click", 1.0),
            ("u4", "i1", "purchase", 1.0),
        ],
    )
    cfg = TrainingConfig.load(None, ["data.feature_source=contract", "data.window_days=5"])
    summary = build_training_set(lake, D[4], cfg.data, tmp_path / "set")
    return load_training_set(summary["location"])


def _cfg(*extra: str) -> TrainingConfig:
    return TrainingConfig.load(
        None, ["data.feature_source=contract", "data.window_days=5", "eval.bootstrap=200", *extra]
    )


def test_exclusion_modes_and_warm_cold_partition(small_set):
    from training.evaluation import requests_for

    every = requests_for(small_set, _cfg())  # default: every earlier interaction
    assert _cfg().eval.exclude == "all"
    assert every.truth == {"u1": {"i5"}, "u3": {"i1"}, "u4": {"i1"}}
    assert every.exclude["u1"] == {"i1", "i2", "i3", "i4"}
    assert every.exclude["u3"] == {"i4"} and "u4" not in every.exclude
    assert every.group("warm") == ["u1"] and every.group("cold") == ["u3", "u4"]
    assert sorted(every.group("warm") + every.group("cold")) == every.users

    pos = requests_for(small_set, _cfg("eval.exclude=positives"))
    assert pos.truth == {"u1": {"i2", "i5"}, "u3": {"i1"}, "u4": {"i1"}}
    assert pos.exclude == {"u1": {"i1", "i4"}}

    none = requests_for(small_set, _cfg("eval.exclude=none"))
    assert none.truth == {"u1": {"i2", "i5"}, "u2": {"i1"}, "u3": {"i1"}, "u4": {"i1"}}
    assert none.exclude == {} and none.group("warm") == ["u1", "u2"]
    legacy = requests_for(small_set, _cfg("eval.exclude_seen=false"))
    assert legacy.truth == none.truth and legacy.exclude == {}

    with pytest.raises(Exception, match="eval.exclude"):
        _cfg("eval.exclude=everything")


def test_scores_per_group_with_intervals(small_set):
    from training.evaluation import requests_for, score

    reqs = requests_for(small_set, _cfg())
    recs = {"u1": ["i5", "i6"], "u3": ["i6", "i1"], "u4": ["i6", "i2"]}
    m = score(recs, reqs, n_boot=200, seed=1)
    assert m["ndcg_at_10_warm"] == pytest.approx(1.0)
    assert m["ndcg_at_10_cold"] == pytest.approx((1 / np.log2(3)) / 2)
    assert m["ndcg_at_10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert (m["users"], m["users_warm"], m["users_cold"]) == (3, 1, 2)
    assert m["recall_at_20_cold"] == pytest.approx(0.5)
    for key in ("ndcg_at_10", "ndcg_at_10_cold", "recall_at_20_warm"):
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"]


def test_every_baseline_answers_the_same_requests(small_set):
    from training.evaluation import baseline_metrics, requests_for, strongest

    cfg = _cfg()
    reqs = requests_for(small_set, cfg)
    metrics, lists = baseline_metrics(small_set, cfg, reqs)
    assert list(metrics) == list(BASELINES) == list(cfg.eval.baselines)
    for name, recs in lists.items():
        assert list(recs) == reqs.users, name
        for u, items in recs.items():
            assert not set(items) & reqs.exclude.get(u, set()), (name, u)
    assert strongest(metrics) in BASELINES
    assert metrics[strongest(metrics)]["ndcg_at_10"] == max(
        m["ndcg_at_10"] for m in metrics.values()
    )


# --- the baselines ------------------------------------------------------------------------------


def _positives(n_users: int = 40, n_items: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for u in range(n_users):
        for i in rng.choice(n_items, size=6, replace=False, p=_zipf(n_items)):
            rows.append(
                (f"u{u}", f"i{i}", start + pd.Timedelta(hours=int(rng.integers(0, 60 * 24))))
            )
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])


def _zipf(n: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1)
    return p / p.sum()


def test_each_baseline_returns_k_items_with_popularity_fallback():
    pos = _positives()
    catalog = [f"i{i}" for i in range(32)]  # two items nobody interacted with
    cutoff = pd.Timestamp("2026-03-02", tz="UTC")
    fitted = fit_baselines(pos, catalog, cutoff, recent_days=7, seed=1)
    again = fit_baselines(pos, catalog, cutoff, recent_days=7, seed=1)
    assert list(fitted) == list(BASELINES)
    users = ["u0", "u1", "u7", "stranger"]
    seen = pos.groupby("user_id")["item_id"].agg(set).to_dict()
    exclude = {u: seen[u] for u in users if u in seen}
    popular = fitted["popularity"].recommend(["stranger"], 10)["stranger"]
    assert popular[0] == "i0"  # the zipf head
    for name, model in fitted.items():
        recs = model.recommend(users, 10, exclude)
        assert recs == again[name].recommend(users, 10, exclude), name  # seeded
        for u in users:
            items = recs[u]
            assert len(items) == 10 and len(set(items)) == 10, (name, u, items)
            assert not set(items) & exclude.get(u, set()), (name, u)
        if name != "recent_popularity":
            assert recs["stranger"] == popular, name  # unknown user: popularity fallback
    # a user whose neighbourhood covers few items: the item-kNN fills with popular items
    knn = fitted["item_knn"].recommend(["u0"], 25, exclude)["u0"]
    assert len(knn) == 25 and not set(knn) & exclude["u0"]


def test_recent_popularity_ranks_the_last_days_first():
    start = pd.Timestamp("2026-01-01", tz="UTC")
    old = [(f"u{n}", "old", start) for n in range(10)]
    new = [(f"v{n}", "new", start + pd.Timedelta(days=40)) for n in range(3)]
    pos = pd.DataFrame(old + new, columns=["user_id", "item_id", "event_timestamp"])
    cutoff = start + pd.Timedelta(days=41)
    fitted = fit_baselines(pos, ["old", "new", "other"], cutoff, 7, names=BASELINES[:2])
    # catalog items nobody interacted with come last (lists can always hold k items)
    assert fitted["popularity"].recommend(["x"], 3)["x"] == ["old", "new", "other"]
    assert fitted["recent_popularity"].recommend(["x"], 3)["x"] == ["new", "old", "other"]
    with pytest.raises(ValueError, match="unknown baseline 'svd'"):
        fit_baselines(pos, ["old"], cutoff, names=("svd",))


# --- the gate against the strongest baseline -----------------------------------------------------

ALS = {"ndcg_at_10": 0.30, "recall_at_20": 0.40}
CHAMPION = {"ndcg_at_10": 0.20, "recall_at_20": 0.40}


@pytest.mark.parametrize(
    ("candidate", "champion", "tolerance", "promote", "reason"),
    [
        (0.33, None, 0.0, True, "no champion yet; candidate NDCG@10 0.3300 beats als 0.3000"),
        (0.29, None, 0.0, False, "candidate NDCG@10 0.2900 does not beat als 0.3000"),
        (0.29, None, 0.05, True, "within promotion.baseline_tolerance 5% of als 0.3000"),
        (
            0.28,
            None,
            0.05,
            False,
            "does not beat als 0.3000 (the strongest baseline it must beat) less",
        ),
        (0.25, CHAMPION, 0.0, False, "beats champion 0.2000, but candidate NDCG@10 0.2500 does"),
        (0.31, CHAMPION, 0.0, True, "by +0.1100 > margin 0.0000"),
    ],
    ids=[
        "first-beats",
        "first-loses",
        "first-within-tolerance",
        "first-below-tolerance",
        "beats-champion-not-baseline",
        "beats-both",
    ],
)
def test_gate_requires_beating_the_strongest_baseline(
    candidate, champion, tolerance, promote, reason
):
    d = decide(
        {"ndcg_at_10": candidate, "recall_at_20": 0.40},
        champion,
        ALS,
        margin=0.0,
        recall_tolerance=0.01,
        baseline_name="als",
        baseline_tolerance=tolerance,
    )
    assert d.promote is promote and reason in d.reason, d.reason
    assert (
        "als 0.3000 (the strongest baseline it must beat)" in d.reason and d.baseline_name == "als"
    )


def _set_with(val_items: list[str]):
    """Train: item "old" liked by 6 users 300 days before validation, "new" by 3 users in its
    last week; validation: each of 4 fresh users likes one of ``val_items``."""
    from training.data import TrainingSet

    val_start = pd.Timestamp("2026-06-01", tz="UTC")
    rows = [(f"o{n}", "old", val_start - pd.Timedelta(days=300), "train") for n in range(6)]
    rows += [(f"n{n}", "new", val_start - pd.Timedelta(days=3), "train") for n in range(3)]
    rows += [
        (f"v{n}", item, val_start + pd.Timedelta(hours=n), "val")
        for n, item in enumerate(val_items)
    ]
    train = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", "split"])
    meta = {"val_start": "2026-06-01", "holdout_start": "2026-06-02"}
    items = pd.DataFrame({"item_id": ["old", "new", "x"]})
    return TrainingSet(train, train.iloc[:0], pd.DataFrame({"user_id": []}), items, meta)


def test_recent_popularity_window_is_picked_on_validation():
    from training.evaluation import pick_recent_days

    cfg = _cfg()
    assert cfg.eval.recent_days == (7, 30, 90, 365)
    assert pick_recent_days(_set_with(["new"] * 4), cfg) == 7  # the trend wins on validation
    assert pick_recent_days(_set_with(["old"] * 4), cfg) == 365  # the long run wins
    assert pick_recent_days(_set_with(["old"] * 4), _cfg("eval.recent_days=14")) == 14


def test_gate_baseline_follows_promotion_must_beat():
    from training.pipeline import gate_baseline

    scores = {"popularity": 0.29, "recent_popularity": 0.33, "als": 0.30, "item_knn": 0.37}
    baselines = {n: {"ndcg_at_10": v} for n, v in scores.items()}
    assert gate_baseline(baselines, "non_personal") == "recent_popularity"
    assert gate_baseline(baselines, "strongest") == "item_knn"
    only_learned = {n: baselines[n] for n in ("als", "item_knn")}
    assert gate_baseline(only_learned, "non_personal") == "item_knn"  # none measured: all


# --- rolling-origin validation ------------------------------------------------------------------


def _long_set():
    """200 days, 3 positives a day (users cycle over 30), holdout = the last 20 days,
    validation the 10 before."""
    from training.data import TrainingSet

    start = pd.Timestamp("2025-01-01", tz="UTC")
    stamps = [start + pd.Timedelta(days=d, hours=h) for d in range(200) for h in (9, 12, 15)]
    frame = pd.DataFrame(
        {
            "user_id": [f"u{n % 30}" for n in range(len(stamps))],
            "item_id": [f"i{(n * 7) % 50}" for n in range(len(stamps))],
            "event_timestamp": stamps,
        }
    )
    holdout_start, val_start = start + pd.Timedelta(days=180), start + pd.Timedelta(days=170)
    before = frame[frame["event_timestamp"] < holdout_start].copy()
    before["split"] = np.where(before["event_timestamp"] < val_start, "train", "val")
    days = [(start + pd.Timedelta(days=d)).date().isoformat() for d in range(200)]
    meta = {
        "holdout_start": holdout_start.date().isoformat(),
        "val_start": val_start.date().isoformat(),
        "window_end": days[-1],
        "days": days,
    }
    holdout = frame[frame["event_timestamp"] >= holdout_start].reset_index(drop=True)
    items = pd.DataFrame({"item_id": sorted(frame["item_id"].unique())})
    users = pd.DataFrame({"user_id": sorted(frame["user_id"].unique())})
    return TrainingSet(before.reset_index(drop=True), holdout, users, items, meta, None)


def test_rolling_origin_folds_are_earlier_copies_of_the_split_before_the_holdout():
    from training.evaluation import rolling_origin_sets

    ts = _long_set()
    real = pd.Timestamp(ts.meta["holdout_start"], tz="UTC")
    folds = rolling_origin_sets(ts, folds=4, holdout_share=0.10, val_share=0.05, step=0.05)
    assert [f.meta["rolling_origin_fold"] for f in folds] == [1, 2, 3, 4]
    starts = [pd.Timestamp(f.meta["holdout_start"], tz="UTC") for f in folds]
    assert starts == sorted(starts, reverse=True)  # newest first, each 5 % (10 days) earlier
    assert [(real - s).days for s in starts] == [10, 20, 30, 40]
    for f, h0 in zip(folds, starts, strict=True):
        v0 = pd.Timestamp(f.meta["val_start"], tz="UTC")
        t = pd.to_datetime(f.train["event_timestamp"], utc=True)
        ht = pd.to_datetime(f.holdout["event_timestamp"], utc=True)
        assert (t[f.train["split"] == "train"] < v0).all()
        assert ((t[f.train["split"] == "val"] >= v0) & (t[f.train["split"] == "val"] < h0)).all()
        assert (h0 - v0).days == 10  # 5 % of 600 positives at 3 a day
        assert (ht >= h0).all() and (ht < real).all()  # never a row of the real holdout
        assert len(f.holdout) == min(60, (real - h0).days * 3)  # 10 %, cut at the real holdout
        assert set(f.holdout.columns) == {"user_id", "item_id", "event_timestamp"}
        assert all(d < f.meta["holdout_start"] for d in f.meta["days"])  # exclusions up to it
        assert len(f.train) + len(f.holdout) <= len(ts.train)  # rows of the set, none invented
    assert rolling_origin_sets(ts, folds=30, step=0.05)[-1].meta["rolling_origin_fold"] < 30


# --- the hindsight list: the most any single list scores ----------------------------------------


def test_hindsight_list_is_the_best_single_list_for_a_group():
    """Brute force over every ordered 2-item list of the catalog: no non-personal list
    scores more for the cold users than the one built from their answers (the warm users'
    answers, the most common overall, are not read), and it is a real list (its score is what it scores)."""
    import itertools

    from training.evaluation import Requests, hindsight_list_metrics
    from training.metrics import ndcg_at_k

    # "m" is in more cold users' answers than "s", but theirs are longer (a hit counts less):
    # the best list starts with "s" (counting users would start with "m")
    truth = {
        "c1": {"s"},
        "c2": {"s"},
        "c3": {"m", "p"},
        "c4": {"m", "q"},
        "c5": {"m", "r"},
        **{f"w{n}": {"d"} for n in range(4)},
    }
    reqs = Requests(truth, {"c3": {"x"}}, frozenset(f"w{n}" for n in range(4)), (2,))
    cold = reqs.group("cold")
    got = hindsight_list_metrics(reqs, "cold", k=2)

    def mean_ndcg(lst):
        return float(np.mean([ndcg_at_k(list(lst), truth[u], 2) for u in cold]))

    best = max(mean_ndcg(p) for p in itertools.permutations("smpqrdx", 2))
    assert got["ndcg_at_2"] == pytest.approx(best)
    assert got["users"] == len(cold) == 5
    assert got["list"] == ["s", "m"]
    assert mean_ndcg(got["list"]) == pytest.approx(got["ndcg_at_2"])
    assert hindsight_list_metrics(Requests({}, {}, frozenset(), (2,)), "cold", k=2)["users"] == 0
