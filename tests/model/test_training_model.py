"""Training without MLflow: config, metrics, training-set rules, the model against popularity."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from training.config import TrainingConfig, TrainingConfigError
from training.data import (
    TrainingDataError,
    build_training_set,
    load_training_set,
    positives,
    read_validated,
)
from training.metrics import evaluate, hit_rate_at_k, map_at_k, ndcg_at_k, recall_at_k

START = dt.date(2026, 1, 1)
FAST = ["data.feature_source=contract", "data.window_days=8", "train.epochs=6", "train.patience=2"]


# --- config -------------------------------------------------------------------------------------


def test_config_overrides_are_typed_and_unknown_keys_rejected(tmp_path):
    cfg = TrainingConfig.load(
        None, ["train.epochs=3", "train.lr=0.01", "eval.ks=5,10", "eval.exclude_seen=false"]
    )
    assert (cfg.train.epochs, cfg.train.lr, cfg.eval.ks, cfg.eval.exclude_seen) == (
        3,
        0.01,
        (5, 10),
        False,
    )
    with pytest.raises(TrainingConfigError, match="unknown config key 'train.epoch'"):
        TrainingConfig.load(None, ["train.epoch=3"])
    with pytest.raises(TrainingConfigError, match="'train.epochs' expects int, got 'three'"):
        TrainingConfig.load(None, ["train.epochs=three"])
    with pytest.raises(TrainingConfigError, match="train.epochs=0 is out of range"):
        TrainingConfig.load(None, ["train.epochs=0"])
    path = tmp_path / "cfg.toml"
    path.write_text('[model]\nembedding_dim = 16\n[train]\nlr = "fast"\n')
    with pytest.raises(TrainingConfigError, match="'train.lr' expects float"):
        TrainingConfig.load(path)
    path.write_text("[model]\nembedding_dim = 16\n")
    cfg = TrainingConfig.load(path, ["model.embedding_dim=8"])
    assert cfg.model.embedding_dim == 8
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.flat()["model.embedding_dim"] == 8


# --- metrics ------------------------------------------------------------------------------------


def test_ranking_metrics_on_known_lists():
    ranked, rel = ["a", "x", "b", "y"], {"a", "b", "c"}
    assert recall_at_k(ranked, rel, 2) == pytest.approx(1 / 2)  # 1 hit of min(2, 3)
    assert recall_at_k(ranked, rel, 4) == pytest.approx(2 / 3)
    dcg = 1 + 1 / math.log2(4)
    assert ndcg_at_k(ranked, rel, 4) == pytest.approx(
        dcg / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    )
    assert map_at_k(ranked, rel, 4) == pytest.approx((1 + 2 / 3) / 3)
    assert hit_rate_at_k(["x", "a"], rel, 1) == 0.0 and hit_rate_at_k(["x", "a"], rel, 2) == 1.0
    out = evaluate(
        {"u": ["a", "b"], "v": ["z", "q"]},
        {"u": {"a", "b"}, "v": {"a"}},
        ks=(2,),
        catalog_size=4,
        popularity={"a": 3, "b": 1},
    )
    assert out["ndcg_at_2"] == pytest.approx(0.5) and out["coverage"] == pytest.approx(1.0)
    assert out["users"] == 2 and out["novelty"] > 0


# --- training-set rules -------------------------------------------------------------------------


def _write_events(lake, rows: list[tuple[str, str, str, float, dt.datetime]]) -> None:
    from core.contract import EVENTS, ITEMS, USERS
    from core.lake import partition_prefix

    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value", "event_ts"])
    df["event_id"] = [f"e{i}" for i in range(len(df))]
    df["event_ts"] = pd.to_datetime(df["event_ts"], utc=True)
    import pyarrow as pa

    for day, part in df.groupby(df["event_ts"].dt.date):
        t = pa.Table.from_pandas(part[EVENTS.column_names], preserve_index=False).cast(
            EVENTS.arrow_schema()
        )
        lake.write_parquet(partition_prefix("validated", "events", day) + "part-00000.parquet", t)
    items = pd.DataFrame({"item_id": sorted(df["item_id"].unique()), "category": "c", "price": 1.0})
    items["created_ts"] = pd.Timestamp("2025-12-01", tz="UTC")
    lake.write_parquet(
        partition_prefix("validated", "items", START) + "part-00000.parquet",
        pa.Table.from_pandas(items, preserve_index=False).cast(ITEMS.arrow_schema()),
    )
    users = pd.DataFrame(
        {"user_id": sorted(df["user_id"].unique()), "country": "DE", "age_bucket": "25-34"}
    )
    users["signup_ts"] = pd.Timestamp("2025-12-01", tz="UTC")
    lake.write_parquet(
        partition_prefix("validated", "users", START) + "part-00000.parquet",
        pa.Table.from_pandas(users[USERS.column_names], preserve_index=False).cast(
            USERS.arrow_schema()
        ),
    )


def _ts(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, tzinfo=dt.UTC)


def test_zero_positives_and_one_user_fail_with_a_clear_message(lake):
    cfg = TrainingConfig.load(None, ["data.feature_source=contract", "data.window_days=4"]).data
    # only views and a low rating: nothing counts as a positive
    _write_events(
        lake,
        [(f"u{d}", "i1", "view", 1.0, _ts(d)) for d in range(1, 5)]
        + [("u1", "i2", "rating", 2.0, _ts(2))],
    )
    with pytest.raises(
        TrainingDataError,
        match=r"no positive interactions \(click, add_to_cart, purchase, rating; ratings ≥ 4\)",
    ):
        build_training_set(lake, dt.date(2026, 1, 4), cfg)
    lake.delete_prefix("validated/")
    _write_events(
        lake,
        [("u1", f"i{d}", "click", 1.0, _ts(d)) for d in range(1, 5)]
        + [("u2", "i1", "purchase", 1.0, _ts(4))],
    )
    with pytest.raises(
        TrainingDataError, match=r"positives from 1 user\(s\); at least 2 users are needed"
    ):
        build_training_set(lake, dt.date(2026, 1, 4), cfg)
    with pytest.raises(
        TrainingDataError, match="no validated events between 2026-02-07 and 2026-02-10"
    ):
        build_training_set(lake, dt.date(2026, 2, 10), cfg)


def test_temporal_split_and_positive_rules(lake, tmp_path):
    cfg = TrainingConfig.load(None, ["data.feature_source=contract", "data.window_days=4"]).data
    rows = [
        ("u1", "i1", "click", 1.0, _ts(1, 9)),
        ("u1", "i1", "purchase", 1.0, _ts(1, 10)),  # same pair, same day: every event is a row
        ("u2", "i2", "rating", 5.0, _ts(2)),
        ("u2", "i3", "rating", 3.0, _ts(2)),  # low rating: not positive
        ("u1", "i3", "add_to_cart", 1.0, _ts(3)),  # validation day
        ("u2", "i1", "click", 1.0, _ts(4)),  # holdout day
        ("u1", "i2", "view", 1.0, _ts(4)),  # views are exposure, not positive
    ]
    _write_events(lake, rows)
    summary = build_training_set(lake, dt.date(2026, 1, 4), cfg, tmp_path / "set")
    ts = load_training_set(summary["location"])
    assert summary["rows"] == {"train": 3, "val": 1, "holdout": 1}
    assert sorted(zip(ts.split("train")["user_id"], ts.split("train")["item_id"], strict=True)) == [
        ("u1", "i1"),
        ("u1", "i1"),
        ("u2", "i2"),
    ]
    assert ts.truth(exclude_seen=True) == {"u2": {"i1"}}
    assert (ts.meta["window_start"], ts.meta["holdout_start"]) == ("2026-01-01", "2026-01-04")
    assert {"item_category", "item_price"} <= set(ts.train.columns)


# --- the model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_set(tmp_path_factory):
    """A small simulated lake (8 days, 300 users, 120 items) and its training set."""
    import os

    from core.lake import get_lake
    from tests.fixtures.lake import write_simulated

    home = tmp_path_factory.mktemp("sim")
    old = os.environ.get("FLYWHEEL_HOME")
    os.environ["FLYWHEEL_HOME"] = str(home)
    try:
        lake = get_lake()
        end = write_simulated(lake, days=8, users=300, items=120, seed=3)
        cfg = TrainingConfig.load(None, FAST)
        summary = build_training_set(lake, end, cfg.data, home / "set")
        yield home, cfg, load_training_set(summary["location"])
    finally:
        os.environ["FLYWHEEL_HOME"] = old or ""


def test_two_tower_beats_popularity_and_serves_cold_users(sim_set, monkeypatch):
    from training.train import run_training

    home, cfg, ts = sim_set
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    result = run_training(cfg, ts, run_key="unit", log_mlflow=False)
    m = result.metrics
    assert m["holdout_ndcg_at_10"] > m["popularity_ndcg_at_10"], m
    assert (
        0 < m["ndcg_to_oracle_ratio"] <= 1.2 and m["oracle_ndcg_at_10"] > m["popularity_ndcg_at_10"]
    )
    for key in (
        "holdout_recall_at_20",
        "holdout_map_at_10",
        "holdout_hit_rate_at_20",
        "holdout_coverage",
        "holdout_novelty",
    ):
        assert key in m
    assert result.epochs_run >= 1 and result.interactions_per_s > 0
    assert not (home / "checkpoints" / "unit").exists()  # finished runs leave no local checkpoint

    # the same seed gives the same model
    again = run_training(cfg, ts, run_key="unit-2", log_mlflow=False)
    assert again.metrics["holdout_ndcg_at_10"] == pytest.approx(m["holdout_ndcg_at_10"])


def test_personal_weight_is_picked_on_validation_and_saved_as_the_only_value(sim_set, monkeypatch):
    """``model.personal_weights``: the trainer scores each candidate on the validation split with
    the best epoch's weights and keeps the best, whatever its place in the list; the final model
    (refit included) scores with it. On the simulated world taste is real: the personal part
    (1.0) beats none (0.0)."""
    import training.train as train_mod

    home, cfg, ts = sim_set
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    picked = []
    pick = train_mod.pick_personal_weight
    monkeypatch.setattr(
        train_mod,
        "pick_personal_weight",
        lambda *a: picked.append(pick(*a)) or picked[-1],
    )
    fast = cfg.with_overrides(["train.epochs=2", "model.personal_weights=0,1"])
    m = train_mod.run_training(fast, ts, run_key="pick", log_mlflow=False).metrics
    assert m["personal_weight"] == 1.0 and picked[-1].model.personal_weights == (1.0,)
    none = cfg.with_overrides(["train.epochs=2", "model.personal_weights=0"])
    prior_only = train_mod.run_training(none, ts, run_key="prior", log_mlflow=False).metrics
    assert prior_only["personal_weight"] == 0.0
    assert prior_only["holdout_ndcg_at_10"] < m["holdout_ndcg_at_10"]


def test_retriever_cold_start_exclusions_and_features(sim_set):
    import torch

    from training.model import FeatureEncoder, Retriever, TwoTower

    _, cfg, ts = sim_set
    train = ts.split("train")
    enc = FeatureEncoder.fit(train, ts.users, ts.items, ts.columns)
    torch.manual_seed(0)
    retriever = Retriever(TwoTower(enc, cfg.model), enc, ts.items, ts.users)
    known = train["user_id"].iloc[0]
    ids, scores = retriever.recommend(
        [known, "never-seen-user"], [5, 3], [[ts.items["item_id"].iloc[0]], None]
    )
    assert len(ids[0]) == 5 and len(ids[1]) == 3
    assert ts.items["item_id"].iloc[0] not in ids[0]
    assert scores[0] == sorted(scores[0], reverse=True)
    # a score budget of one user's row at a time gives the same answers (memory bounded by it)
    users = list(train["user_id"].unique()[:50])
    whole = retriever.recommend(users, 10)
    one_by_one = retriever.recommend(users, 10, max_scores=len(ts.items))
    assert one_by_one[0] == whole[0]
    assert all(
        a == pytest.approx(b, abs=1e-6) for a, b in zip(one_by_one[1], whole[1], strict=True)
    )
    # features given for a cold user change its embedding (the feature-only path is used)
    feats = pd.DataFrame({"user_country": ["DE", "FR"], "user_age_bucket": ["18-24", "65+"]})
    emb = retriever.user_embeddings(["cold-a", "cold-b"], feats)
    assert not torch.allclose(emb[0], emb[1])


def test_training_set_through_feast_is_point_in_time(lake, fw_home):
    """End to end with the real feature store: recommender_v1 joined point-in-time; the first
    day (no features before it) keeps its rows, with defaults and the missing flags."""
    from core.names import FEATURE_SERVICE
    from features.columns import ITEM_FEATURES, USER_FEATURES
    from features.store import apply_if_changed, compute_day
    from tests.fixtures.lake import write_simulated
    from training.train import run_training

    end = write_simulated(lake, days=5, users=120, items=60, seed=7)
    for i in range(5):
        compute_day(START + dt.timedelta(days=i))
    apply_if_changed()
    cfg = TrainingConfig.load(None, ["data.window_days=5", "train.epochs=2"])
    summary = build_training_set(lake, end, cfg.data, fw_home / "set")
    ts = load_training_set(summary["location"])
    assert summary["feature_service"] == FEATURE_SERVICE
    assert ts.meta["quarantined_days"] == [] and ts.meta["days_without_data"] == []
    assert set(USER_FEATURES + ITEM_FEATURES) <= set(ts.train.columns)
    pos = positives(
        read_validated(lake, "events", [START + dt.timedelta(days=i) for i in range(5)]), cfg.data
    )
    before = pos[pos["event_timestamp"] < pd.Timestamp(ts.meta["holdout_start"], tz="UTC")]
    assert len(ts.train) == len(before)  # lossless: every positive before the holdout is a row
    first_day = ts.train["event_timestamp"].dt.date == START
    assert first_day.any() and (ts.train.loc[first_day, "user_features_missing"] == 1.0).all()
    assert ts.train[USER_FEATURES + ITEM_FEATURES].notna().all().all()
    assert ts.meta["rows_with_missing_features"]["user"] >= first_day.sum()
    # point in time: a row of day D sees the features computed for D-1 (known at D 00:00)
    row = ts.train[~first_day & (ts.train["user_features_missing"] == 0.0)].iloc[0]
    day_before = (row["event_timestamp"] - pd.Timedelta(days=1)).date()
    feats = lake.read_parquet(
        f"features/user_stats/dt={day_before.isoformat()}/part-00000.parquet"
    ).to_pandas()
    expected = feats.set_index("user_id").loc[row["user_id"], "user_clicks_28d"]
    assert row["user_clicks_28d"] == expected
    result = run_training(cfg, ts, run_key="feast", log_mlflow=False)
    assert result.metrics["holdout_ndcg_at_10"] > 0


def test_users_with_a_history_tilt_toward_fresh_items_new_users_do_not():
    """``model.fresh_weight``: a returning user's scores add ``w · -log(item age)`` (new releases
    first among equally popular items); a user with nothing known keeps the plain prior."""
    import numpy as np
    import torch

    from training.model import FeatureColumns, FeatureEncoder, Retriever, TwoTower

    day = 86_400 * 10**9
    train = pd.DataFrame(
        {
            "user_id": ["a", "b", "a", "b"],
            "item_id": ["old", "old", "new", "new"],
            "event_timestamp": pd.to_datetime([0, 1, 999, 1000], unit="D", utc=True),
        }
    )
    items = pd.DataFrame({"item_id": ["old", "new"]})
    enc = FeatureEncoder.fit(train, pd.DataFrame(), items, FeatureColumns())
    stamps = np.array([0, 1, 999, 1000], dtype=np.int64) * day

    def top(weight: float) -> tuple[str, str, torch.Tensor]:
        cfg = TrainingConfig.load(None, [f"model.fresh_weight={weight}"]).model
        torch.manual_seed(0)
        model = TwoTower(enc, cfg)
        model.init_item_bias(torch.tensor([0.0, 10.0, 10.0]))  # equally popular
        model.init_item_freshness(torch.from_numpy(enc.item.id_index(train["item_id"])), stamps)
        with torch.no_grad():  # no personal part: the priors alone rank
            model.item_tower.id_embedding.weight.zero_()
            model.user_tower.history.weight.zero_()
        r = Retriever(model, enc, items, histories={"a": ["old"]})
        known, known_scores = r.recommend(["a"], 2)
        _, cold = r.recommend(["new-user"], 2)
        return known[0][0], cold[0], model.item_fresh, known_scores[0]

    first, cold_scores, fresh, _ = top(1.0)
    assert first == "new"
    assert fresh[enc.item.id_index(["new"])[0]] > fresh[enc.item.id_index(["old"])[0]]
    assert cold_scores[0] == pytest.approx(cold_scores[1])  # the new user: the prior alone
    # the age is floored (model.fresh_floor_days): an item first seen today is not infinitely fresh
    assert float(fresh.max()) == pytest.approx(-math.log(30.0))
    off = top(0.0)[3]  # disabled: no freshness column, the returning user sees the prior too
    assert off[0] == pytest.approx(off[1])
    with pytest.raises(TrainingConfigError, match="fresh_weight"):
        TrainingConfig.load(None, ["model.fresh_weight=-1"])


def test_one_valued_features_are_left_out_and_such_users_rank_by_the_prior():
    """An import without a users file gives every user the same country and age: encoded, that
    "feature" would mark every user as known and add the same vector to each. A column with one
    value carries nothing: the encoder leaves it out (whole-frame and shard-by-shard fits alike),
    and a new user whose only features are those defaults gets the prior alone."""
    import torch

    from training.model import FeatureColumns, FeatureEncoder, Retriever, TwoTower

    train = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "item_id": ["x", "y", "x"],
            "user_country": ["US"] * 3,
            "user_age_bucket": ["25-34", "18-24", None],
            "user_features_missing": [0.0] * 3,
            "item_category": ["Drama", "Drama|Comedy", "Drama"],
        }
    )
    columns = FeatureColumns(
        user_numeric=["user_features_missing"],
        user_categorical=["user_country", "user_age_bucket"],
        item_categorical=["item_category"],
    )
    items = pd.DataFrame({"item_id": ["x", "y"], "item_category": ["Drama", "Drama|Comedy"]})
    enc = FeatureEncoder.fit(train, pd.DataFrame(), items, columns)
    assert enc.user.numeric == [] and list(enc.user.categorical) == ["user_age_bucket"]
    assert enc.item.categorical == {"item_category": ["Comedy", "Drama"]}
    one_valued = FeatureEncoder.fit(
        train.assign(user_age_bucket="25-34"), pd.DataFrame(), items, columns
    )
    assert one_valued.user.categorical == {} and one_valued.user.numeric == []
    cfg = TrainingConfig().model
    torch.manual_seed(0)
    model = TwoTower(one_valued, cfg)
    model.init_item_bias(torch.tensor([0.0, 1.0, 5.0]))
    assert model.user_tower.features is None
    feats = pd.DataFrame({"user_country": ["US"], "user_age_bucket": ["25-34"]})
    r = Retriever(model, one_valued, items)
    emb = r.user_embeddings(["new-user"], feats)
    assert torch.count_nonzero(emb[0, : cfg.embedding_dim]) == 0  # nothing personal: the prior
    assert r.recommend(["new-user"], 2, features=feats)[0][0] == ["y", "x"]


def test_attention_history_encoder_reads_order_and_empty_histories_add_nothing():
    """``model.history_encoder="attention"``: the history is a sequence (recency positions), so
    the same items in another order give another vector; an empty history gives zero."""
    import torch

    from training.model import HistorySequence

    cfg = TrainingConfig.load(None, ["model.history_encoder=attention"]).model
    torch.manual_seed(0)
    seq = HistorySequence(10, cfg).eval()
    hist = torch.zeros(3, cfg.history_len, dtype=torch.long)
    hist[0, :3] = torch.tensor([1, 2, 3])
    hist[1, :3] = torch.tensor([3, 2, 1])
    out = seq(hist)
    assert out.shape == (3, cfg.embedding_dim) and not torch.isnan(out).any()
    assert not torch.allclose(out[0], out[1])
    assert torch.count_nonzero(out[2]) == 0
    with pytest.raises(TrainingConfigError, match="history_encoder"):
        TrainingConfig.load(None, ["model.history_encoder=lstm"])
