"""The simulator's inputs: every number of the behaviour model, the scenarios, and their checks."""

from __future__ import annotations

import datetime as dt
import numbers
from dataclasses import dataclass, replace

from core.errors import FlywheelError
from core.lake import SIM as SIM_ZONE

SHIFTS: tuple[str, ...] = ("taste_shift", "catalog_shift", "population_shift")
SCENARIOS: tuple[str, ...] = ("stable", *SHIFTS, "faults")
DEFAULT_START = dt.date(2026, 1, 1)
FORMATS: tuple[str, ...] = ("parquet", "csv")  # how raw batches are delivered
#: The lake folder of the simulator's own files (ground truth, faults), beside the zones.
SIM = f"{SIM_ZONE}/"


class SimulatorError(FlywheelError):
    """Bad simulator input (scenario, counts, dates) or missing ground truth."""


@dataclass(frozen=True)
class SimConfig:
    """Every number of the behaviour model, with the reason beside it."""

    # --- latent space ---------------------------------------------------------------------
    dim: int = 8  # low-dimensional: a small model can recover it from a few days of data
    n_categories: int = 12  # categories are clusters in the latent space
    item_noise: float = 0.35  # spread of items around their category centre
    taste_scale: float = 2.0  # how sharp tastes are; utility of a favourite category ≈ 1.5
    taste_noise: float = 0.5  # individual deviation from the category mix
    # --- choice and popularity --------------------------------------------------------------
    beta: float = 2.5  # weight of taste in browsing: dominates, so a taste model beats popularity
    gamma: float = 0.8  # weight of log popularity: secondary but visible (long tail)
    popularity_sigma: float = 1.0  # log-normal popularity: a long tail
    # --- activity ---------------------------------------------------------------------------
    active_rate: float = 0.3  # share of an average user's days with a visit
    activity_sigma: float = 0.5  # heterogeneous users: some visit daily, some rarely
    extra_sessions: float = 0.3  # Poisson mean of sessions beyond the first
    views_per_session: float = 5.0  # Poisson mean of views beyond the first
    weekly: tuple[float, ...] = (0.9, 0.88, 0.92, 0.97, 1.08, 1.25, 1.2)  # Mon..Sun volume
    daily_noise: float = 0.03  # day-to-day volume noise (log scale): noise, not drift
    daily_signups: float = 0.01  # new users per day, share of the initial population
    daily_new_items: float = 0.005  # new items per day, share of the initial catalog
    # --- funnel (logits: bias + slope * utility) ----------------------------------------------
    click_bias: float = -2.5
    click_slope: float = 1.5
    cart_bias: float = -1.0
    cart_slope: float = 0.8
    buy_bias: float = -0.5
    buy_slope: float = 0.6
    price_slope: float = 0.6  # expensive items (vs the median) are bought less
    position_slope: float = 0.35  # served slates: lower positions are clicked less
    rate_prob: float = 0.4  # share of purchases that get a rating
    # --- shifts -------------------------------------------------------------------------------
    taste_shift_fraction: float = 0.85  # users whose favourite categories change
    catalog_wave: float = 0.6  # new items on the shift day(s), share of the initial catalog
    catalog_new_categories: int = 3
    catalog_price_factor: float = 2.5  # the new items are pricier
    catalog_boost: float = 2.5  # novelty: the wave takes over browsing
    population_wave: float = 1.0  # new users on the shift day(s), share of the population
    population_activity: float = 2.0  # the newcomers are more active
    # --- faults -------------------------------------------------------------------------------
    fault_every: int = 3  # one broken batch per this many eligible days (1 = every day)
    fault_kinds: tuple[str, ...] = ()  # () = every kind, in a seeded order


