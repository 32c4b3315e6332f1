"""The training set through the engine: DuckDB's point-in-time join equals Feast's, day by day.

One small simulated lake with features and one Feast repo for the module (``apply`` is the slow
step). The oracle is :func:`features.store.build_training_frame` (Feast's
``get_historical_features`` on the file offline store) and, for whole sets, the in-memory path
it feeds (:func:`training.data.join_features` and friends), written and loaded as before.
"""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pandas as pd
import pytest

from core.engine import Engine
from core.lake import FEATURES, VALIDATED
from features import store as fstore
from features.compute import FeatureError
from features.pit import point_in_time
from simulation.simulator import DEFAULT_START
from training import data as tdata
from training.config import TrainingConfig

DAYS = [DEFAULT_START + dt.timedelta(days=k) for k in range(6)]
FEATURED = DAYS[:5]  # day 5 (the holdout) reads day 4's features


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(tmp_path_factory.mktemp("pit") / "fw"))
        mp.delenv("FLYWHEEL_LAKE_URI", raising=False)
        mp.setenv("FLYWHEEL_FEAST_PROJECT", "flywheel_pit")
        from core.lake import get_lake
        from tests.fixtures.lake import write_simulated, write_table

        lake = get_lake()
        write_simulated(lake, days=len(DAYS), users=150, items=60, seed=11)
        # a second file on day 2: the same user rating three items in the same second, twice
        # the same pair, and an event at midnight exactly
        ev = lake.read("events", [DAYS[2]]).to_pandas().head(1)
        user, t = ev["user_id"].iloc[0], pd.Timestamp(DAYS[2], tz="UTC")
        extra = pd.DataFrame(
            {
                "event_id": [f"same-{k}" for k in range(5)],
                "user_id": [user] * 5,
                "item_id": [ev["item_id"].iloc[0], "x-new", ev["item_id"].iloc[0], "x-new", "x-2"],
                "event_type": ["rating", "rating", "rating", "purchase", "click"],
                "value": [5.0, 4.0, 5.0, 1.0, 1.0],
                "event_ts": [t + pd.Timedelta(hours=7)] * 4 + [t],
            }
        )
        key = write_table(lake, "events", DAYS[2], extra)
        lake.move(key, key.replace("part-00000", "part-00001"))
        for day in FEATURED:
            fstore.compute_day(day)
        fstore.apply_if_changed()
        yield lake
    fstore._STORES.clear()


