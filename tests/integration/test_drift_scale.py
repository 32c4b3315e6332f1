"""The drift check at scale: frames read through the engine, bounded and deterministic.

A synthetic lake of daily feature partitions with the real schema
(:func:`features.compute.arrow_schema`): 50k users and 5k items a day, two reference days and one
current day, with a small ``max_rows`` so every side is sampled. The frames must be capped (full
counts still reported), the same rows on every run and whatever order the files hold them in,
read through the engine with only the days and columns the check needs, and the drift decision
must still see an injected shift (and nothing without one), with the same scores as the whole
frames give, to sampling noise.

:func:`write_features` is also what the drift figures of a large lake are measured with
(1M users × 14 days; see the report of issue 17).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from core.engine import DuckDBEngine
from core.lake import FEATURES, RAW, Lake, partition_prefix
from core.names import ITEM_VIEW, USER_VIEW
from features.compute import arrow_schema, known_at
from monitoring.config import DriftConfig
from monitoring.frames import Scan, apportion, fair_quotas, feature_frame, served_frames
from monitoring.monitor import check_drift

START = dt.date(2026, 3, 2)
REFERENCE = (START, START + dt.timedelta(days=1))
CURRENT = START + dt.timedelta(days=2)
USERS, ITEMS = 50_000, 5_000
CAP = 20_000
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "CA")
AGES = ("18-24", "25-34", "35-44", "45-54", "55+")
CATEGORIES = tuple(f"cat{k:02d}" for k in range(20))


# --- a synthetic lake of feature partitions ----------------------------------------------------


def _table(view: str, columns: dict[str, np.ndarray], n: int, day: dt.date) -> pa.Table:
    """``columns`` as a partition of ``view`` (the real schema; other columns zero or null)."""
    schema = arrow_schema(view)
    ts = np.full(n, np.datetime64(known_at(day).replace(tzinfo=None), "us"))
    arrays = []
    for f in schema:
        if f.name in columns:
            arrays.append(pa.array(columns[f.name], type=f.type))
        elif pa.types.is_timestamp(f.type):
            arrays.append(pa.array(ts).cast(f.type))
        elif pa.types.is_string(f.type):
            arrays.append(pa.nulls(n, f.type))
        else:
            arrays.append(pa.array(np.zeros(n), type=pa.float64()).cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def feature_tables(
    day: dt.date, users: int, items: int, seed: int, shift: bool = False
) -> dict[str, pa.Table]:
    """One day of user and item feature rows; ``shift``: half the users come from Brazil."""
    rng = np.random.default_rng(seed)
    country_p = np.full(len(COUNTRIES), 1 / len(COUNTRIES))
    if shift:
        country_p = np.full(len(COUNTRIES), 0.5 / (len(COUNTRIES) - 1))
        country_p[COUNTRIES.index("BR")] = 0.5
    views = rng.poisson(1.0, users)
    clicks = rng.binomial(views, 0.3)
    user_cols = {
        "user_id": np.char.add("u", np.arange(users).astype(str)),
        "user_views_1d": views,
        "user_clicks_1d": clicks,
        "user_carts_1d": rng.binomial(clicks, 0.3),
        "user_purchases_1d": rng.binomial(clicks, 0.1),
        "user_top_category": np.asarray(CATEGORIES, dtype=object)[rng.integers(0, 20, users)],
        "user_country": np.asarray(COUNTRIES, dtype=object)[
            rng.choice(len(COUNTRIES), users, p=country_p)
        ],
        "user_age_bucket": np.asarray(AGES, dtype=object)[rng.integers(0, len(AGES), users)],
    }
    cat_p = np.arange(1, len(CATEGORIES) + 1, dtype=float)
    item_cols = {
        "item_id": np.char.add("i", np.arange(items).astype(str)),
        "item_views_1d": rng.poisson(users / items, items),
        "item_views_7d": rng.poisson(7 * users / items, items),
        "item_category": np.asarray(CATEGORIES, dtype=object)[
            rng.choice(len(CATEGORIES), items, p=cat_p / cat_p.sum())
        ],
        "item_price": rng.lognormal(3.0, 1.0, items),
    }
    return {
        USER_VIEW: _table(USER_VIEW, user_cols, users, day),
        ITEM_VIEW: _table(ITEM_VIEW, item_cols, items, day),
    }


def write_features(
    lake: Lake,
    days: list[dt.date],
    users: int,
    items: int,
    shift_days: tuple[dt.date, ...] = (),
    reverse: bool = False,
) -> None:
    """Feature partitions of ``days`` (seeded by the day: the same data in every lake);
    ``reverse`` writes each partition's rows in reverse order."""
    for day in days:
        tables = feature_tables(day, users, items, seed=day.toordinal(), shift=day in shift_days)
        for view, table in tables.items():
            if reverse:
                table = table.take(pa.array(np.arange(table.num_rows)[::-1]))
            lake.write(table, view, day, zone=FEATURES, replace=True)


