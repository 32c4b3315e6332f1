"""The simulator's pieces: input checks, the behaviour model, fault injection, ground truth, CLI."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from core.contract import TABLES
from core.lake import RAW, Lake, partition_prefix
from simulation.simulator import (
    FAULT_KINDS,
    FAULT_TABLE,
    SimConfig,
    SimulatorError,
    fault_plan,
    inject_fault,
    load_truth,
    parse_scenario,
    repair_fault,
    respond,
    simulate,
)

D0 = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Lake:
    """Five small stable days (the fault tests copy it)."""
    lake = Lake.from_uri(str(tmp_path_factory.mktemp("sim-small")))
    simulate(lake, days=5, users=150, items=60, seed=11)
    return lake


def _copy(src: Lake, tmp_path) -> Lake:
    dst = Lake.from_uri(str(tmp_path / "lake"))
    for key in src.list():
        dst.write_bytes(key, src.read_bytes(key))
    return dst


# --- input checks -----------------------------------------------------------------------------
def test_parse_scenario_accepts_shift_plus_faults_and_rejects_the_rest():
    assert parse_scenario("stable") == (None, False)
    assert parse_scenario("faults") == (None, True)
    assert parse_scenario("taste_shift+faults") == ("taste_shift", True)
    assert parse_scenario("catalog_shift") == ("catalog_shift", False)
    with pytest.raises(SimulatorError, match="unknown scenario 'drift'"):
        parse_scenario("drift")
    with pytest.raises(SimulatorError, match="combines 2 shifts"):
        parse_scenario("taste_shift+catalog_shift")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"days": -1}, "--days must be a whole number ≥ 1, got -1"),
        ({"users": 0}, "--users must be"),
        ({"items": -5}, "--items must be"),
        ({"scenario": "nope"}, "unknown scenario 'nope'"),
        ({"scenario": "taste_shift", "shift_day": 9}, "--shift-day must be between 1 and 4"),
        ({"scenario": "faults", "days": 3}, "faults scenario needs days after the first 3"),
        ({"fmt": "xlsx"}, "unknown format 'xlsx'"),
        ({"config": SimConfig(fault_every=0)}, "--fault-every must be ≥ 1, got 0"),
        (
            {"scenario": "faults", "config": SimConfig(fault_kinds=("gremlins",))},
            "unknown fault kind",
        ),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, kwargs, message):
    lake = Lake.from_uri(str(tmp_path / "lake"))
    args = {"days": 5, "users": 10, "items": 10} | kwargs
    with pytest.raises(SimulatorError) as err:
        simulate(lake, **args)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert lake.list() == []


def test_cli_prints_one_line_and_exits_non_zero(tmp_path):
    env = {"FLYWHEEL_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "flywheel.cli", "simulate", "--scenario", "nope", "--days", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: unknown scenario 'nope': choose from stable, taste_shift, catalog_shift, "
        "population_shift, faults (a shift may be combined with faults, e.g. taste_shift+faults)"
    ]
    r = subprocess.run(
        [*cmd[:4], "--days", "-2"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 1 and "--days must be a whole number ≥ 1, got -2" in r.stderr
    assert "Traceback" not in r.stderr


# --- behaviour model ----------------------------------------------------------------------------
def test_respond_funnel_is_nested_and_follows_utility():
    cfg = SimConfig()
    rng = np.random.default_rng(0)
    n = 20_000
    low = respond(np.full(n, -0.5), np.full(n, 20.0), rng, cfg, ref_price=20.0)
    high = respond(np.full(n, 2.0), np.full(n, 20.0), rng, cfg, ref_price=20.0)
    for r in (low, high):
        assert not (r.carted & ~r.clicked).any()
        assert not (r.purchased & ~r.carted).any()
        assert not (r.rated & ~r.purchased).any()
        assert np.isnan(r.rating[~r.rated]).all()
        assert set(np.unique(r.rating[r.rated])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert high.clicked.mean() > 3 * low.clicked.mean()
    assert high.purchased.mean() > 3 * low.purchased.mean()
    assert np.nanmean(high.rating) > np.nanmean(low.rating) + 1
    pricey = respond(np.full(n, 2.0), np.full(n, 200.0), rng, cfg, ref_price=20.0)
    assert pricey.purchased.mean() < 0.8 * high.purchased.mean()
    top = respond(np.full(n, 1.0), np.full(n, 20.0), rng, cfg, 20.0, position=np.zeros(n))
    bottom = respond(np.full(n, 1.0), np.full(n, 20.0), rng, cfg, 20.0, position=np.full(n, 9))
    assert top.clicked.mean() > bottom.clicked.mean() + 0.05


def test_truth_relevance_is_a_matrix_and_shows_the_tastes(small):
    truth = load_truth(small)
    users = truth.users.column("user_id").to_pylist()[:20]
    items = truth.items.column("item_id").to_pylist()
    rel = truth.relevance(users, items)
    assert rel.shape == (20, len(items))
    assert (rel >= 0).all() and (rel <= 1).all()
    # each user's most relevant items sit mostly in a few categories: tastes are clustered
    cats = np.array(truth.items.column("category").to_pylist())
    top = np.argsort(-rel, axis=1)[:, :10]
    top_cat_share = np.mean([np.max(np.unique(cats[t], return_counts=True)[1]) / 10 for t in top])
    assert top_cat_share > 0.4
    p = truth.click_probability(users[:2], items[:5])
    assert p.shape == (2, 5) and ((p > 0) & (p < 1)).all()
    with pytest.raises(SimulatorError, match="unknown user id"):
        truth.relevance(["nobody"], items)


def test_load_truth_without_a_simulation_names_the_missing_file(tmp_path):
    with pytest.raises(SimulatorError, match=r"no simulator ground truth at .*sim/meta.json"):
        load_truth(Lake.from_uri(str(tmp_path)))


# --- faults ------------------------------------------------------------------------------------
def _read(data: bytes, key: str) -> pa.Table:
    if key.endswith(".csv"):
        return pcsv.read_csv(io.BytesIO(data))
    return pq.read_table(io.BytesIO(data))


def test_fault_plan_skips_first_days_and_the_shift_and_covers_every_kind():
    plan = fault_plan(40, seed=1, shift_day=10, cfg=SimConfig(fault_every=1))
    days = [d for d, _, _ in plan]
    assert min(days) >= 3 and 10 not in days and 11 not in days
    assert {k for _, k, _ in plan} == set(FAULT_KINDS)
    assert all(t == FAULT_TABLE[k] for _, k, t in plan)
    assert len(fault_plan(14, seed=1, shift_day=None, cfg=SimConfig())) == 11 // 3


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_inject_fault_breaks_the_batch_in_the_named_way(small, tmp_path, kind):
    lake = _copy(small, tmp_path)
    day = D0 + dt.timedelta(days=3)
    table = FAULT_TABLE[kind]
    clean_key = lake.partition_files(RAW, table, day)[0]
    clean = lake.read_parquet(clean_key)
    rec = inject_fault(lake, day, kind)
    assert rec == {"date": "2026-01-04", "table": table, "kind": kind, "file": rec["file"]}
    assert lake.partition_files(RAW, table, day) == [rec["file"]]
    assert json.loads(lake.read_text("sim/faults.json")) == [rec]
    data = lake.read_bytes(rec["file"])
    schema = TABLES[table].arrow_schema()
    if kind == "empty_file":
        assert data == b""
        return
    if kind == "corrupt_parquet":
        with pytest.raises(pa.ArrowInvalid):
            _read(data, rec["file"])
        return
    if kind == "non_utf8_csv":
        assert rec["file"].endswith(".csv")
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
        return
    t = _read(data, rec["file"])
    n = clean.num_rows
    if kind == "zero_rows":
        assert t.num_rows == 0 and t.schema.equals(schema)
    elif kind == "missing_column":
        assert set(schema.names) - set(t.column_names)
    elif kind == "extra_column":
        assert set(t.column_names) - set(schema.names)
    elif kind == "wrong_type":
        assert any(t.schema.field(f.name).type != f.type for f in schema)
    elif kind == "null_keys":
        assert t.column(TABLES[table].column_names[0]).null_count >= 1
    elif kind == "duplicate_event_id":
        assert len(set(t.column("event_id").to_pylist())) < n
    elif kind == "duplicate_event_id_earlier":
        earlier = lake.read_parquet(partition_prefix(RAW, "events", day - dt.timedelta(days=1)))
        earlier = set(earlier.column("event_id").to_pylist())
        assert earlier & set(t.column("event_id").to_pylist())
    elif kind == "unknown_event_type":
        assert "like" in t.column("event_type").to_pylist()
    elif kind == "rating_out_of_range":
        d = t.to_pandas()
        assert ((d.event_type == "rating") & ~d.value.between(1, 5)).any()
    elif kind == "future_timestamps":
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        assert max(t.column("event_ts").to_pylist()) > end
    elif kind == "unknown_items":
        known = set(lake.read_parquet(f"{RAW}/items/").column("item_id").to_pylist())
        assert set(t.column("item_id").to_pylist()) - known
    elif kind == "volume_collapse":
        assert 0 < t.num_rows < 0.1 * n
    # the valid batch comes back on repair, and the record goes away
    assert repair_fault(lake, day, table) == clean_key
    assert lake.read_parquet(clean_key).equals(clean)
    assert json.loads(lake.read_text("sim/faults.json")) == []


def test_inject_fault_rejects_unknown_kinds_and_wrong_tables(small, tmp_path):
    lake = _copy(small, tmp_path)
    with pytest.raises(SimulatorError, match="unknown fault kind 'gremlins'"):
        inject_fault(lake, D0, "gremlins")
    with pytest.raises(SimulatorError, match="applies to events only, not users"):
        inject_fault(lake, D0, "unknown_items", table="users")
    with pytest.raises(SimulatorError, match="no raw events batch for 2027-01-01"):
        inject_fault(lake, dt.date(2027, 1, 1), "zero_rows")


def test_inject_fault_twice_on_one_day_starts_from_the_valid_batch(small, tmp_path):
    lake = _copy(small, tmp_path)
    day = D0 + dt.timedelta(days=2)
    inject_fault(lake, day, "empty_file")
    rec = inject_fault(lake, day, "volume_collapse")
    assert 0 < lake.read_parquet(rec["file"]).num_rows
    assert [r["kind"] for r in json.loads(lake.read_text("sim/faults.json"))] == ["volume_collapse"]


def test_simulate_and_faults_on_an_s3_lake(s3_lake):
    """The production profile's lake: same partitions, truth and fault records through boto3."""
    summary = simulate(s3_lake, days=4, users=40, items=20, seed=1, scenario="faults")
    assert s3_lake.uri == "s3://flywheel-test/lake"
    assert s3_lake.partitions(RAW, "events") == [D0 + dt.timedelta(days=k) for k in range(4)]
    assert json.loads(s3_lake.read_text("sim/faults.json")) == summary.faults
    truth = load_truth(s3_lake)
    assert truth.relevance(["u000000"], ["i00000", "i00001"]).shape == (1, 2)
    rec = summary.faults[0]
    key = repair_fault(s3_lake, rec["date"], rec["table"])
    assert key.startswith(f"raw/{rec['table']}/dt={rec['date']}/")
    assert s3_lake.read_parquet(key).schema.equals(TABLES[rec["table"]].arrow_schema())
    assert json.loads(s3_lake.read_text("sim/faults.json")) == []