def _entity(lake) -> pd.DataFrame:
    ev = lake.read("events", DAYS).to_pandas()
    ent = ev[["user_id", "item_id", "event_ts"]].rename(columns={"event_ts": "event_timestamp"})
    return ent.assign(label=np.arange(len(ent)))


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal row for row; a missing string is None from Arrow and NaN from Feast."""
    strings = [c for c in want.columns if want[c].dtype == object]
    for frame in (got, want):
        frame[strings] = frame[strings].astype(object).where(frame[strings].notna(), None)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    for c in want.columns:
        assert got[c].dtype.kind == want[c].dtype.kind, c


def test_duckdb_join_equals_feast_row_for_row(repo):
    ent = _entity(repo)
    ent = ent[ent["event_timestamp"] >= pd.Timestamp(DAYS[1], tz="UTC")].reset_index(drop=True)
    ent = ent.sample(frac=1.0, random_state=3).reset_index(drop=True)  # order is the caller's
    want = fstore.build_training_frame(ent)
    got = point_in_time(ent).to_pandas()
    _same(got, want)
    _same(point_in_time(ent, sql=True).to_pandas(), want)  # the DuckDB SQL join: the same
    # same-second rows of one user stay distinct rows; the midnight row reads the day before
    same = got[got["event_timestamp"] == pd.Timestamp(DAYS[2], tz="UTC") + pd.Timedelta(hours=7)]
    assert len(same) >= 4 and same["user_views_28d"].notna().all()
    # an unknown item (not in the catalog) gets nulls, in both
    assert got.loc[got["item_id"] == "x-new", "item_views_28d"].isna().all()


def test_duckdb_join_first_days_and_ttl_edges_equal_feast(repo):
    ent = _entity(repo)  # day 0 has no features before it: nulls (missing_ok)
    late = pd.Timestamp(FEATURED[-1] + dt.timedelta(days=3), tz="UTC")
    edges = pd.DataFrame(
        {
            "user_id": ent["user_id"].iloc[:4].tolist(),
            "item_id": ent["item_id"].iloc[:4].tolist(),
            # three days after the last features: at midnight still within the TTL, later not
            "event_timestamp": [
                late,
                late,
                late + pd.Timedelta(seconds=1),
                late - pd.Timedelta(1, "us"),
            ],
            "label": [-1, -2, -3, -4],
        }
    )
    ent = pd.concat([ent, edges], ignore_index=True)
    want = fstore.build_training_frame(ent, missing_ok=True)
    got = point_in_time(ent, missing_ok=True).to_pandas()
    _same(got, want)
    _same(point_in_time(ent, missing_ok=True, sql=True).to_pandas(), want)
    first = got["event_timestamp"].dt.date == DAYS[0]
    assert first.any() and got.loc[first, "user_views_28d"].isna().all()
    tail = got.set_index("label").loc[[-1, -3, -4], "user_views_28d"]
    assert tail.loc[-1] == tail.loc[-4] and np.isnan(tail.loc[-3])


def test_duckdb_join_refuses_a_gap_longer_than_the_ttl(repo):
    late = pd.Timestamp(FEATURED[-1] + dt.timedelta(days=3, hours=10), tz="UTC")
    ent = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "event_timestamp": [late]})
    missing = (late - pd.Timedelta(days=1)).date()
    with pytest.raises(FeatureError, match=rf"view 'user_stats', day {missing}"):
        point_in_time(ent)
    with pytest.raises(FeatureError, match="lack column"):
        point_in_time(ent.drop(columns=["item_id"]))
    with pytest.raises(FeatureError, match="empty"):
        point_in_time(ent.iloc[:0])


def _old_set(lake, end: dt.date, cfg, folder) -> tdata.TrainingSet:
    """The set as it was built before the engine: whole window in pandas, Feast's join."""
    w = tdata.window(end, cfg)
    days, missing = tdata.window_days(lake, w, cfg.feature_source)
    w["val_start"] = tdata.validation_start(days, w, cfg)
    events = tdata.read_validated(lake, "events", days)
    before, holdout = tdata.temporal_split(tdata.positives(events, cfg), w, cfg)
    train, filled = tdata.join_features(lake, before, cfg.feature_source, w["end"])
    users, items = tdata.snapshots(lake, cfg.feature_source, w["holdout_start"], w["end"])
    extra = sorted(set(before["item_id"]) - set(items["item_id"]))  # x-new, x-2
    items = pd.concat([items, pd.DataFrame({"item_id": extra})], ignore_index=True)
    cols = tdata.feature_columns(cfg.feature_source)
    item_cols = tdata.FeatureColumns([], [], cols.item_numeric, cols.item_categorical)
    items = tdata.fill_missing(items, item_cols)[0]
    frames = {
        "train": train,
        "holdout": holdout,
        "users": users,
        "items": items,
        "interacted": tdata.interactions_before(events, w),
    }
    meta = {
        "filled": filled,
        "feature_columns": tdata.feature_columns(cfg.feature_source).to_dict(),
    }
    return tdata.load_training_set(tdata.write_training_set(lake, frames, meta, folder))