def write_impressions(lake: Lake, day: dt.date, requests: int, items: int, clicked: float) -> None:
    """``requests`` slates of 5 items each and a click on the 2nd item of the first ``clicked``
    share of them (feedback events ``fb:<request_id>:0``)."""
    rids = [f"r{day:%m%d}-{n}" for n in range(requests)]
    shown = [[f"i{(n + k) % items}" for k in range(5)] for n in range(requests)]
    n_clicked = int(clicked * requests)
    imp = {"request_id": rids, "user_id": [f"u{n}" for n in range(requests)]}
    imp["item_ids"] = [json.dumps(s) for s in shown]
    events = {
        "event_id": [f"fb:{r}:0" for r in rids[:n_clicked]],
        "user_id": imp["user_id"][:n_clicked],
        "item_id": [s[1] for s in shown[:n_clicked]],
        "event_type": ["click"] * n_clicked,
    }
    for table, data in (("impressions", imp), ("events", events)):
        key = partition_prefix(RAW, table, day) + "serving-0.parquet"
        lake.write_parquet(key, pa.table(data))


def _lake(root, **kwargs) -> Lake:
    lake = Lake.from_uri(root.as_uri())
    write_features(lake, [*REFERENCE, CURRENT], USERS, ITEMS, **kwargs)
    return lake


@pytest.fixture(scope="module")
def stable(tmp_path_factory) -> Lake:
    return _lake(tmp_path_factory.mktemp("drift-scale-stable"))


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> Lake:
    return _lake(tmp_path_factory.mktemp("drift-scale-shifted"), shift_days=(CURRENT,))


CONFIG = DriftConfig(max_rows=CAP)


# --- the sample --------------------------------------------------------------------------------


def test_fair_quotas_share_the_cap_and_keep_small_parts_whole():
    assert fair_quotas([10, 20], 100) == [10, 20]  # fits: everything
    assert fair_quotas([10, 500, 1000], 100) == [10, 45, 45]  # the small part keeps its rows
    assert sum(fair_quotas([7, 7, 7], 10)) == 10
    assert fair_quotas([0, 50], 10) == [0, 10]


def test_apportion_keeps_the_mix_of_the_counts():
    counts = np.array([600, 300, 99, 1])
    assert apportion(counts, 2000).tolist() == counts.tolist()
    out = apportion(counts, 100)
    assert out.sum() == 100 and out.tolist() == [60, 30, 10, 0]


