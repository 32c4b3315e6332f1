"""The large preset's path, on scaled-down worlds: candidate sampling near the exact softmax,
bounded memory, a long popularity tail, determinism; and the default preset's output unchanged."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from core.lake import RAW, Lake, part_key, partition_prefix
from simulation import days as sim_days
from simulation.config import PRESETS, SimulatorError, resolve_preset
from simulation.simulator import load_truth, simulate
from simulation.world import build_world, stream_rng

D0 = dt.date(2026, 1, 1)
LARGE = PRESETS["large"].config
#: The large preset's code path in seconds: its config, 20k items, 20k users.
SCALED = {"preset": "large", "users": 20_000, "items": 20_000, "start": D0}


@pytest.fixture(scope="module")
def scaled(tmp_path_factory) -> Lake:
    lake = Lake.from_uri(str(tmp_path_factory.mktemp("sim-large")))
    simulate(lake, days=2, seed=4, **SCALED)
    return lake


def _events(lake: Lake, day: dt.date):
    return lake.read_parquet(partition_prefix(RAW, "events", day))


# --- presets ----------------------------------------------------------------------------------
def test_presets_and_their_overrides():
    assert (PRESETS["large"].users, PRESETS["large"].items) == (1_000_000, 100_000)
    assert PRESETS["large"].items > sim_days.EXACT_MAX_ITEMS >= PRESETS["default"].items
    users, items, cfg = resolve_preset("default")
    assert (users, items, cfg) == (2_000, 500, PRESETS["default"].config)
    # the volume scales the visit rate, for the users of the run
    _, _, half = resolve_preset("large", users=500_000, events_per_day=750_000)
    assert half.active_rate == pytest.approx(LARGE.active_rate)
    _, _, twice = resolve_preset("large", events_per_day=3_000_000)
    assert twice.active_rate == pytest.approx(2 * LARGE.active_rate)
    with pytest.raises(SimulatorError, match="raise --users"):
        resolve_preset("large", users=1_000, events_per_day=1_500_000)
    with pytest.raises(SimulatorError, match="unknown preset 'huge'"):
        resolve_preset("huge")


def test_events_per_day_gives_about_that_volume(tmp_path):
    lake = Lake.from_uri(str(tmp_path / "lake"))
    s = simulate(lake, days=2, seed=1, events_per_day=40_000, **SCALED)
    assert 0.8 < s.total_events / 2 / 40_000 < 1.2, s.events_per_day
    assert json.loads(lake.read_text("sim/meta.json"))["preset"] == "large"


# --- candidate sampling ---------------------------------------------------------------------
def test_candidates_draw_near_the_exact_softmax():
    """Above the threshold views are drawn by candidates: same categories, same popularity and
    utility as the exact per-user softmax, within noise and a small resampling bias."""
    n_items, n_users, views = sim_days.EXACT_MAX_ITEMS + 1_000, 30, 20_000
    w = build_world(LARGE, 1, 200, n_items, None, None, 0, D0)
    avail = np.arange(len(w.item_id))
    taste = w.taste0[:n_users]
    rows = np.repeat(np.arange(n_users), views)
    cand = sim_days._choose_candidates(stream_rng(1, 9), taste, w, avail, rows)
    exact = sim_days._choose_items(stream_rng(2, 9), taste, w, avail, rows)
    logits = LARGE.beta * taste @ w.factor.T + LARGE.gamma * w.log_pop + w.boost
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    _, cat = np.unique(w.category, return_inverse=True)

    def category_tv(sample):
        tv = []
        for r in range(n_users):
            seen = np.bincount(cat[sample[rows == r]], minlength=cat.max() + 1) / views
            tv.append(0.5 * np.abs(seen - np.bincount(cat, weights=p[r])).sum())
        return np.mean(tv)

    assert category_tv(cand) < category_tv(exact) + 0.005
    want_util = (p * (taste @ w.factor.T)).sum(axis=1).mean()
    util = np.einsum("ij,ij->i", taste[rows], w.factor[cand]).mean()
    assert util == pytest.approx(want_util, rel=0.02)
    top = np.argsort(-w.log_pop)[: n_items // 100]
    want_top = p[:, top].sum(axis=1).mean()
    assert np.isin(cand, top).mean() == pytest.approx(want_top, abs=0.015)


def test_sampling_memory_is_bounded_by_the_chunk_not_the_views():
    """No users × items table: memory of a day's sampling is the chunk's, whatever the views."""
    w = build_world(LARGE, 1, 5_000, 20_000, None, None, 0, D0)
    avail = np.arange(len(w.item_id))

    def peak(n_views: int) -> int:
        rows = np.sort(stream_rng(0, 1).integers(0, 5_000, n_views))
        tracemalloc.start()
        sim_days._choose_candidates(stream_rng(0, 2), w.taste0[:5_000], w, avail, rows, 4_096)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top - 8 * n_views  # less the answer itself

    small, big = peak(50_000), peak(400_000)
    assert big < small * 1.2 + 2**20
    assert big < 32 * 2**20  # the exact CDF would need 2048 × 20k floats = 160 MiB


# --- what a large-path run writes ------------------------------------------------------------
def test_popularity_has_a_long_tail(scaled):
    ev = _events(scaled, D0).to_pandas()
    views = ev[ev.event_type == "view"]
    truth = load_truth(scaled)
    by_pop = truth.items.to_pandas().sort_values("log_popularity", ascending=False).item_id
    head = set(by_pop[: len(by_pop) // 100])
    tail = set(by_pop[len(by_pop) // 2 :])
    assert len(views) > 10_000
    assert views.item_id.isin(head).mean() > 0.15  # the top 1 % of items: a fifth of the views
    assert views.item_id.isin(tail).mean() < 0.1  # the bottom half: a few
    # and so in the data itself: the most viewed 1 % of the catalog, a fifth of the views
    top = views.item_id.value_counts().iloc[: len(by_pop) // 100]
    assert top.sum() / len(views) > 0.2


def test_same_seed_same_bytes_other_seed_other_data(scaled, tmp_path):
    again = Lake.from_uri(str(tmp_path / "again"))
    simulate(again, days=2, seed=4, **SCALED)
    keys = scaled.list()
    assert keys == again.list()
    assert all(scaled.read_bytes(k) == again.read_bytes(k) for k in keys)
    other = Lake.from_uri(str(tmp_path / "other"))
    simulate(other, days=1, seed=5, **SCALED)
    key = part_key(RAW, "events", D0)
    assert other.read_bytes(key) != scaled.read_bytes(key)


def test_cli_preset_and_overrides(fw_home, lake):
    cmd = [sys.executable, "-m", "flywheel.cli", "simulate", "--days", "1", "--json"]
    env = {"FLYWHEEL_HOME": str(fw_home), "PATH": "/usr/bin:/bin"}
    args = ["--preset", "medium", "--users", "3000", "--items", "6000"]
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total_events"] > 1_000
    meta = json.loads(lake.read_text("sim/meta.json"))
    assert (meta["preset"], meta["users"], meta["items"]) == ("medium", 3000, 6000)
    r = subprocess.run([*cmd, "--preset", "huge"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "unknown preset 'huge'" in r.stderr


# --- the default preset: unchanged -------------------------------------------------------------
#: Contents of a small default run, recorded before the presets and candidate sampling existed.
DEFAULT_FINGERPRINT = {
    "stable": "acb6d801923099e4c981c348a28fbd2424eb38a0f6cae5d84d8da28d59e6ab90",
    "catalog_shift": "2aa3387b1ce340eb3687cc91058a2501866649da98b0c49a076237ac7f9ff0b4",
}
_COLUMNS = {
    "events": ("event_id", "user_id", "item_id", "event_type", "value", "event_ts"),
    "items": ("item_id", "category", "price"),
    "users": ("user_id", "country", "age_bucket"),
}


def _fingerprint(lake: Lake) -> str:
    h = hashlib.sha256()
    for table, columns in _COLUMNS.items():
        for day in lake.partitions(RAW, table):
            t = lake.read_parquet(partition_prefix(RAW, table, day))
            for c in columns:
                h.update(repr(t.column(c).to_pylist()).encode())
    return h.hexdigest()


@pytest.mark.parametrize("scenario", sorted(DEFAULT_FINGERPRINT))
def test_default_preset_output_is_unchanged(tmp_path, scenario):
    lake = Lake.from_uri(str(tmp_path / "lake"))
    simulate(lake, days=3, users=120, items=40, seed=5, scenario=scenario)
    assert _fingerprint(lake) == DEFAULT_FINGERPRINT[scenario]
    named = Lake.from_uri(str(tmp_path / "named"))
    simulate(named, days=3, users=120, items=40, seed=5, scenario=scenario, preset="default")
    assert all(lake.read_bytes(k) == named.read_bytes(k) for k in lake.list())
    assert "preset" not in json.loads(lake.read_text("sim/meta.json"))
