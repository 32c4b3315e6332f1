"""The simulator's inputs: every number of the behaviour model, the scenarios, and their checks."""

from __future__ import annotations

import datetime as dt
import numbers
from dataclasses import dataclass

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