def test_sides_over_the_cap_are_sampled_and_counted_whole(stable):
    full = feature_frame(stable, *REFERENCE, DriftConfig(max_rows=10**9), skip_missing=True)
    capped = feature_frame(stable, *REFERENCE, CONFIG, skip_missing=True)
    assert len(full) > 10 * CAP and len(capped) == CAP
    # each kind of row (users, items, the two traffic columns) gets a fair share of the cap,
    # not its share of the rows: items are a tenth of the rows, yet a quarter of the sample
    shares = [
        capped[c].notna().sum()
        for c in ("user_views_1d", "item_price", "traffic_event", "traffic_category")
    ]
    assert shares == [CAP // 4] * 4
    assert full["item_price"].notna().sum() < len(full) / 10
    # only active entities, as in the full frame
    assert (capped["user_views_1d"].dropna() > 0).all()

    result, snapshot = check_drift(stable, CURRENT, REFERENCE, CONFIG)
    assert snapshot is not None
    assert result.reference_rows == len(full)  # counts are the whole sides'
    assert result.current_rows > CAP
    assert result.sampled_rows == {"reference": CAP, "current": CAP}


def test_the_sample_is_the_same_every_run_and_whatever_the_file_order(stable, tmp_path):
    first = feature_frame(stable, *REFERENCE, CONFIG, skip_missing=True)
    again = feature_frame(stable, *REFERENCE, CONFIG, skip_missing=True)
    reordered = feature_frame(_lake(tmp_path, reverse=True), *REFERENCE, CONFIG, skip_missing=True)

    def rows(df):
        return df.sort_values(list(df.columns), ignore_index=True, na_position="last")

    assert rows(first).equals(rows(again))
    assert rows(first).equals(rows(reordered))
    a, _ = check_drift(stable, CURRENT, REFERENCE, CONFIG)
    b, _ = check_drift(stable, CURRENT, REFERENCE, CONFIG)
    assert a.columns == b.columns and a.drift_share == b.drift_share


def test_a_shift_is_decided_on_the_sample_and_no_shift_is_not(stable, shifted):
    calm, _ = check_drift(stable, CURRENT, REFERENCE, CONFIG)
    assert not calm.drift_detected and calm.drift_share == 0.0, calm.reason
    moved, _ = check_drift(shifted, CURRENT, REFERENCE, CONFIG)
    assert moved.drift_detected and moved.drifted_columns == ["user_country"], moved.reason
    # the sample scores what the whole sides score, to sampling noise
    whole, _ = check_drift(shifted, CURRENT, REFERENCE, DriftConfig(max_rows=10**9))
    assert whole.sampled_rows is None and whole.drifted_columns == moved.drifted_columns
    for column, scored in whole.columns.items():
        assert moved.columns[column]["score"] == pytest.approx(scored["score"], abs=0.03), column


def test_the_check_reads_only_its_days_and_columns(stable, monkeypatch):
    asked = []
    real = DuckDBEngine.dataset

    def spy(self, zone, table, days=None, schema=None):
        asked.append((zone, table, None if days is None else sorted(days), schema))
        return real(self, zone, table, days, schema)

    monkeypatch.setattr(DuckDBEngine, "dataset", spy)
    check_drift(stable, CURRENT, REFERENCE, CONFIG)
    features = [a for a in asked if a[0] == FEATURES]
    assert {(t, tuple(d)) for _, t, d, _ in features} == {
        (view, days) for view in (USER_VIEW, ITEM_VIEW) for days in ((CURRENT,), REFERENCE)
    }
    read = {c for *_, schema in features for c in schema.names}
    needed = {
        *CONFIG.numeric,
        *CONFIG.categorical,
        "user_id",
        "item_id",
        "dt",
        "user_clicks_1d",
        "user_carts_1d",
        "user_purchases_1d",
        "user_ratings_1d",
        "item_views_1d",
    }
    assert read <= needed, read - needed  # no 7/28-day counts, rates, ages, timestamps
    assert {"user_country", "item_price", "user_views_1d"} <= read


def test_the_check_reads_an_s3_lake_through_the_engine(s3_lake):
    write_features(s3_lake, [*REFERENCE, CURRENT], 2_000, 200, shift_days=(CURRENT,))
    config = dataclasses.replace(CONFIG, max_rows=1_000)
    result, snapshot = check_drift(s3_lake, CURRENT, REFERENCE, config)
    assert snapshot is not None and result.sampled_rows == {"reference": 1_000, "current": 1_000}
    assert "user_country" in result.drifted_columns


def test_served_slots_are_sampled_and_quality_counts_every_slate(tmp_path):
    lake = Lake.from_uri(tmp_path.as_uri())
    write_features(lake, [*REFERENCE, CURRENT], 2_000, 200)
    for day, clicked in ((REFERENCE[0], 0.5), (REFERENCE[1], 0.5), (CURRENT, 0.2)):
        write_impressions(lake, day, requests=3_000, items=200, clicked=clicked)
    config = dataclasses.replace(CONFIG, max_rows=4_000)
    result, snapshot = check_drift(lake, CURRENT, REFERENCE, config)
    assert snapshot is not None and result.sampled_rows == {"reference": 4_000, "current": 4_000}
    # quality is aggregated over every slate of the window, not over the sample
    assert result.quality["current_slates"] == 3_000
    assert result.quality["reference_slate_ctr"] == pytest.approx(0.5)
    assert result.quality["current_slate_ctr"] == pytest.approx(0.2)
    assert result.quality["current_mrr"] == pytest.approx(0.2 / 2)  # the click is on rank 2
    assert result.drift_detected and "slate CTR dropped 60%" in result.reason
    assert set(result.prediction_drift) == {"rec_category", "rec_popularity"}
    with Scan(lake) as scan:
        served = served_frames(scan, CURRENT, REFERENCE, config)
        assert served.reference.rows == 2 * 3_000 * 5 and served.current.rows == 3_000 * 5
        sample = served.reference.read(1_000)
        assert len(sample) == 1_000 and sample.equals(served.reference.read(1_000))
        assert sample["rec_category"].notna().all()  # every shown item is in day D's catalog
