"""Simulated users, items and their interactions, written to the lake as raw partitions.

``simulate(lake, days, users, items, scenario, seed)`` writes ``raw/{events,items,users}/
dt=YYYY-MM-DD/`` for ``days`` consecutive days and the ground truth under ``sim/``:

* ``sim/users.parquet`` -- raw ``user_id``, signup date, country, age band, activity, cohort and
  the latent taste before (``f0…``) and after (``g0…``) a taste shift;
* ``sim/items.parquet`` -- ``item_id``, category, price, popularity, novelty boost, factors ``f0…``;
* ``sim/meta.json`` -- scenario, seed, start, days, shift day, the config;
* ``sim/faults.json`` -- the broken batches (``faults`` scenarios): ``[{date, table, kind, file}]``.

The behaviour model (one place, shared with the simulated traffic against the serving API):

* users and items live in a low-dimensional latent space; categories are clusters in it;
  ``utility = taste · factor``;
* a user browsing picks items with ``softmax(beta * utility + gamma * log popularity + boost)``:
  taste dominates, a long-tailed popularity is secondary;
* a shown item goes through the funnel of :func:`respond`: click, add to cart, purchase, rating,
  each more likely with higher utility (purchases less likely for expensive items);
* daily activity follows a weekly cycle (busier weekends) and a diurnal profile.

Presets (:data:`PRESETS`, ``flywheel simulate --preset NAME``): ``default`` (2,000 users, 500
items: the demo and the tests), ``medium`` and ``large`` (about 1M users, 100k items, ~1.5M events
a day, a long popularity tail). Catalogs above :data:`simulation.days.EXACT_MAX_ITEMS` items draw
views by candidate sampling (:mod:`simulation.days`); smaller ones exactly, as they always have.
``simulate(lake, days=1, preset="large", events_per_day=1_000_000)`` is one million events.

Scenarios: ``stable``; ``taste_shift``, ``catalog_shift``, ``population_shift`` (from
``start + shift_day``); ``faults`` (some days' batches break the contract); a shift combined with
faults as ``taste_shift+faults`` (fault days avoid the shift day and the day after it).

Where things live: :mod:`simulation.config` (the numbers, scenarios and input checks),
:mod:`simulation.world` (users and items), :mod:`simulation.behaviour` (the funnel),
:mod:`simulation.days` (one day as raw batches), :mod:`simulation.faults` (broken batches),
:mod:`simulation.truth` (the ground truth) and :mod:`simulation.traffic` (users against the
serving API). This module runs a simulation and is where callers import the simulator's API from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from core.lake import Lake
from simulation.behaviour import Response, click_probability, respond
from simulation.config import (
    DEFAULT_START,
    PRESETS,
    SCENARIOS,
    SHIFTS,
    SIM,
    Preset,
    SimConfig,
    SimulatorError,
    check_run,
    parse_scenario,
    resolve_preset,
)
from simulation.days import entities, simulate_day, write_batch
from simulation.faults import FAULT_KINDS, FAULT_TABLE, fault_plan, inject_fault, repair_fault
from simulation.truth import Truth, load_truth, write_truth
from simulation.world import World, build_world, day_of

__all__ = [
    "DEFAULT_START",
    "FAULT_KINDS",
    "FAULT_TABLE",
    "PRESETS",
    "SCENARIOS",
    "SHIFTS",
    "Preset",
    "Response",
    "SimConfig",
    "SimSummary",
    "SimulatorError",
    "Truth",
    "click_probability",
    "fault_plan",
    "inject_fault",
    "load_truth",
    "parse_scenario",
    "repair_fault",
    "resolve_preset",
    "respond",
    "simulate",
]


@dataclass
class SimSummary:
    """What one simulation wrote."""

    scenario: str
    seed: int
    start: dt.date
    days: int
    shift_day: int | None
    events_per_day: dict[str, int] = field(default_factory=dict)
    items_per_day: dict[str, int] = field(default_factory=dict)
    users_per_day: dict[str, int] = field(default_factory=dict)
    faults: list[dict] = field(default_factory=list)

    @property
    def total_events(self) -> int:
        return sum(self.events_per_day.values())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        d["total_events"] = self.total_events
        return d


def simulate(
    lake: Lake,
    days: int = 14,
    users: int | None = None,
    items: int | None = None,
    scenario: str = "stable",
    seed: int = 0,
    start: dt.date = DEFAULT_START,
    shift_day: int | None = None,
    progress: bool = False,
    fmt: str = "parquet",
    config: SimConfig | None = None,
    preset: str = "default",
    events_per_day: int | None = None,
) -> SimSummary:
    """Write ``days`` days of raw events/items/users from ``start`` and the ground truth under ``sim/``.

    ``scenario`` is one of :data:`SCENARIOS` or ``"<shift>+faults"``; ``shift_day`` (0-based,
    default ``days // 2``) is when a shift starts. ``preset`` (:data:`PRESETS`) gives the
    initial ``users`` and ``items`` and the ``config`` where they are not given;
    ``events_per_day`` rescales the visit rate to about that many events a day (e.g.
    ``preset="large", days=1, events_per_day=1_000_000``). Memory is bounded by a day's events
    and the world (linear in users and items); days are written one at a time. Re-running with
    the same arguments rewrites the same bytes.
    """
    users, items, cfg = resolve_preset(preset, users, items, config, events_per_day)
    run = check_run(cfg, days, users, items, scenario, start, shift_day, fmt)
    plan = fault_plan(days, seed, run.shift_day, cfg) if run.faults else []
    # a gate rejects a fault day whole: no new items or users that day, so none that later
    # events use goes missing downstream (only the broken batch fails, and only that day)
    fault_days = {d for d, _, _ in plan}
    quiet = {"items": fault_days, "users": fault_days}
    w = build_world(cfg, days, users, items, run.shift, run.shift_day, seed, run.start, quiet)

    lake.delete_prefix(SIM)  # ground truth, fault list and clean copies of an earlier run
    summary = SimSummary(scenario, seed, run.start, days, run.shift_day)
    _write_days(lake, w, summary, run.shift, fmt, progress)
    meta = {
        "scenario": scenario,
        "shift": run.shift,
        "faults": run.faults,
        "seed": seed,
        "start": run.start.isoformat(),
        "start_date": run.start,
        "days": days,
        "users": users,
        "items": items,
        "shift_day": run.shift_day,
        "shift_date": day_of(run.start, run.shift_day).isoformat()
        if run.shift_day is not None
        else None,
        "format": fmt,
        "ref_price": w.ref_price,
        "categories": w.categories,
        "config": asdict(cfg),
    }
    if preset != "default":  # the default run's meta (and every byte it writes) as before
        meta["preset"] = preset
    write_truth(lake, w, meta)
    for d, kind, table in plan:
        summary.faults.append(inject_fault(lake, day_of(run.start, d), kind, table, seed=seed))
    return summary


def _write_days(
    lake: Lake, w: World, summary: SimSummary, shift: str | None, fmt: str, progress: bool
) -> None:
    """Write every day's raw batches (items, users, events) and count them into ``summary``."""
    start, seed = summary.start, summary.seed
    iterator: Iterable[int] = range(summary.days)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"simulate {summary.scenario}", unit="day")
    for d in iterator:
        day = day_of(start, d)
        items_t, users_t = entities(w, d)
        events_t = simulate_day(w, d, start, seed, shift, summary.shift_day)
        write_batch(lake, "items", day, items_t, fmt)
        write_batch(lake, "users", day, users_t, fmt)
        write_batch(lake, "events", day, events_t, fmt)
        key = day.isoformat()
        summary.events_per_day[key] = events_t.num_rows
        summary.items_per_day[key] = items_t.num_rows
        summary.users_per_day[key] = users_t.num_rows