# --------------------------------------------------------------------------------------------
# presets: named sizes of world
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A named world size: initial users and items, the behaviour numbers, the volume they give."""

    users: int
    items: int
    config: SimConfig
    events_per_day: int  # measured mean at these sizes: what ``events_per_day`` scales from


#: A company's catalog: more categories, a longer popularity tail (the top 1 % of items get
#: about a fifth of the views), fewer visits per user so that 1M users make ~1.5M events a day.
LARGE_CONFIG = SimConfig(
    n_categories=24,  # 100k items in 12 clusters would be 8k near-twins each
    popularity_sigma=2.0,  # gamma·sigma = 1.6: a real shop's head (the default's 0.8 is mild)
    active_rate=0.11,  # a visit every ~9 days on average: 1M users → ~115k visitors a day
    daily_signups=0.002,  # 2k signups a day: growth, not a population replaced in a month
    daily_new_items=0.002,  # 200 new items a day
)
PRESETS: dict[str, Preset] = {
    # the demo and the tests: every number as SimConfig's defaults
    "default": Preset(2_000, 500, SimConfig(), events_per_day=9_500),
    # the candidate sampler's scale, in seconds a day
    "medium": Preset(100_000, 20_000, LARGE_CONFIG, events_per_day=150_000),
    # issue 17: about 1M users, 100k items, ~1.5M events a day (14 days ≈ 20M events)
    "large": Preset(1_000_000, 100_000, LARGE_CONFIG, events_per_day=1_500_000),
}
_MAX_ACTIVE_RATE = 0.5  # above it the clip at 0.95 bends volume: more users, not more visits


def resolve_preset(
    name: str,
    users: int | None = None,
    items: int | None = None,
    config: SimConfig | None = None,
    events_per_day: int | None = None,
) -> tuple[int, int, SimConfig]:
    """``(users, items, config)`` of preset ``name``, each overridden where given.

    ``events_per_day`` rescales the visit rate (``active_rate``) from the preset's measured
    volume, for the users of this run: the volume is about proportional to users × visit rate.
    """
    if name not in PRESETS:
        raise SimulatorError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    p = PRESETS[name]
    n_users = p.users if users is None else users
    n_items = p.items if items is None else items
    cfg = config or p.config
    if events_per_day is None:
        return n_users, n_items, cfg
    if not isinstance(events_per_day, numbers.Integral) or events_per_day < 1:
        raise SimulatorError(f"--events-per-day must be a whole number ≥ 1, got {events_per_day!r}")
    if not isinstance(n_users, numbers.Integral) or n_users < 1:
        raise SimulatorError(f"--users must be a whole number ≥ 1, got {n_users!r}")
    rate = cfg.active_rate * events_per_day / (p.events_per_day * n_users / p.users)
    if rate > _MAX_ACTIVE_RATE:
        most = int(p.events_per_day * n_users / p.users * _MAX_ACTIVE_RATE / cfg.active_rate)
        raise SimulatorError(
            f"--events-per-day {events_per_day:,} needs more users than {n_users:,} "
            f"(at most ~{most:,} events a day from them): raise --users"
        )
    return n_users, n_items, replace(cfg, active_rate=rate)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """A run's checked inputs: the shift (if any), whether batches break, the dates."""

    shift: str | None
    faults: bool
    start: dt.date
    shift_day: int | None  # 0-based day index the shift starts on; None without a shift


def parse_scenario(scenario: str) -> tuple[str | None, bool]:
    """``"taste_shift+faults"`` → ``("taste_shift", True)``; ``"stable"`` → ``(None, False)``."""
    parts = [p.strip() for p in str(scenario).split("+") if p.strip()]
    bad = [p for p in parts if p not in SCENARIOS]
    if not parts or bad:
        raise SimulatorError(
            f"unknown scenario {scenario!r}: choose from {', '.join(SCENARIOS)} "
            "(a shift may be combined with faults, e.g. taste_shift+faults)"
        )
    shifts = [p for p in parts if p in SHIFTS]
    if len(shifts) > 1:
        raise SimulatorError(
            f"scenario {scenario!r} combines {len(shifts)} shifts: use at most one"
        )
    return (shifts[0] if shifts else None), ("faults" in parts)


def parse_start(start: dt.date | str) -> dt.date:
    """``start`` as a date (an ISO string is parsed), or one clear :class:`SimulatorError`."""
    if not isinstance(start, str):
        return start
    try:
        return dt.date.fromisoformat(start)
    except ValueError:
        raise SimulatorError(f"--start must be a date YYYY-MM-DD, got {start!r}") from None


def check_run(
    cfg: SimConfig,
    days: int,
    users: int,
    items: int,
    scenario: str,
    start: dt.date | str,
    shift_day: int | None,
    fmt: str,
) -> Run:
    """Every input of :func:`simulation.simulator.simulate` checked, before anything is written.

    ``shift_day`` defaults to ``days // 2`` for a shift and is dropped without one.
    """
    for name, value in (("days", days), ("users", users), ("items", items)):
        # numbers.Integral: ints and numpy's integers alike
        if not isinstance(value, numbers.Integral) or value < 1:
            raise SimulatorError(f"--{name} must be a whole number ≥ 1, got {value!r}")
    shift, faults = parse_scenario(scenario)
    if cfg.fault_every < 1:
        raise SimulatorError(f"--fault-every must be ≥ 1, got {cfg.fault_every}")
    if fmt not in FORMATS:
        raise SimulatorError(f"unknown format {fmt!r}: choose parquet or csv")
    start = parse_start(start)
    if shift is None:
        return Run(shift, faults, start, None)
    shift_day = days // 2 if shift_day is None else shift_day
    if not 0 < shift_day < days:
        raise SimulatorError(
            f"--shift-day must be between 1 and {days - 1} (days - 1), got {shift_day}"
        )
    return Run(shift, faults, start, shift_day)
