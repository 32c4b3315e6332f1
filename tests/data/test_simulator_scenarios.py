"""Each scenario's shift is measurable in the output from its first day; stable has noise only;
faults break exactly the batches they list."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from core.contract import TABLES
from core.lake import RAW, Lake, part_key, partition_prefix
from simulation.simulator import SHIFTS, SimConfig, load_truth, simulate

D0 = dt.date(2026, 1, 1)
DAYS, SHIFT = 8, 5
SIZE = {"days": DAYS, "users": 800, "items": 200, "seed": 3, "start": D0}


@pytest.fixture(scope="module")
def lakes(tmp_path_factory) -> dict[str, Lake]:
    out = {}
    for scenario in ("stable", *SHIFTS):
        lake = Lake.from_uri(str(tmp_path_factory.mktemp(scenario)))
        simulate(lake, scenario=scenario, shift_day=SHIFT, **SIZE)
        out[scenario] = lake
    return out


def events(lake: Lake) -> pd.DataFrame:
    """Events of every day joined with their item and user attributes."""

    def read(table):
        return pd.concat(
            [
                lake.read_parquet(partition_prefix(RAW, table, d)).to_pandas().assign(dt=d)
                for d in lake.partitions(RAW, table)
            ]
        )

    items, users = read("items"), read("users")
    ev = (
        read("events")
        .merge(items.drop(columns="dt"), on="item_id")
        .merge(users.drop(columns="dt"), on="user_id")
    )
    return ev.merge(items[["item_id", "dt"]].rename(columns={"dt": "item_dt"}), on="item_id")


def tv(ev: pd.DataFrame, column: str, a: dt.date, b: dt.date) -> float:
    """Total-variation distance of ``column``'s distribution between days ``a`` and ``b``."""
    pa_, pb = (ev[ev.dt == d][column].value_counts(normalize=True) for d in (a, b))
    idx = pa_.index.union(pb.index)
    return 0.5 * float((pa_.reindex(idx, fill_value=0) - pb.reindex(idx, fill_value=0)).abs().sum())


def day(k: int) -> dt.date:
    return D0 + dt.timedelta(days=k)


def noise(ev, column) -> float:
    """The largest day-to-day distance before the shift."""
    return max(tv(ev, column, day(k), day(k + 1)) for k in range(SHIFT - 1))


def test_stable_has_day_to_day_noise_only(lakes):
    ev = events(lakes["stable"])
    for column in ("category", "country", "age_bucket"):
        assert max(tv(ev, column, day(k), day(k + 1)) for k in range(DAYS - 1)) < 0.15, column
    price = ev[ev.event_type == "view"].groupby("dt").price.mean()
    assert price.max() < 1.1 * price.min()


@pytest.mark.parametrize("scenario", SHIFTS)
def test_days_before_the_shift_equal_the_stable_run(lakes, scenario):
    stable, shifted = lakes["stable"], lakes[scenario]
    for table in TABLES:
        for k in range(SHIFT):
            key = part_key(RAW, table, day(k))
            assert shifted.read_bytes(key) == stable.read_bytes(key), key
    meta = json.loads(shifted.read_text("sim/meta.json"))
    assert (meta["scenario"], meta["shift_day"], meta["shift_date"]) == (
        scenario,
        SHIFT,
        str(day(SHIFT)),
    )


def test_taste_shift_moves_category_mix_on_its_first_day(lakes):
    ev = events(lakes["taste_shift"])
    jump = tv(ev, "category", day(SHIFT - 1), day(SHIFT))
    assert jump > max(0.3, 2.5 * noise(ev, "category")), jump
    # the population is the same people; their tastes moved (per user, too)
    assert tv(ev, "country", day(SHIFT - 1), day(SHIFT)) < 0.15
    before = ev[ev.dt < day(SHIFT)].groupby("user_id").category.agg(lambda s: s.mode()[0])
    after = ev[ev.dt >= day(SHIFT)].groupby("user_id").category.agg(lambda s: s.mode()[0])
    both = before.index.intersection(after.index)
    assert (before[both] != after[both]).mean() > 0.5
    truth = load_truth(lakes["taste_shift"])
    shifted = truth.users.column("shifted").to_numpy()
    assert 0.75 < shifted.mean() < 0.95
    idx = np.flatnonzero(shifted)[:5]
    assert not np.allclose(truth.tastes(idx, day(SHIFT - 1)), truth.tastes(idx, day(SHIFT)))


def test_catalog_shift_new_items_take_over_and_prices_rise(lakes):
    lake = lakes["catalog_shift"]
    items = lake.read_parquet(partition_prefix(RAW, "items", day(SHIFT))).to_pandas()
    old = set(lake.read_parquet(partition_prefix(RAW, "items", D0)).column("category").to_pylist())
    assert len(items) > 0.3 * SIZE["items"] and set(items.category) - old
    ev = events(lake)
    views = ev[ev.event_type == "view"]
    new_share = (views.item_dt >= day(SHIFT)).groupby(views.dt).mean()
    assert new_share[day(SHIFT - 1)] == 0 and new_share[day(SHIFT)] > 0.5
    price = views.groupby("dt").price.mean()
    assert price[day(SHIFT)] > 1.3 * price[day(SHIFT - 1)]
    assert tv(ev, "category", day(SHIFT - 1), day(SHIFT)) > max(0.3, 2.5 * noise(ev, "category"))


def test_population_shift_brings_many_different_users(lakes):
    lake = lakes["population_shift"]
    signups = lake.read_parquet(partition_prefix(RAW, "users", day(SHIFT))).to_pandas()
    assert len(signups) > 0.4 * SIZE["users"]
    ev = events(lake)
    for column in ("country", "age_bucket"):
        assert tv(ev, column, day(SHIFT - 1), day(SHIFT)) > max(0.2, 2.5 * noise(ev, column)), (
            column
        )
    per_day = ev.groupby("dt").size()
    assert per_day[day(SHIFT + 1)] > 1.5 * per_day[day(SHIFT - 1)]


def test_faults_break_only_the_listed_batches(tmp_path):
    lake = Lake.from_uri(str(tmp_path / "lake"))
    summary = simulate(
        lake, days=12, users=200, items=80, seed=5, scenario="taste_shift+faults", shift_day=6,
        config=SimConfig(fault_every=1),
    )  # fmt: skip
    faults = json.loads(lake.read_text("sim/faults.json"))
    assert faults == summary.faults and len(faults) == 12 - 3 - 2
    assert {f["date"] for f in faults}.isdisjoint({str(day(k)) for k in (0, 1, 2, 6, 7)})
    assert len({f["kind"] for f in faults}) == len(faults)
    broken = {(f["date"], f["table"]) for f in faults}
    valid: dict[str, set[str]] = {"items": set(), "users": set()}
    for k in range(12):
        for table in ("items", "users", "events"):
            files = lake.partition_files(RAW, table, day(k))
            if (str(day(k)), table) in broken:
                assert files == [
                    next(
                        f["file"]
                        for f in faults
                        if f["date"] == str(day(k)) and f["table"] == table
                    )
                ]
                continue
            t = lake.read_parquet(files[0])
            assert (
                t.schema.equals(TABLES[table].arrow_schema())
                and t.num_rows > 0
                or table != "events"
            )
            if table != "events":
                valid[table] |= set(t.column(TABLES[table].column_names[0]).to_pylist())
                continue
            # valid event batches only use users and items from valid batches
            assert set(t.column("item_id").to_pylist()) <= valid["items"]
            assert set(t.column("user_id").to_pylist()) <= valid["users"]
