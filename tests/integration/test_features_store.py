"""The embedded feature store end to end: apply, materialize, freshness, online, training frames.

One small lake (30 users, 10 items, 4 days) and one Feast repo for the module: ``apply`` is the
slow step, so it runs once.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from features import store as fstore
from features.columns import (
    ITEM_CATEGORICAL,
    ITEM_FEATURES,
    USER_CATEGORICAL,
    USER_FEATURES,
)
from features.compute import FeatureError, read_features
from tests.fixtures.lake import item_id, user_id, write_validated

START = dt.date(2026, 2, 1)
DAYS = [START + dt.timedelta(days=k) for k in range(4)]
N_USERS, N_ITEMS = 30, 10


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(tmp_path_factory.mktemp("features") / "fw"))
        mp.delenv("FLYWHEEL_LAKE_URI", raising=False)
        mp.setenv("FLYWHEEL_FEAST_PROJECT", "flywheel_it")
        from core.lake import get_lake

        lake = get_lake()
        write_validated(
            lake, START, len(DAYS), n_users=N_USERS, n_items=N_ITEMS, events_per_day=250, seed=7
        )
        for day in DAYS:
            fstore.compute_day(day)
        first = fstore.apply_if_changed()
        yield {"lake": lake, "first_apply": first}
    fstore._STORES.clear()


def _online(users, items):
    return fstore.online_features(user_ids=users, item_ids=items)


def test_apply_only_when_definitions_changed(repo):
    assert repo["first_apply"]["applied"] is True
    assert "feature_service recommender_v1: create" in repo["first_apply"]["changes"]
    assert fstore.apply_if_changed() == {"applied": False, "changes": []}
    names = {fs.name for fs in fstore.get_store().list_feature_services()}
    assert names == {"recommender_v1"}


def test_materialize_is_idempotent_and_online_equals_latest_offline(repo):
    day = DAYS[2]
    users = [user_id(i) for i in range(N_USERS)]
    items = [item_id(i) for i in range(N_ITEMS)]
    fstore.materialize_day(DAYS[1])
    summary = fstore.materialize_day(day)
    assert summary["rows"] == {"user_stats": N_USERS, "item_stats": N_ITEMS}
    assert summary["interval"] == ["2026-02-03T00:00:00.000001+00:00", "2026-02-04T00:00:00+00:00"]
    first = _online(users, items)
    fstore.materialize_day(day)  # again: same state
    second = _online(users, items)
    pd.testing.assert_frame_equal(first["users"], second["users"])
    pd.testing.assert_frame_equal(first["items"], second["items"])

    offline = read_features(repo["lake"], "user_stats", day, day).set_index("user_id").loc[users]
    online = second["users"].set_index("user_id")
    for col in USER_FEATURES + USER_CATEGORICAL:
        np.testing.assert_array_equal(online[col].to_numpy(), offline[col].to_numpy(), err_msg=col)
    offline_i = read_features(repo["lake"], "item_stats", day, day).set_index("item_id").loc[items]
    online_i = second["items"].set_index("item_id")
    for col in ITEM_FEATURES + ITEM_CATEGORICAL:
        np.testing.assert_array_equal(
            online_i[col].to_numpy(), offline_i[col].to_numpy(), err_msg=col
        )
    # the online values are day 2's, not day 1's (which differ for at least one user)
    prev = (
        read_features(repo["lake"], "user_stats", DAYS[1], DAYS[1]).set_index("user_id").loc[users]
    )
    assert (prev["user_views_1d"].to_numpy() != online["user_views_1d"].to_numpy()).any()


def test_freshness_passes_for_materialized_day_and_fails_when_stale(repo):
    fstore.materialize_day(DAYS[2])
    report = fstore.check_freshness(DAYS[2])
    assert report["user_stats"]["checked"] == N_USERS and report["user_stats"]["lag_seconds"] == 0
    with pytest.raises(
        FeatureError, match=r"stale online features for view 'user_stats_fv' on 2026-02-04"
    ):
        fstore.check_freshness(DAYS[3])


def test_training_frame_is_point_in_time_correct(repo):
    rng = np.random.default_rng(3)
    n = 120
    day_idx = rng.integers(1, 4, n)  # rows on days 2..4: features of days 1..3 exist
    base = pd.to_datetime([str(DAYS[i]) for i in day_idx]).tz_localize("UTC")
    offsets = pd.to_timedelta(rng.integers(0, 86_400_000_000, n), unit="us")
    stamps = base + offsets
    # the edges: exactly at midnight (the previous day's values just became known) and 1 µs before
    stamps = stamps.append(
        pd.DatetimeIndex(
            [
                pd.Timestamp(DAYS[2], tz="UTC"),
                pd.Timestamp(DAYS[2], tz="UTC") - pd.Timedelta(1, "us"),
            ]
        )
    )
    m = len(stamps)
    entity = pd.DataFrame(
        {
            "user_id": [user_id(i) for i in rng.integers(0, N_USERS, m)],
            "item_id": [item_id(i) for i in rng.integers(0, N_ITEMS, m)],
            "event_timestamp": stamps,
            "label": rng.integers(0, 2, m),
        }
    )
    frame = fstore.build_training_frame(entity)
    assert len(frame) == m
    assert list(frame.columns[:4]) == ["user_id", "item_id", "event_timestamp", "label"]
    frame = frame.sort_values(["event_timestamp", "user_id", "item_id"]).reset_index(drop=True)

    lake = repo["lake"]
    users = read_features(lake, "user_stats", DAYS[0], DAYS[3])
    items = read_features(lake, "item_stats", DAYS[0], DAYS[3])
    # expected: values of the day that ended last at or before the row's time (known_at ≤ t)
    known = (frame["event_timestamp"].dt.floor("D") - pd.Timedelta(days=1)).dt.date
    exp_u = frame[["user_id"]].assign(day=known).merge(users, on=["user_id", "day"], how="left")
    exp_i = frame[["item_id"]].assign(day=known).merge(items, on=["item_id", "day"], how="left")
    for col in USER_FEATURES + USER_CATEGORICAL:
        np.testing.assert_array_equal(frame[col].to_numpy(), exp_u[col].to_numpy(), err_msg=col)
    for col in ITEM_FEATURES + ITEM_CATEGORICAL:
        np.testing.assert_array_equal(frame[col].to_numpy(), exp_i[col].to_numpy(), err_msg=col)

    # no leakage, stated directly: the value of the row's own day (known only at its end) differs
    # from what the row got in many rows, so a join that leaked would have failed above
    same_day = (
        frame[["user_id"]]
        .assign(day=frame["event_timestamp"].dt.date)
        .merge(users, on=["user_id", "day"], how="left")
    )
    assert (
        same_day["user_views_1d"].to_numpy() != frame["user_views_1d"].to_numpy()
    ).sum() > m // 3
    edge = frame[frame["event_timestamp"] == pd.Timestamp(DAYS[2], tz="UTC")].iloc[0]
    assert (
        edge["user_views_28d"]
        == users[(users.user_id == edge.user_id) & (users.day == DAYS[1])].user_views_28d.iloc[0]
    )


def test_training_frame_reads_through_a_one_day_gap_within_the_ttl(repo):
    # features exist up to DAYS[3]; a row two days later (its previous day quarantined, say)
    # still reads DAYS[3]'s values: the views' TTL is 2 days
    row_day = DAYS[3] + dt.timedelta(days=2)
    entity = pd.DataFrame(
        {
            "user_id": [user_id(0)],
            "item_id": [item_id(0)],
            "event_timestamp": [pd.Timestamp(f"{row_day} 10:00", tz="UTC")],
        }
    )
    frame = fstore.build_training_frame(entity)
    users = read_features(repo["lake"], "user_stats", DAYS[3], DAYS[3])
    expected = users.set_index("user_id").loc[user_id(0)]
    for col in USER_FEATURES:
        assert frame.loc[0, col] == expected[col], col


def test_training_frame_without_feature_partition_is_an_error(repo):
    row_day = DAYS[3] + dt.timedelta(days=3)  # beyond the TTL: no features to read
    entity = pd.DataFrame(
        {
            "user_id": [user_id(0)],
            "item_id": [item_id(0)],
            "event_timestamp": [pd.Timestamp(f"{row_day} 10:00", tz="UTC")],
        }
    )
    missing = row_day - dt.timedelta(days=1)
    with pytest.raises(FeatureError, match=rf"view 'user_stats', day {missing}"):
        fstore.build_training_frame(entity)
    with pytest.raises(FeatureError, match="lack column"):
        fstore.build_training_frame(entity.drop(columns=["item_id"]))
    with pytest.raises(FeatureError, match=r"view 'user_stats', day 2026-02-09"):
        fstore.materialize_day(dt.date(2026, 2, 9))


def test_cli_features_get_prints_online_features(repo):
    from typer.testing import CliRunner

    from core.privacy import pseudonymise
    from flywheel.cli import app

    fstore.materialize_day(DAYS[3])
    runner = CliRunner()
    res = runner.invoke(app, ["features", "get", "--pseudonym", user_id(4), "--item", item_id(2)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    offline = (
        read_features(repo["lake"], "user_stats", DAYS[3], DAYS[3])
        .set_index("user_id")
        .loc[user_id(4)]
    )
    assert out["user"]["user_views_7d"] == offline["user_views_7d"]
    assert out["user"]["user_top_category"] == offline["user_top_category"]
    assert out["item"]["item_id"] == item_id(2) and "item_price" in out["item"]
    # a raw id is pseudonymised first; unknown ids are an error, not an empty vector
    res = runner.invoke(app, ["features", "get", "--user", "alice"])
    assert res.exit_code != 0
    assert pseudonymise("alice") in str(res.exception)
    # a pseudonym given as --user is a raw id like any other: hashed, so it finds nobody
    res = runner.invoke(app, ["features", "get", "--user", user_id(4)])
    assert res.exit_code != 0 and pseudonymise(user_id(4)) in str(res.exception)


def test_rerunning_an_old_day_does_not_roll_the_online_store_back(repo):
    fstore.materialize_day(DAYS[3])
    fstore.materialize_day(DAYS[1])  # plain re-run of an old day: SQLite overwrites
    with pytest.raises(FeatureError, match="stale online features"):
        fstore.check_freshness(DAYS[3])
    out = fstore.materialize_days([DAYS[1]])
    assert [(o["day"], o.get("restored", False)) for o in out] == [
        (DAYS[1].isoformat(), False),
        (DAYS[3].isoformat(), True),
    ]
    fstore.check_freshness(DAYS[3])


def test_a_range_materialized_once_equals_every_day_materialized(repo):
    from typer.testing import CliRunner

    from flywheel.cli import app

    users = [user_id(i) for i in range(N_USERS)]
    items = [item_id(i) for i in range(N_ITEMS)]
    fstore.materialize_days(DAYS)  # Feast's materialize, day by day
    day_by_day = _online(users, items)
    fstore.materialize_day(DAYS[0])  # roll the SQLite online store back
    out = fstore.materialize_range(DAYS[0], DAYS[-1])
    assert [(o["day"], o["range_days"]) for o in out] == [(DAYS[-1].isoformat(), len(DAYS))]
    assert out[0]["interval"] == ["2026-02-01T00:00:00.000001+00:00", "2026-02-05T00:00:00+00:00"]
    once = _online(users, items)
    for kind in ("users", "items"):
        pd.testing.assert_frame_equal(once[kind], day_by_day[kind])
    fstore.check_freshness(DAYS[-1])
    # a range that ends before the newest computed day leaves the newest online
    out = fstore.materialize_range(DAYS[0], DAYS[1])
    assert [(o["day"], o.get("restored", False)) for o in out] == [
        (DAYS[1].isoformat(), False),
        (DAYS[-1].isoformat(), True),
    ]
    fstore.check_freshness(DAYS[-1])
    with pytest.raises(FeatureError, match="no computed features between 2026-01-01"):
        fstore.materialize_range(dt.date(2026, 1, 1), dt.date(2026, 1, 31))
    # the CLI: compute + apply + materialize + check over a range, in one pass
    res = CliRunner().invoke(
        app, ["features", "build", "--start", DAYS[0].isoformat(), "--end", DAYS[-1].isoformat()]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["computed"]["days"] == len(DAYS) and summary["computed"]["last"] == "2026-02-04"
    assert summary["freshness"]["user_stats"]["lag_seconds"] == 0
    res = CliRunner().invoke(
        app, ["features", "build", "--start", "2026-01-01", "--end", "2026-01-31"]
    )
    assert res.exit_code != 0 and "no validated events between 2026-01-01" in str(res.exception)
