"""Lossless training sets and the history-aware model: every positive is a row, missing
features are filled and flagged, the user tower reads the user's recent items."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from training.config import TrainingConfig
from training.data import TrainingSet, build_training_set, load_training_set
from training.model import FeatureEncoder, Retriever, TwoTower, history_index

DAY = dt.date(2026, 1, 1)


def _ts(day: int, hour: int = 12, second: int = 0) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime(2026, 1, day, hour, 0, second, tzinfo=dt.UTC))


def _write(lake, events: list[tuple], known_users: list[str], genres: dict[str, str]) -> None:
    """Validated events, a catalog with ``genres`` and a users table of ``known_users`` only."""
    from tests.fixtures.lake import write_table

    df = pd.DataFrame(events, columns=["user_id", "item_id", "event_type", "value", "event_ts"])
    df["event_id"] = [f"e{i}" for i in range(len(df))]
    for day, part in df.groupby(df["event_ts"].dt.date):
        write_table(lake, "events", day, part)
    write_table(
        lake,
        "items",
        DAY,
        {
            "item_id": list(genres),
            "category": list(genres.values()),
            "price": [1.0] * len(genres),
            "created_ts": [_ts(1, 0)] * len(genres),
        },
    )
    write_table(
        lake,
        "users",
        DAY,
        {
            "user_id": known_users,
            "signup_ts": [_ts(1, 0)] * len(known_users),
            "country": ["DE"] * len(known_users),
            "age_bucket": ["25-34"] * len(known_users),
        },
    )


def test_same_second_events_and_unknown_users_are_all_training_rows(lake, tmp_path):
    events = [
        # u1 rates three films in the same second on the first day: three rows
        ("u1", "m1", "rating", 5.0, _ts(1, 9)),
        ("u1", "m2", "rating", 4.0, _ts(1, 9)),
        ("u1", "m3", "rating", 4.5, _ts(1, 9)),
        ("u1", "m3", "click", 1.0, _ts(1, 10)),  # the same pair again later that day: a row too
        ("u2", "m1", "rating", 2.0, _ts(2)),  # low rating: interacted, not positive
        ("u2", "m2", "purchase", 1.0, _ts(2)),
        ("u3", "m4", "click", 1.0, _ts(3)),  # u3 is not in the users table: filled + flagged
        ("u2", "m4", "rating", 5.0, _ts(4)),  # holdout
        ("u2", "m1", "rating", 5.0, _ts(4, 13)),  # holdout, on an item u2 rated low before
    ]
    _write(lake, events, ["u1", "u2"], {"m1": "Drama|War", "m2": "Comedy", "m3": "", "m4": "Drama"})
    cfg = TrainingConfig.load(
        None, ["data.feature_source=contract", "data.window_days=all", "data.val_days=1"]
    )
    summary = build_training_set(lake, dt.date(2026, 1, 4), cfg.data, tmp_path / "set")
    ts = load_training_set(summary["location"])
    assert summary["window_start"] == "2026-01-01"  # "all": from the first validated day
    assert summary["rows"] == {"train": 5, "val": 1, "holdout": 2}
    first = ts.train[ts.train["user_id"] == "u1"]
    assert sorted(first["item_id"]) == ["m1", "m2", "m3", "m3"]
    assert first["event_timestamp"].nunique() == 2
    # a user without attributes keeps the row: defaults plus the flag, and the count is recorded
    u3 = ts.train[ts.train["user_id"] == "u3"].iloc[0]
    assert u3["user_features_missing"] == 1.0 and u3["user_country"] == "unknown"
    assert set(ts.train.loc[ts.train["user_id"] != "u3", "user_features_missing"]) == {0.0}
    assert ts.meta["filled"]["user_country"] == 1
    assert ts.meta["rows_with_missing_features"] == {"user": 1, "item": 0}
    # every earlier interaction, positive or not, is known to evaluation
    assert ts.interacted_before()["u2"] == {"m1", "m2"}
    assert ts.interacted_before(["u2"]) == {"u2": {"m1", "m2"}}
    assert ts.histories(5)["u1"][-1] == "m3"
    # a lean load (a streamed set) keeps the keys only, and answers the same questions
    lean = load_training_set(summary["location"], lean=True)
    assert list(lean.train.columns) == ["user_id", "item_id", "event_timestamp", "split"]
    assert lean.histories(5) == ts.histories(5) and lean.seen(["u1"]) == ts.seen(["u1"])
    assert lean.split_rows("val") == len(ts.split("val")) == 1


def test_histories_are_each_users_last_items_in_time_then_row_order():
    """The vectorised histories equal the pandas definition: stable sort by time (same-second
    rows keep the set's order), the last n per user, oldest first."""
    rng = np.random.default_rng(7)
    n = 3000
    train = pd.DataFrame(
        {
            "user_id": rng.choice([f"u{i}" for i in range(90)], n),
            "item_id": [f"m{i}" for i in rng.integers(0, 400, n)],
            "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 2000, n), unit="s"),  # many ties
            "split": rng.choice(["train", "val"], n, p=[0.8, 0.2]),
        }
    )
    ts = TrainingSet(train, train.iloc[:0], pd.DataFrame({"user_id": []}), pd.DataFrame(), {})
    for before, rows in (("holdout", train), ("val", train[train["split"] == "train"])):
        ordered = rows.sort_values("event_timestamp", kind="stable")
        for k in (1, 7, 50):
            want = ordered.groupby("user_id")["item_id"].agg(lambda s, k=k: s.tolist()[-k:])
            want = want.to_dict()
            got = ts.histories(k, before=before)
            assert got == want and list(got) == list(want)
    assert ts.histories(0) == {}


def test_history_is_strictly_before_and_same_second_rows_share_it():
    users = np.array([0, 0, 0, 0, 1, 1])
    stamps = np.array([10, 20, 20, 30, 5, 6])
    items = np.array([1, 2, 3, 4, 5, 6])
    h = history_index(users, stamps, items, 2)
    # same second (rows 1, 2): neither sees the other; row 3 sees the two latest, newest first
    assert h.tolist() == [[0, 0], [1, 0], [1, 0], [3, 2], [0, 0], [5, 0]]
    shuffled = np.array([3, 0, 5, 2, 1, 4])
    again = history_index(users[shuffled], stamps[shuffled], items[shuffled], 2)
    # row order does not matter (same-second items may swap places in a history)
    assert [sorted(r) for r in again.tolist()] == [sorted(r) for r in h[shuffled].tolist()]


def test_genres_are_a_bag_and_recent_items_personalise_a_new_user():
    import torch

    train = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["m1", "m2", "m3", "m1"],
            "event_timestamp": pd.to_datetime([1, 2, 3, 4], unit="D", utc=True),
            "item_category": ["Drama|War", "Comedy", "Drama", "Drama|War"],
        }
    )
    items = train.drop_duplicates("item_id")[["item_id", "item_category"]]
    cols = {
        "user_numeric": [],
        "user_categorical": [],
        "item_numeric": [],
        "item_categorical": ["item_category"],
    }
    from training.model import FeatureColumns

    enc = FeatureEncoder.fit(train, pd.DataFrame(), items, FeatureColumns(**cols))
    assert enc.item.categorical["item_category"] == ["Comedy", "Drama", "War"]
    bag = enc.item.encode(["m1", "m2"], items.iloc[:2].reset_index(drop=True))["cat"]
    assert bag.shape == (2, 1, 2) and bag[0, 0].tolist() == [2, 3] and bag[1, 0].tolist() == [1, 0]
    cfg = TrainingConfig().model
    torch.manual_seed(0)
    retriever = Retriever(TwoTower(enc, cfg), enc, items, histories={"a": ["m1", "m2"]})
    blank, _ = retriever.recommend(["new-1", "new-2"], 3)
    assert blank[0] == blank[1]  # nothing known: the same non-personal ranking
    with_recent = retriever.user_embeddings(["new-1", "new-2"], recent=[["m3"], ["m2"]])
    assert not torch.allclose(with_recent[0], with_recent[1])
    # a known user's stored history is used; recent items extend it
    assert retriever.user_history(["a", "z"], [["m3"], None]) == [["m1", "m2", "m3"], []]


@pytest.mark.parametrize("value", ["all", "30"])
def test_window_days_all_or_a_number(value):
    cfg = TrainingConfig.load(None, [f"data.window_days={value}"])
    assert cfg.data.window_days == (value if value == "all" else int(value))
