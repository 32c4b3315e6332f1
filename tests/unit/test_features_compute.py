"""Feature values against a hand-computed case; missing inputs and partitions; DAG helpers."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from features.columns import ITEM_FEATURES, USER_FEATURES
from features.compute import (
    FeatureError,
    compute_features,
    compute_range,
    feature_key,
    read_features,
)
from features.pipeline import asset_metadata, days_from_events, unbuilt_days
from tests.fixtures.lake import write_table

D1, D2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
U1, U2 = "p_" + "1" * 24, "p_" + "2" * 24


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def _events(rows):
    return pd.DataFrame(
        rows, columns=["event_id", "user_id", "item_id", "event_type", "value", "event_ts"]
    )


@pytest.fixture
def hand_lake(lake):
    """Two users, three items (C created on day 2), eight events over two days."""
    write_table(
        lake,
        "users",
        D1,
        pd.DataFrame(
            {
                "user_id": [U1, U2],
                "signup_ts": [ts("2026-03-01 00:00"), ts("2026-03-01 12:00")],
                "country": ["DE", "FR"],
                "age_bucket": ["25-34", "18-24"],
            }
        ),
    )
    items = pd.DataFrame(
        {
            "item_id": ["A", "B"],
            "category": ["books", "toys"],
            "price": [10.0, 5.0],
            "created_ts": [ts("2026-03-01 00:00"), ts("2026-03-01 06:00")],
        }
    )
    write_table(lake, "items", D1, items)
    write_table(
        lake,
        "items",
        D2,
        pd.DataFrame(
            {
                "item_id": ["C"],
                "category": ["games"],
                "price": [7.5],
                "created_ts": [ts("2026-03-02 12:00")],
            }
        ),
    )
    write_table(
        lake,
        "events",
        D1,
        _events(
            [
                ("e1", U1, "A", "view", 1.0, ts("2026-03-01 10:00")),
                ("e2", U1, "A", "click", 1.0, ts("2026-03-01 10:01")),
                ("e3", U1, "B", "view", 1.0, ts("2026-03-01 11:00")),
                ("e4", U2, "A", "view", 1.0, ts("2026-03-01 13:00")),
            ]
        ),
    )
    write_table(
        lake,
        "events",
        D2,
        _events(
            [
                ("e5", U1, "A", "purchase", 1.0, ts("2026-03-02 09:00")),
                ("e6", U1, "A", "rating", 4.0, ts("2026-03-02 09:30")),
                ("e7", U1, "C", "view", 1.0, ts("2026-03-02 18:00")),
                ("e8", U2, "B", "view", 1.0, ts("2026-03-02 20:00")),
            ]
        ),
    )
    return lake


def _row(df, key, value):
    rows = df[df[key] == value]
    assert len(rows) == 1, f"expected one row for {value}"
    return rows.iloc[0]


def test_user_features_match_hand_computed_values(hand_lake):
    summary = compute_features(hand_lake, D2)
    assert summary.rows == {"user_stats": 2, "item_stats": 3}
    users = read_features(hand_lake, "user_stats", D2, D2)
    u1 = _row(users, "user_id", U1)
    assert (u1.user_views_1d, u1.user_views_7d, u1.user_views_28d) == (1, 3, 3)
    assert (u1.user_clicks_1d, u1.user_clicks_7d) == (0, 1)
    assert (u1.user_purchases_1d, u1.user_ratings_1d, u1.user_carts_28d) == (1, 1, 0)
    assert u1.user_ctr_28d == pytest.approx(1 / 3)
    assert u1.user_purchase_rate_28d == pytest.approx(1 / 3)
    assert u1.user_mean_rating_28d == pytest.approx(4.0)
    assert u1.user_days_since_last_event == pytest.approx(0.25)  # 18:00 → midnight
    assert u1.user_active_days_28d == 2
    assert u1.user_tenure_days == pytest.approx(2.0)
    assert (u1.user_top_category, u1.user_top_category_share) == ("books", pytest.approx(4 / 6))
    assert (u1.user_country, u1.user_age_bucket) == ("DE", "25-34")
    u2 = _row(users, "user_id", U2)
    assert (u2.user_views_1d, u2.user_views_7d, u2.user_ctr_28d) == (1, 2, 0.0)
    assert u2.user_mean_rating_28d == 0.0
    assert u2.user_days_since_last_event == pytest.approx(4 / 24)
    assert u2.user_tenure_days == pytest.approx(1.5)
    # tie between books and toys (one event each): alphabetical
    assert (u2.user_top_category, u2.user_top_category_share) == ("books", 0.5)
    assert (users["event_timestamp"] == ts("2026-03-03 00:00")).all()
    assert list(users.columns[1 : 1 + len(USER_FEATURES)]) == USER_FEATURES


def test_item_features_match_hand_computed_values(hand_lake):
    compute_features(hand_lake, D2)
    items = read_features(hand_lake, "item_stats", D2, D2)
    a = _row(items, "item_id", "A")
    assert (a.item_views_1d, a.item_views_28d, a.item_clicks_28d, a.item_purchases_1d) == (
        0,
        2,
        1,
        1,
    )
    assert (a.item_ctr_28d, a.item_conversion_28d, a.item_mean_rating_28d) == (0.5, 0.5, 4.0)
    assert (a.item_age_days, a.item_price, a.item_category) == (2.0, 10.0, "books")
    b = _row(items, "item_id", "B")
    assert (b.item_views_1d, b.item_views_7d, b.item_ctr_28d) == (1, 2, 0.0)
    assert b.item_age_days == pytest.approx(1.75)
    c = _row(items, "item_id", "C")
    assert (c.item_views_1d, c.item_age_days, c.item_category) == (1, 0.5, "games")
    assert list(items.columns[1 : 1 + len(ITEM_FEATURES)]) == ITEM_FEATURES


def test_day_one_sees_nothing_of_day_two(hand_lake):
    compute_features(hand_lake, D1)
    users = read_features(hand_lake, "user_stats", D1, D1)
    assert _row(users, "user_id", U1).user_views_1d == 2
    assert _row(users, "user_id", U1).user_purchases_28d == 0
    items = read_features(hand_lake, "item_stats", D1, D1)
    assert set(items["item_id"]) == {"A", "B"}  # C is created on day 2


def test_recompute_is_idempotent(hand_lake):
    compute_features(hand_lake, D2)
    first = hand_lake.read_bytes(feature_key("user_stats", D2))
    compute_features(hand_lake, D2)
    assert hand_lake.read_bytes(feature_key("user_stats", D2)) == first
    assert hand_lake.list("features/user_stats/") == [feature_key("user_stats", D2)]


def test_missing_validated_events_is_a_clear_error(hand_lake):
    with pytest.raises(FeatureError, match=r"no validated events for 2026-03-05"):
        compute_features(hand_lake, dt.date(2026, 3, 5))


def test_missing_feature_partition_names_view_and_day(hand_lake):
    compute_features(hand_lake, D2)
    with pytest.raises(FeatureError, match=r"view 'user_stats', day 2026-03-01"):
        read_features(hand_lake, "user_stats", D1, D2)
    with pytest.raises(FeatureError, match="unknown feature view"):
        read_features(hand_lake, "nope", D1, D2)


def test_a_gap_is_skipped_only_when_asked(hand_lake):
    compute_features(hand_lake, D2)  # D1 missing, as for a quarantined day
    df = read_features(hand_lake, "user_stats", D1, D2, skip_missing=True)
    assert set(df["day"]) == {D2}
    with pytest.raises(FeatureError, match="no feature partition of 'user_stats'"):
        read_features(hand_lake, "user_stats", D1, D1, skip_missing=True)


def test_unbuilt_days_are_validated_days_without_features(hand_lake):
    # what a build_features run catches up besides its triggering days
    before = D1 - dt.timedelta(days=1)
    assert unbuilt_days(hand_lake, before) == [D1.isoformat(), D2.isoformat()]
    assert unbuilt_days(hand_lake, D1) == [D2.isoformat()]  # only after the newest event
    compute_features(hand_lake, D1)
    assert unbuilt_days(hand_lake, before) == [D2.isoformat()]
    compute_features(hand_lake, D2)
    assert unbuilt_days(hand_lake, before) == []


def test_window_read_adds_day_column(hand_lake):
    compute_features(hand_lake, D1)
    compute_features(hand_lake, D2)
    df = read_features(hand_lake, "item_stats", D1, D2)
    assert df.groupby("day").size().to_dict() == {D1: 2, D2: 3}


def test_days_from_asset_events():
    extras = [
        {"date": "2026-03-02"},
        {"date": "2026-03-01", "rows": 3},
        None,
        {"date": "2026-03-02"},
    ]
    assert days_from_events(extras, None) == ["2026-03-01", "2026-03-02"]
    assert days_from_events([], "2026-03-04") == ["2026-03-04"]
    assert days_from_events([{}], None) == []
    with pytest.raises(FeatureError, match="not a day"):
        days_from_events([{"date": "yesterday"}], None)
    # a bulk ingest's one event for a range ("days" there is a count): its validated days
    validated = [dt.date(2026, 3, d) for d in (1, 2, 5, 9)]
    bulk = [{"date": "2026-03-05", "start": "2026-03-01", "end": "2026-03-06", "days": 3}]
    assert days_from_events(bulk, None, validated) == ["2026-03-01", "2026-03-02", "2026-03-05"]
    assert days_from_events([{"days": ["2026-03-02", "2026-03-01"]}], None) == [
        "2026-03-01",
        "2026-03-02",
    ]
    # a manual range run: the day and end Params, only days with validated events
    assert days_from_events([], "2026-03-02", validated, "2026-03-09") == [
        "2026-03-02",
        "2026-03-05",
        "2026-03-09",
    ]
    with pytest.raises(FeatureError, match="the end is before the start"):
        days_from_events([], "2026-03-02", validated, "2026-03-01")


def test_asset_metadata_reports_newest_day():
    mat = [
        {"day": "2026-03-01", "interval": ["a", "b"], "rows": {"user_stats": 2, "item_stats": 2}},
        {"day": "2026-03-02", "interval": ["c", "d"], "rows": {"user_stats": 2, "item_stats": 3}},
    ]
    meta = asset_metadata(mat, {"day": "2026-03-02"})
    assert meta["date"] == "2026-03-02" and meta["days"] == ["2026-03-01", "2026-03-02"]
    assert meta["rows_total"] == 9 and meta["interval"] == ["c", "d"] and meta["restored"] == []
    # re-running 03-01 when 03-02 exists: 03-02 is re-materialized, but the run built 03-01
    rerun = [mat[0], {**mat[1], "restored": True}]
    meta = asset_metadata(rerun, {})
    assert (meta["date"], meta["days"], meta["restored"]) == (
        "2026-03-01",
        ["2026-03-01"],
        ["2026-03-02"],
    )
    assert meta["rows_total"] == 4
    # a run over a range says so
    meta = asset_metadata(mat[1:], {}, {"days": 40, "first": "2026-01-22", "last": "2026-03-02"})
    assert meta["range"] == {"first": "2026-01-22", "last": "2026-03-02", "days": 40}
    assert "range" not in asset_metadata(mat[1:], {}, {"days": 1, "first": "x", "last": "x"})


def _files(lake, view: str) -> dict[str, bytes]:
    return {k: lake.read_bytes(k) for k in lake.list(f"features/{view}/")}


def test_a_range_in_one_pass_writes_what_day_by_day_writes(hand_lake):
    D4 = dt.date(2026, 3, 4)  # D3 has no events at all (a gap, as in real histories)
    write_table(
        hand_lake,
        "events",
        D4,
        _events(
            [
                ("e9", U2, "C", "rating", 5.0, ts("2026-03-04 08:00")),
                ("e10", U1, "B", "click", 1.0, ts("2026-03-04 09:00")),
                ("e11", U2, "A", "rating", 2.0, ts("2026-03-04 10:00")),
            ]
        ),
    )
    out = compute_range(hand_lake, D1, D4)
    assert [s.day for s in out] == ["2026-03-01", "2026-03-02", "2026-03-04"]
    assert out[-1].missing_event_days == ["2026-03-03"] and out[-1].event_days == 3
    ranged = {v: _files(hand_lake, v) for v in ("user_stats", "item_stats")}
    hand_lake.delete_prefix("features/")
    for day in (D1, D2, D4):
        compute_features(hand_lake, day)
    assert {v: _files(hand_lake, v) for v in ranged} == ranged  # byte for byte
    # only some days of a range; a day without validated events is an error naming it
    hand_lake.delete_prefix("features/")
    assert [s.day for s in compute_range(hand_lake, D1, D4, days=[D4])] == ["2026-03-04"]
    assert hand_lake.list("features/user_stats/") == [feature_key("user_stats", D4)]
    with pytest.raises(FeatureError, match="no validated events for 2026-03-03"):
        compute_range(hand_lake, D1, D4, days=[dt.date(2026, 3, 3)])
    with pytest.raises(FeatureError, match="empty range"):
        compute_range(hand_lake, D4, D1)


def test_a_category_of_several_genres_counts_for_each(lake):
    """MovieLens imports keep every genre (``Action|Comedy``): the top category is a genre."""
    write_table(
        lake,
        "users",
        D1,
        {
            "user_id": [U1],
            "signup_ts": [ts("2026-03-01")],
            "country": ["US"],
            "age_bucket": ["25-34"],
        },
    )
    write_table(
        lake,
        "items",
        D1,
        {
            "item_id": ["A", "B", "C"],
            "category": ["Action|Comedy", "Comedy|Drama", "Action|Adventure"],
            "price": [0.0, 0.0, 0.0],
            "created_ts": [ts("2026-03-01")] * 3,
        },
    )
    rows = [
        (f"e{k}", U1, item, "rating", 4.0, ts("2026-03-01 10:00")) for k, item in enumerate("ABC")
    ]
    write_table(lake, "events", D1, _events(rows))
    compute_features(lake, D1)
    u1 = _row(read_features(lake, "user_stats", D1, D1), "user_id", U1)
    # Action: 2 of 3 events, Comedy: 2 of 3 (tie: alphabetical), Adventure 1, Drama 1
    assert (u1.user_top_category, u1.user_top_category_share) == ("Action", pytest.approx(2 / 3))
    items = read_features(lake, "item_stats", D1, D1).set_index("item_id")
    assert items.loc["A", "item_category"] == "Action|Comedy"  # the item keeps all of them