@pytest.mark.parametrize("source", ["feast", "contract"])
def test_engine_build_writes_shards_and_loads_the_same_frames(repo, tmp_path, source):
    cfg = TrainingConfig.load(None, [f"data.feature_source={source}", "data.window_days=6"]).data
    end = DAYS[-1]
    want = _old_set(repo, end, cfg, tmp_path / "old")
    summary = tdata.build_training_set(repo, end, cfg, tmp_path / "new")
    got = tdata.load_training_set(summary["location"])
    shards = tdata.train_shards(summary["location"])
    assert [p.rsplit("/", 1)[-1] for p in shards] == [
        f"part-{d.isoformat()}.parquet" for d in DAYS[:-1]
    ]
    assert got.meta["train_shards"] == [p.rsplit("/", 1)[-1] for p in shards]
    assert got.meta["engine"] == "duckdb" and got.meta["filled"] == want.meta["filled"]
    for name in ("train", "holdout", "users", "items", "interacted"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name), obj=name)
    assert got.meta["rows"]["train"] + got.meta["rows"]["val"] == len(got.train)
    assert got.meta["users"] == want.train["user_id"].nunique()
    flagged = got.meta["rows_with_missing_features"]
    assert flagged["user"] == int(want.train["user_features_missing"].sum())
    assert flagged["item"] == int(want.train["item_features_missing"].sum()) > 0  # x-new, x-2
    # the shards are complete: no value left missing, for a trainer that reads them itself
    import pyarrow.parquet as pq

    for path in shards:
        table = pq.read_table(path)
        assert sum(table[c].null_count for c in table.column_names) == 0, path


def test_a_piece_reads_only_its_day(repo, tmp_path, monkeypatch):
    asked: list[tuple[str | None, str, str, tuple]] = []
    current = threading.local()  # pieces run in the engine's worker threads, several at once
    files = Engine.files

    def spy(self, zone, table, days=None):
        asked.append((getattr(current, "day", None), zone, table, tuple(sorted(days or ()))))
        return files(self, zone, table, days)

    piece = tdata.train_piece

    def traced(days, **kw):
        assert len(days) == 1  # a short window: one day a piece
        current.day = days[0]
        try:
            return piece(days, **kw)
        finally:
            current.day = None

    monkeypatch.setattr(Engine, "files", spy)
    monkeypatch.setattr(tdata, "train_piece", traced)
    cfg = TrainingConfig.load(None, ["data.window_days=6"]).data
    tdata.build_training_set(repo, DAYS[-1], cfg, tmp_path / "set")
    pieces = [a for a in asked if a[0] is not None]
    assert {a[0] for a in pieces} == set(DAYS[:-1])
    for day, zone, table, days in pieces:
        if zone == VALIDATED:
            assert (table, days) == ("events", (day,))
        else:  # the one partition per view a row of that day reads (none before day 0)
            assert zone == FEATURES and days == (day - dt.timedelta(days=1),), (day, table, days)
    assert {(a[1], a[2]) for a in pieces} >= {(VALIDATED, "events"), (FEATURES, "user_stats")}


def test_a_long_history_is_cut_into_at_most_max_pieces_of_consecutive_days():
    days = [dt.date(2001, 1, 1) + dt.timedelta(days=k) for k in range(4110)]
    pieces = tdata.piece_days(days)
    assert len(pieces) <= tdata.MAX_PIECES and [d for p in pieces for d in p] == days
    assert all(p[-1] - p[0] == dt.timedelta(days=len(p) - 1) for p in pieces)
    assert tdata.piece_days(days[:14]) == [[d] for d in days[:14]]
    assert tdata.piece_days([]) == []


def test_a_set_in_the_lake_replaces_an_earlier_one(repo):
    cfg = TrainingConfig.load(None, ["data.feature_source=contract", "data.window_days=6"]).data
    first = tdata.build_training_set(repo, DAYS[-1], cfg)
    assert first["location"] == f"training_sets/dt={DAYS[-1].isoformat()}/"
    assert len(tdata.train_shards(first["location"], repo)) == 5
    short = TrainingConfig.load(None, ["data.feature_source=contract", "data.window_days=3"]).data
    again = tdata.build_training_set(repo, DAYS[-1], short)
    keys = tdata.train_shards(again["location"], repo)
    assert keys == [f"{again['location']}train/part-{d.isoformat()}.parquet" for d in DAYS[3:5]]
    # the shards of the 6-day set are gone: the prefix holds exactly the new set
    assert [k for k in repo.list(again["location"]) if "/train/" in k] == keys
    ts = tdata.load_training_set(again["location"], repo)
    assert len(ts.train) == ts.meta["rows"]["train"] + ts.meta["rows"]["val"] > 0
