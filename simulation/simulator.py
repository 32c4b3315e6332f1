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

Scenarios: ``stable``; ``taste_shift``, ``catalog_shift``, ``population_shift`` (from
``start + shift_day``); ``faults`` (some days' batches break the contract); a shift combined with
faults as ``taste_shift+faults`` (fault days avoid the shift day and the day after it).
Everything is deterministic for a seed: day ``d`` draws from its own stream ``(seed, d)``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.contract import AGE_BUCKETS, EVENT_TYPES, EVENTS, ITEMS, TABLES, USERS
from core.errors import FlywheelError
from core.lake import Lake, partition_prefix

if TYPE_CHECKING:
    import pyarrow as pa

SHIFTS: tuple[str, ...] = ("taste_shift", "catalog_shift", "population_shift")
SCENARIOS: tuple[str, ...] = ("stable", *SHIFTS, "faults")
FAULT_KINDS: tuple[str, ...] = (
    "empty_file",
    "zero_rows",
    "missing_column",
    "extra_column",
    "wrong_type",
    "null_keys",
    "duplicate_event_id",
    "duplicate_event_id_earlier",
    "unknown_event_type",
    "rating_out_of_range",
    "future_timestamps",
    "unknown_items",
    "corrupt_parquet",
    "non_utf8_csv",
    "volume_collapse",
)
#: The table a fault breaks unless told otherwise (the generic kinds work on every table).
FAULT_TABLE: dict[str, str] = {k: "events" for k in FAULT_KINDS} | {
    "corrupt_parquet": "items",
    "non_utf8_csv": "users",
}
_EVENT_ONLY = {
    "duplicate_event_id",
    "duplicate_event_id_earlier",
    "unknown_event_type",
    "rating_out_of_range",
    "future_timestamps",
    "unknown_items",
    "volume_collapse",
}
DEFAULT_START = dt.date(2026, 1, 1)
FAULTS = "sim/faults.json"
CLEAN = "sim/clean/"  # valid copies of the batches inject_fault broke
US_PER_DAY = 86_400_000_000
_BASE_CATEGORIES = (
    "books", "electronics", "fashion", "home", "sports", "toys",
    "beauty", "grocery", "garden", "music", "games", "auto",
)  # fmt: skip
_WAVE_CATEGORIES = ("vr_gear", "smart_home", "eco_living", "retro_tech", "pet_tech")
_BASE_COUNTRIES = {"US": 0.34, "GB": 0.15, "DE": 0.15, "FR": 0.12, "ES": 0.07, "IT": 0.07, "NL": 0.06, "SE": 0.04}  # fmt: skip
_WAVE_COUNTRIES = {"BR": 0.3, "IN": 0.3, "MX": 0.2, "ID": 0.1, "NG": 0.1}
_BASE_AGES = (0.12, 0.28, 0.26, 0.17, 0.11, 0.06)
_WAVE_AGES = (0.5, 0.33, 0.1, 0.04, 0.02, 0.01)
# sessions per hour of the day (UTC): quiet nights, busy evenings
_DIURNAL = np.array(
    [1, .6, .4, .3, .3, .4, .7, 1.2, 1.6, 1.8, 1.9, 2, 2.2, 2.1, 2, 2, 2.1, 2.4, 2.9, 3.3, 3.4, 3, 2.3, 1.5]
)  # fmt: skip


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


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
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


def _check_counts(days: int, users: int, items: int) -> None:
    for name, value, low in (("days", days, 1), ("users", users, 1), ("items", items, 1)):
        if not isinstance(value, int | np.integer) or value < low:
            raise SimulatorError(f"--{name} must be a whole number ≥ {low}, got {value!r}")


def _day(start: dt.date, d: int) -> dt.date:
    return start + dt.timedelta(days=d)


def _day_us(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * US_PER_DAY


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


# --------------------------------------------------------------------------------------------
# the world: every user and item of the run, with their latent factors
# --------------------------------------------------------------------------------------------
@dataclass
class World:
    cfg: SimConfig
    categories: list[str]
    ref_price: float
    # users
    user_id: np.ndarray
    user_day: np.ndarray  # signup day index
    user_ts: np.ndarray  # signup time, µs since epoch
    country: np.ndarray
    age_bucket: np.ndarray
    activity: np.ndarray
    cohort: np.ndarray
    taste0: np.ndarray
    taste1: np.ndarray  # after a taste shift (== taste0 otherwise)
    # items
    item_id: np.ndarray
    item_day: np.ndarray
    item_ts: np.ndarray
    category: np.ndarray
    price: np.ndarray
    log_pop: np.ndarray
    boost: np.ndarray
    factor: np.ndarray


def _user_block(rng, cfg, centres, n, cat_p, countries, ages, activity_mult, cohort):
    k = len(cat_p)
    main = rng.choice(k, size=n, p=cat_p)
    second = rng.choice(k, size=n, p=cat_p)
    noise = rng.normal(size=(n, cfg.dim)) * cfg.taste_noise / np.sqrt(cfg.dim)
    taste = cfg.taste_scale * (0.75 * centres[main] + 0.25 * centres[second]) + noise
    act = rng.lognormal(0.0, cfg.activity_sigma, size=n) / np.exp(cfg.activity_sigma**2 / 2)
    return {
        "main": main,
        "second": second,
        "noise": noise,
        "taste": taste,
        "country": rng.choice(list(countries), size=n, p=list(countries.values())),
        "age": rng.choice(np.array(AGE_BUCKETS), size=n, p=ages),
        "activity": act * activity_mult,
        "cohort": np.full(n, cohort, dtype=object),
    }


def _item_block(rng, cfg, centres, n, cats, cat_price, price_mult=1.0, boost=0.0):
    cat = rng.choice(cats, size=n)
    factor = centres[cat] + rng.normal(size=(n, cfg.dim)) * cfg.item_noise / np.sqrt(cfg.dim)
    price = np.round(cat_price[cat] * rng.lognormal(0, 0.3, size=n) * price_mult, 2)
    return {
        "cat": cat,
        "factor": factor,
        "price": price,
        "log_pop": rng.normal(0, cfg.popularity_sigma, size=n),
        "boost": np.full(n, boost),
    }


def _stamp(rng, days: np.ndarray, start: dt.date) -> np.ndarray:
    """Creation times: within the first ten minutes of the day (before most traffic)."""
    return (
        _day_us(start)
        + days.astype(np.int64) * US_PER_DAY
        + rng.integers(0, 600_000_000, len(days))
    )


def build_world(
    cfg: SimConfig,
    days: int,
    n_users: int,
    n_items: int,
    shift: str | None,
    shift_day: int | None,
    seed: int,
    start: dt.date,
    quiet_days: dict[str, set[int]] | None = None,
) -> World:
    """All users and items of the run (initial, daily growth and shift waves), deterministic."""
    quiet = quiet_days or {}
    # separate streams: a scenario's days before its shift equal the stable run's
    rng, rng_u, rng_i, rng_s = (_rng(seed, 0, j) for j in range(4))
    k_base = cfg.n_categories
    names = list(_BASE_CATEGORIES[:k_base]) + [f"category_{i}" for i in range(12, k_base)]
    centres = _unit(rng.normal(size=(k_base, cfg.dim)))
    cat_p = np.exp(rng.normal(0, 0.8, size=k_base))
    cat_p /= cat_p.sum()
    cat_price = np.exp(rng.normal(3.0, 0.6, size=k_base))

    # --- users: initial population, daily signups, a population wave ---------------------------
    growth = [0] + [int(rng_u.poisson(cfg.daily_signups * n_users)) for d in range(1, days)]
    growth = [0 if d in quiet.get("users", ()) else g for d, g in enumerate(growth)]
    u_days = np.repeat(
        np.arange(days), [n_users + g if d == 0 else g for d, g in enumerate(growth)]
    )
    blocks = [
        _user_block(
            rng_u, cfg, centres, len(u_days), cat_p, _BASE_COUNTRIES, _BASE_AGES, 1.0, "base"
        )
    ]
    if shift == "population_shift":
        n_wave = int(round(cfg.population_wave * n_users))
        wave_p = cat_p[::-1] ** 2 / (cat_p[::-1] ** 2).sum()  # the newcomers like other things
        blocks.append(
            _user_block(rng_s, cfg, centres, n_wave, wave_p, _WAVE_COUNTRIES, _WAVE_AGES,
                        cfg.population_activity, "wave")
        )  # fmt: skip
        wave_days = np.where(rng_s.random(n_wave) < 0.6, shift_day, min(shift_day + 1, days - 1))
        u_days = np.concatenate([u_days, wave_days])
    users = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    order = np.argsort(u_days, kind="stable")
    users = {k: v[order] for k, v in users.items()}
    u_days = u_days[order]
    taste1 = users["taste"].copy()
    if shift == "taste_shift":
        # favourite categories move to their mirror in the popularity ranking: strong, visible
        rank = np.argsort(cat_p)
        perm = np.empty(k_base, dtype=int)
        perm[rank] = rank[::-1]
        fixed = np.flatnonzero(perm == np.arange(k_base))
        for f in fixed:  # odd count: the middle one swaps with its neighbour
            other = (f + 1) % k_base
            perm[f], perm[other] = perm[other], perm[f]
        # ... and most movers follow a trend towards the least popular quarter of the categories
        n_u = len(u_days)
        moved = rng_s.random(n_u) < cfg.taste_shift_fraction
        trend = rng_s.choice(rank[: max(1, k_base // 4)], n_u)
        main1 = np.where(rng_s.random(n_u) < 0.85, trend, perm[users["main"]])
        new = cfg.taste_scale * (0.75 * centres[main1] + 0.25 * centres[perm[users["second"]]])
        taste1[moved] = new[moved] + users["noise"][moved]

    # --- items: initial catalog, daily novelties, a catalog wave -------------------------------
    i_growth = [0] + [int(rng_i.poisson(cfg.daily_new_items * n_items)) for d in range(1, days)]
    i_growth = [0 if d in quiet.get("items", ()) else g for d, g in enumerate(i_growth)]
    i_days = np.repeat(
        np.arange(days), [n_items + g if d == 0 else g for d, g in enumerate(i_growth)]
    )
    iblocks = [_item_block(rng_i, cfg, centres, len(i_days), np.arange(k_base), cat_price)]
    all_centres, all_price = centres, cat_price
    if shift == "catalog_shift":
        k_new = cfg.catalog_new_categories
        names += [
            _WAVE_CATEGORIES[i] if i < len(_WAVE_CATEGORIES) else f"wave_{i}" for i in range(k_new)
        ]
        pairs = np.array([rng_s.choice(k_base, 2, replace=False, p=cat_p) for _ in range(k_new)])
        new_centres = _unit(centres[pairs[:, 0]] + centres[pairs[:, 1]])
        all_centres = np.vstack([centres, new_centres])
        wave_price = np.median(cat_price) * rng_s.lognormal(0, 0.2, size=k_new)
        all_price = np.concatenate([cat_price, wave_price])
        n_wave = int(round(cfg.catalog_wave * n_items))
        iblocks.append(
            _item_block(rng_s, cfg, all_centres, n_wave, np.arange(k_base, k_base + k_new), all_price,
                        cfg.catalog_price_factor, cfg.catalog_boost)
        )  # fmt: skip
        wave_days = np.where(rng_s.random(n_wave) < 0.7, shift_day, min(shift_day + 1, days - 1))
        i_days = np.concatenate([i_days, wave_days])
    items = {k: np.concatenate([b[k] for b in iblocks]) for k in iblocks[0]}
    iorder = np.argsort(i_days, kind="stable")
    items = {k: v[iorder] for k, v in items.items()}
    i_days = i_days[iorder]

    n_u, n_i = len(u_days), len(i_days)
    return World(
        cfg=cfg,
        categories=names,
        ref_price=float(np.median(items["price"][i_days == 0])),
        user_id=_ids("u", n_u, max(6, len(str(n_u - 1)))),
        user_day=u_days,
        user_ts=_stamp(rng_u, u_days, start),
        country=users["country"],
        age_bucket=users["age"],
        activity=users["activity"],
        cohort=users["cohort"],
        taste0=users["taste"],
        taste1=taste1,
        item_id=_ids("i", n_i, max(5, len(str(n_i - 1)))),
        item_day=i_days,
        item_ts=_stamp(rng_i, i_days, start),
        category=np.array(names, dtype=object)[items["cat"]],
        price=items["price"],
        log_pop=items["log_pop"],
        boost=items["boost"],
        factor=items["factor"],
    )


# --------------------------------------------------------------------------------------------
# behaviour: one function for "a user responds to a shown item", shared with sim_traffic
# --------------------------------------------------------------------------------------------
@dataclass
class Response:
    """Per shown item: how far down the funnel the user went, and the rating if any (else NaN)."""

    clicked: np.ndarray
    carted: np.ndarray
    purchased: np.ndarray
    rated: np.ndarray
    rating: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def click_probability(
    utility: np.ndarray, cfg: SimConfig, position: np.ndarray | None = None
) -> np.ndarray:
    logit = cfg.click_bias + cfg.click_slope * np.asarray(utility, dtype=float)
    if position is not None:
        logit = logit - cfg.position_slope * np.log1p(position)
    return _sigmoid(logit)


def respond(
    utility: np.ndarray,
    price: np.ndarray,
    rng: np.random.Generator,
    cfg: SimConfig,
    ref_price: float,
    position: np.ndarray | None = None,
) -> Response:
    """A user's response to shown items (organic views, or a served slate with ``position``).

    ``utility`` is the true taste·factor of each shown item; higher utility → more clicks, carts,
    purchases and better ratings; a price above ``ref_price`` lowers purchases.
    """
    u = np.asarray(utility, dtype=float)
    n = len(u)
    clicked = rng.random(n) < click_probability(u, cfg, position)
    carted = clicked & (rng.random(n) < _sigmoid(cfg.cart_bias + cfg.cart_slope * u))
    price_term = cfg.price_slope * np.log(np.maximum(np.asarray(price, float), 0.01) / ref_price)
    purchased = carted & (rng.random(n) < _sigmoid(cfg.buy_bias + cfg.buy_slope * u - price_term))
    rated = purchased & (rng.random(n) < cfg.rate_prob)
    rating = np.clip(np.round(2.6 + 0.9 * u + rng.normal(0, 0.7, n)), 1, 5)
    return Response(clicked, carted, purchased, rated, np.where(rated, rating, np.nan))


def _choose_items(rng, taste, w: World, avail: np.ndarray, user_row: np.ndarray, chunk: int = 2048):
    """Sample one browsed item per view: softmax(beta·utility + gamma·log pop + boost) per user."""
    cfg = w.cfg
    bias = (cfg.gamma * w.log_pop[avail] + w.boost[avail]).astype(np.float32)
    vf = (cfg.beta * w.factor[avail]).astype(np.float32)
    n_i = len(avail)
    out = np.empty(len(user_row), dtype=np.int64)
    u = rng.random(len(user_row), dtype=np.float32)
    # user_row is sorted: users in chunks (bounded memory), float32 CDFs, one search per user
    starts = np.searchsorted(user_row, np.arange(len(taste) + 1))
    for r0 in range(0, len(taste), chunk):
        rows = taste[r0 : r0 + chunk].astype(np.float32)
        cdf = rows @ vf.T
        cdf += bias
        cdf -= cdf.max(axis=1, keepdims=True)
        np.exp(cdf, out=cdf)
        np.cumsum(cdf, axis=1, out=cdf)
        cdf /= cdf[:, -1:]
        for r in range(len(rows)):
            a, b = starts[r0 + r], starts[r0 + r + 1]
            out[a:b] = np.searchsorted(cdf[r], u[a:b], side="right")
    np.minimum(out, n_i - 1, out=out)
    return avail[out]


def simulate_day(
    w: World, d: int, start: dt.date, seed: int, shift: str | None, shift_day: int | None
) -> pa.Table:
    """One day's events as an Arrow table with the contract schema, sorted by time."""
    import pyarrow as pa

    cfg = w.cfg
    rng = _rng(seed, 1, d)
    day = _day(start, d)
    t0 = _day_us(day)
    users = np.flatnonzero(w.user_day <= d)
    avail = np.flatnonzero(w.item_day <= d)
    season = cfg.weekly[day.weekday()] * np.exp(rng.normal(0, cfg.daily_noise))
    p_active = np.clip(cfg.active_rate * w.activity[users] * season, 0, 0.95)
    active = users[rng.random(len(users)) < p_active]
    taste_src = w.taste1 if (shift == "taste_shift" and d >= shift_day) else w.taste0
    taste = taste_src[active]

    n_sess = 1 + rng.poisson(cfg.extra_sessions, len(active))
    sess_row = np.repeat(np.arange(len(active)), n_sess)
    hour = rng.choice(24, size=len(sess_row), p=_DIURNAL / _DIURNAL.sum())
    sess_ts = t0 + ((hour + rng.random(len(sess_row))) * 3.6e9).astype(np.int64)
    n_views = 1 + rng.poisson(cfg.views_per_session, len(sess_row))
    view_sess = np.repeat(np.arange(len(sess_row)), n_views)
    first = np.repeat(np.cumsum(n_views) - n_views, n_views)
    step = np.arange(len(view_sess)) - first
    view_row = sess_row[view_sess]
    view_ts = sess_ts[view_sess] + step * 45_000_000 + rng.integers(0, 30_000_000, len(view_sess))
    item = _choose_items(rng, taste, w, avail, view_row)
    util = np.einsum("ij,ij->i", taste[view_row], w.factor[item])
    resp = respond(util, w.price[item], rng, cfg, w.ref_price)

    def later(ts, lo_s, hi_s):
        return ts + rng.integers(lo_s * 1_000_000, hi_s * 1_000_000, len(ts))

    click_ts = later(view_ts, 2, 30)
    cart_ts = later(click_ts, 10, 120)
    buy_ts = later(cart_ts, 30, 600)
    rate_ts = later(buy_ts, 60, 3600)
    parts = [
        (np.ones(len(item), bool), 0, view_ts, 1.0),
        (resp.clicked, 1, click_ts, 1.0),
        (resp.carted, 2, cart_ts, 1.0),
        (resp.purchased, 3, buy_ts, 1.0),
        (resp.rated, 4, rate_ts, resp.rating),
    ]
    rows = np.concatenate([np.flatnonzero(m) for m, *_ in parts])
    etype = np.concatenate([np.full(m.sum(), t, np.int8) for m, t, *_ in parts])
    ts = np.concatenate([t[m] for m, _, t, _ in parts])
    value = np.concatenate([np.broadcast_to(v, len(m))[m] for m, _, _, v in parts]).astype(float)
    u_idx, i_idx = active[view_row[rows]], item[rows]
    # never before the user signed up or the item existed; always within the day
    ts = np.maximum(ts, np.maximum(w.user_ts[u_idx], w.item_ts[i_idx]) + 1_000_000)
    ts = np.minimum(ts, t0 + US_PER_DAY - 1)
    order = np.lexsort((etype, ts))
    n = len(order)
    prefix = f"e{day:%Y%m%d}-"
    event_id = [f"{prefix}{i:07d}" for i in range(n)]
    return pa.table(
        {
            "event_id": pa.array(event_id, pa.string()),
            "user_id": pa.array(w.user_id[u_idx[order]], pa.string()),
            "item_id": pa.array(w.item_id[i_idx[order]], pa.string()),
            "event_type": pa.array(np.array(EVENT_TYPES, dtype=object)[etype[order]], pa.string()),
            "value": pa.array(value[order], pa.float64()),
            "event_ts": pa.array(ts[order], pa.timestamp("us", tz="UTC")),
        },
        schema=EVENTS.arrow_schema(),
    )


def _entities(w: World, d: int) -> tuple[pa.Table, pa.Table]:
    import pyarrow as pa

    iu = np.flatnonzero(w.user_day == d)
    ii = np.flatnonzero(w.item_day == d)
    ts = pa.timestamp("us", tz="UTC")
    users = pa.table(
        {
            "user_id": pa.array(w.user_id[iu], pa.string()),
            "signup_ts": pa.array(w.user_ts[iu], ts),
            "country": pa.array(w.country[iu], pa.string()),
            "age_bucket": pa.array(w.age_bucket[iu], pa.string()),
        },
        schema=USERS.arrow_schema(),
    )
    items = pa.table(
        {
            "item_id": pa.array(w.item_id[ii], pa.string()),
            "category": pa.array(w.category[ii], pa.string()),
            "price": pa.array(w.price[ii], pa.float64()),
            "created_ts": pa.array(w.item_ts[ii], ts),
        },
        schema=ITEMS.arrow_schema(),
    )
    return items, users


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _encode(table: pa.Table, fmt: str) -> tuple[str, bytes]:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    if fmt == "csv":
        pcsv.write_csv(table, buf)
        return "part-00000.csv", buf.getvalue()
    pq.write_table(table, buf, compression="zstd")
    return "part-00000.parquet", buf.getvalue()


def _write(lake: Lake, table_name: str, day: dt.date, table: pa.Table, fmt: str) -> str:
    name, data = _encode(table, fmt)
    prefix = partition_prefix("raw", table_name, day)
    lake.replace_partition(prefix, {name: data})
    return prefix + name


def _write_truth(lake: Lake, w: World, meta: dict) -> None:
    import pyarrow as pa

    dim = w.cfg.dim
    users = {
        "user_id": w.user_id,
        "signup_date": [meta["start_date"] + dt.timedelta(days=int(d)) for d in w.user_day],
        "country": w.country,
        "age_bucket": w.age_bucket,
        "activity": w.activity,
        "cohort": w.cohort,
        "shifted": np.any(w.taste0 != w.taste1, axis=1),
    }
    users |= {f"f{j}": w.taste0[:, j] for j in range(dim)}
    users |= {f"g{j}": w.taste1[:, j] for j in range(dim)}
    pop = np.exp(w.log_pop)
    items = {
        "item_id": w.item_id,
        "category": w.category,
        "price": w.price,
        "base_popularity": pop / pop.sum(),
        "log_popularity": w.log_pop,
        "boost": w.boost,
        "created_date": [meta["start_date"] + dt.timedelta(days=int(d)) for d in w.item_day],
    }
    items |= {f"f{j}": w.factor[:, j] for j in range(dim)}
    lake.write_parquet("sim/users.parquet", pa.table(users))
    lake.write_parquet("sim/items.parquet", pa.table(items))
    lake.write_text(
        "sim/meta.json", json.dumps({k: v for k, v in meta.items() if k != "start_date"}, indent=2)
    )


def fault_plan(
    days: int, seed: int, shift_day: int | None, cfg: SimConfig
) -> list[tuple[int, str, str]]:
    """``[(day index, kind, table)]``: which batches a faults scenario breaks."""
    eligible = [
        d for d in range(3, days) if shift_day is None or d not in (shift_day, shift_day + 1)
    ]
    if not eligible:
        raise SimulatorError(
            f"the faults scenario needs days after the first 3 (and the shift), got --days {days}"
        )
    rng = _rng(seed, 2)
    n = max(1, len(eligible) // max(1, cfg.fault_every))
    chosen = sorted(int(d) for d in rng.choice(eligible, size=min(n, len(eligible)), replace=False))
    kinds = list(cfg.fault_kinds) or [str(k) for k in rng.permutation(FAULT_KINDS)]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise SimulatorError(
            f"unknown fault kind(s) {', '.join(unknown)}: choose from {', '.join(FAULT_KINDS)}"
        )
    return [
        (d, kinds[i % len(kinds)], FAULT_TABLE[kinds[i % len(kinds)]]) for i, d in enumerate(chosen)
    ]


def simulate(
    lake: Lake,
    days: int = 14,
    users: int = 2000,
    items: int = 500,
    scenario: str = "stable",
    seed: int = 0,
    start: dt.date = DEFAULT_START,
    shift_day: int | None = None,
    progress: bool = False,
    fmt: str = "parquet",
    config: SimConfig | None = None,
) -> SimSummary:
    """Write ``days`` days of raw events/items/users from ``start`` and the ground truth under ``sim/``.

    ``scenario`` is one of :data:`SCENARIOS` or ``"<shift>+faults"``; ``shift_day`` (0-based,
    default ``days // 2``) is when a shift starts. Re-running with the same arguments rewrites
    the same bytes.
    """
    cfg = config or SimConfig()
    _check_counts(days, users, items)
    shift, faults = parse_scenario(scenario)
    if cfg.fault_every < 1:
        raise SimulatorError(f"--fault-every must be ≥ 1, got {cfg.fault_every}")
    if fmt not in ("parquet", "csv"):
        raise SimulatorError(f"unknown format {fmt!r}: choose parquet or csv")
    if isinstance(start, str):
        try:
            start = dt.date.fromisoformat(start)
        except ValueError:
            raise SimulatorError(f"--start must be a date YYYY-MM-DD, got {start!r}") from None
    if shift is not None:
        shift_day = days // 2 if shift_day is None else shift_day
        if not 0 < shift_day < days:
            raise SimulatorError(
                f"--shift-day must be between 1 and {days - 1} (days - 1), got {shift_day}"
            )
    else:
        shift_day = None
    plan = fault_plan(days, seed, shift_day, cfg) if faults else []
    # a gate rejects a fault day whole: no new items or users that day, so none that later
    # events use goes missing downstream (only the broken batch fails, and only that day)
    fault_days = {d for d, _, _ in plan}
    quiet = {"items": fault_days, "users": fault_days}
    w = build_world(cfg, days, users, items, shift, shift_day, seed, start, quiet)

    lake.delete_prefix("sim/")  # ground truth, fault list and clean copies of an earlier run
    summary = SimSummary(scenario, seed, start, days, shift_day)
    iterator: Iterable[int] = range(days)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"simulate {scenario}", unit="day")
    for d in iterator:
        day = _day(start, d)
        items_t, users_t = _entities(w, d)
        events_t = simulate_day(w, d, start, seed, shift, shift_day)
        _write(lake, "items", day, items_t, fmt)
        _write(lake, "users", day, users_t, fmt)
        _write(lake, "events", day, events_t, fmt)
        key = day.isoformat()
        summary.events_per_day[key] = events_t.num_rows
        summary.items_per_day[key] = items_t.num_rows
        summary.users_per_day[key] = users_t.num_rows

    meta = {
        "scenario": scenario,
        "shift": shift,
        "faults": faults,
        "seed": seed,
        "start": start.isoformat(),
        "start_date": start,
        "days": days,
        "users": users,
        "items": items,
        "shift_day": shift_day,
        "shift_date": _day(start, shift_day).isoformat() if shift_day is not None else None,
        "format": fmt,
        "ref_price": w.ref_price,
        "categories": w.categories,
        "config": asdict(cfg),
    }
    _write_truth(lake, w, meta)
    for d, kind, table in plan:
        summary.faults.append(inject_fault(lake, _day(start, d), kind, table, seed=seed))
    return summary


# --------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------
def _read_batch(lake: Lake, table: str, day: dt.date, clean: bool = True) -> pa.Table:
    """The valid batch of a day: the clean copy kept by :func:`inject_fault`, else the raw one."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    files = lake.list(CLEAN + partition_prefix("raw", table, day)) if clean else []
    files = files or lake.partition_files("raw", table, day)
    if not files:
        raise SimulatorError(
            f"no raw {table} batch for {day} to break: run `flywheel simulate` first"
        )
    key = files[0]
    data = lake.read_bytes(key)
    schema = TABLES[table].arrow_schema()
    try:
        if key.endswith(".csv"):
            opts = pcsv.ConvertOptions(column_types=schema)
            return pcsv.read_csv(io.BytesIO(data), convert_options=opts).select(schema.names)
        return pq.read_table(pa.BufferReader(data)).cast(schema)
    except (pa.ArrowException, ValueError, KeyError) as exc:
        raise SimulatorError(
            f"raw {table} batch {lake.url(key)} is not a valid batch to break: {exc}"
        ) from None


def _some(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    k = min(n, max(1, int(round(n * share))))
    return np.sort(rng.choice(n, size=k, replace=False)) if n else np.array([], dtype=int)


def _set(table: pa.Table, name: str, values, nullable: bool = False, type_=None) -> pa.Table:
    import pyarrow as pa

    arr = pa.array(values, type=type_ or table.schema.field(name).type)
    i = table.schema.get_field_index(name)
    return table.set_column(i, pa.field(name, arr.type, nullable=nullable), arr)


def _earlier_event_ids(lake: Lake, day: dt.date) -> list[str]:
    """Event ids of the latest earlier day that the gate will publish.

    A fault in any table rejects the whole day, so its events never reach validated/ and their
    ids would not be duplicates there: skip every day with a recorded fault.
    """
    records = json.loads(lake.read_text(FAULTS)) if lake.exists(FAULTS) else []
    broken = {r["date"] for r in records}
    for earlier in reversed([p for p in lake.partitions("raw", "events") if p < day]):
        if earlier.isoformat() in broken:
            continue
        try:
            ids = _read_batch(lake, "events", earlier, clean=False).column("event_id").to_pylist()
        except SimulatorError:
            continue
        if ids:
            return ids
    raise SimulatorError(
        f"duplicate_event_id_earlier needs an earlier valid events batch than {day}"
    )


def _break(lake: Lake, day: dt.date, kind: str, table: str, t: pa.Table, rng) -> tuple[str, bytes]:
    """The broken file (name, bytes) of one batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = t.num_rows
    key_col = TABLES[table].column_names[0]
    if kind == "empty_file":
        return "part-00000.parquet", b""
    if kind == "zero_rows":
        return _encode(t.slice(0, 0), "parquet")
    if kind == "missing_column":
        drop = {"events": "event_ts", "items": "price", "users": "country"}[table]
        return _encode(t.drop_columns([drop]), "parquet")
    if kind == "extra_column":
        return _encode(t.append_column("session_note", pa.array(["x"] * n, pa.string())), "parquet")
    if kind == "wrong_type":
        col = {"events": "value", "items": "price", "users": "signup_ts"}[table]
        return _encode(
            _set(t, col, pc.cast(t.column(col), pa.string()), type_=pa.string()), "parquet"
        )
    if kind == "null_keys":
        keys = t.column(key_col).to_pylist()
        for i in _some(rng, n, 0.05):
            keys[i] = None
        return _encode(_set(t, key_col, keys, nullable=True), "parquet")
    if kind == "corrupt_parquet":
        _, data = _encode(t, "parquet")
        return "part-00000.parquet", data[: max(8, len(data) // 2)] + b"\x00garbage\xff"
    if kind == "non_utf8_csv":
        import pyarrow.csv as pcsv

        buf = io.BytesIO()
        pcsv.write_csv(t, buf)
        text = buf.getvalue().decode("utf-8")
        extra = {
            "events": f"e{day:%Y%m%d}-x000001,u_zoë,i_café,view,1.0,{day}T12:00:00Z",
            "items": f"i_café_{day:%Y%m%d},décor,9.99,{day}T00:00:01Z",
            "users": f"u_zoë_{day:%Y%m%d},{day}T00:00:01Z,FR,25-34",
        }[table]
        return "part-00000.csv", (text + extra + "\n").encode("cp1252")
    # the rest are events-only
    if kind == "duplicate_event_id":
        ids = t.column("event_id").to_pylist()
        idx = _some(rng, n, 0.02)
        src = rng.choice(n, size=len(idx))
        src = np.where(src == idx, (src + 1) % max(n, 1), src)
        for i, s in zip(idx, src, strict=True):
            ids[i] = ids[s]
        return _encode(_set(t, "event_id", ids), "parquet")
    if kind == "duplicate_event_id_earlier":
        earlier = _earlier_event_ids(lake, day)
        ids = t.column("event_id").to_pylist()
        idx = _some(rng, n, 0.02)
        picks = rng.choice(len(earlier), size=min(len(idx), len(earlier)), replace=False)
        for i, j in zip(idx, picks, strict=False):
            ids[i] = earlier[j]
        return _encode(_set(t, "event_id", ids), "parquet")
    if kind == "unknown_event_type":
        types = t.column("event_type").to_pylist()
        for i in _some(rng, n, 0.03):
            types[i] = "like"
        return _encode(_set(t, "event_type", types), "parquet")
    if kind == "rating_out_of_range":
        types, values = t.column("event_type").to_pylist(), t.column("value").to_pylist()
        for j, i in enumerate(_some(rng, n, 0.01)):
            types[i], values[i] = "rating", (7.0 if j % 2 == 0 else 0.0)
        return _encode(_set(_set(t, "event_type", types), "value", values), "parquet")
    if kind == "future_timestamps":
        ts = t.column("event_ts").cast(pa.int64()).to_numpy().copy()
        idx = _some(rng, n, 0.05)
        ts[idx] += 3650 * US_PER_DAY  # years ahead: past any data interval and any clock
        return _encode(
            _set(t, "event_ts", pa.array(ts).cast(pa.timestamp("us", tz="UTC"))), "parquet"
        )
    if kind == "unknown_items":
        items = t.column("item_id").to_pylist()
        for j, i in enumerate(_some(rng, n, 0.05)):
            items[i] = f"ix{j:06d}"
        return _encode(_set(t, "item_id", items), "parquet")
    if kind == "volume_collapse":
        return _encode(t.take(_some(rng, n, 0.02)), "parquet")
    raise SimulatorError(f"unknown fault kind {kind!r}: choose from {', '.join(FAULT_KINDS)}")


def inject_fault(
    lake: Lake, day: dt.date, kind: str, table: str | None = None, seed: int = 0
) -> dict:
    """Break the raw ``table`` batch of ``day`` (already in the lake) in the way ``kind`` names.

    Replaces the partition's file with the broken one, records it in ``sim/faults.json`` and
    returns the record ``{"date", "table", "kind", "file"}``. Kinds are :data:`FAULT_KINDS`;
    ``table`` defaults to :data:`FAULT_TABLE` ``[kind]`` (event-specific kinds need ``events``).
    """
    if kind not in FAULT_KINDS:
        raise SimulatorError(f"unknown fault kind {kind!r}: choose from {', '.join(FAULT_KINDS)}")
    table = table or FAULT_TABLE[kind]
    if table not in TABLES:
        raise SimulatorError(f"unknown table {table!r}: choose from {', '.join(TABLES)}")
    if kind in _EVENT_ONLY and table != "events":
        raise SimulatorError(f"fault {kind!r} applies to events only, not {table}")
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    rng = _rng(seed, 3, day.toordinal(), FAULT_KINDS.index(kind))
    batch = _read_batch(lake, table, day)
    name, data = _break(lake, day, kind, table, batch, rng)
    prefix = partition_prefix("raw", table, day)
    if not lake.list(CLEAN + prefix):  # keep the valid batch: repair_fault and re-injection use it
        for key in lake.list(prefix):
            lake.copy(key, CLEAN + key)
    lake.replace_partition(prefix, {name: data})
    record = {"date": day.isoformat(), "table": table, "kind": kind, "file": prefix + name}
    _record_faults(lake, day, table, record)
    return record


def _record_faults(lake: Lake, day: dt.date, table: str, record: dict | None) -> None:
    records = json.loads(lake.read_text(FAULTS)) if lake.exists(FAULTS) else []
    records = [r for r in records if (r["date"], r["table"]) != (day.isoformat(), table)]
    records = sorted(records + ([record] if record else []), key=lambda r: (r["date"], r["table"]))
    lake.write_text(FAULTS, json.dumps(records, indent=2))


def repair_fault(lake: Lake, day: dt.date, table: str) -> str:
    """Put the valid batch back (a corrected re-delivery); returns its key. Undoes :func:`inject_fault`."""
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    prefix = partition_prefix("raw", table, day)
    clean = lake.list(CLEAN + prefix)
    if not clean:
        raise SimulatorError(f"no broken {table} batch recorded for {day}: nothing to repair")
    lake.replace_partition(prefix, {k.rsplit("/", 1)[1]: lake.read_bytes(k) for k in clean})
    lake.delete_prefix(CLEAN + prefix)
    _record_faults(lake, day, table, None)
    return prefix + clean[0].rsplit("/", 1)[1]


# --------------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------------
@dataclass
class Truth:
    """The simulator's ground truth: true tastes and item factors, keyed by RAW ids."""

    meta: dict
    config: SimConfig
    users: pa.Table
    items: pa.Table
    taste0: np.ndarray
    taste1: np.ndarray
    factor: np.ndarray
    price: np.ndarray
    user_pos: dict[str, int]
    item_pos: dict[str, int]
    view_bias: np.ndarray  # gamma · log popularity + novelty boost
    user_signup: np.ndarray  # datetime64[D]
    item_created: np.ndarray  # datetime64[D]

    @property
    def start(self) -> dt.date:
        return dt.date.fromisoformat(self.meta["start"])

    @property
    def end(self) -> dt.date:
        """The last simulated day."""
        return self.start + dt.timedelta(days=self.meta["days"] - 1)

    @property
    def shift_date(self) -> dt.date | None:
        s = self.meta.get("shift_date")
        return dt.date.fromisoformat(s) if s else None

    def _index(self, ids, pos: dict[str, int], what: str, missing: int | None) -> np.ndarray:
        out = np.fromiter((pos.get(str(i), -1) for i in ids), dtype=np.int64)
        if missing is None and (out < 0).any():
            bad = [i for i, o in zip(ids, out, strict=True) if o < 0][:3]
            raise SimulatorError(
                f"unknown {what} id(s) in the ground truth: {', '.join(map(str, bad))}"
            )
        return np.where(out < 0, missing if missing is not None else -1, out)

    def user_index(self, user_ids, missing: int | None = None) -> np.ndarray:
        return self._index(user_ids, self.user_pos, "user", missing)

    def item_index(self, item_ids, missing: int | None = None) -> np.ndarray:
        return self._index(item_ids, self.item_pos, "item", missing)

    def available_items(self, date: dt.date | None = None) -> np.ndarray:
        """Indices of the items in the catalog on ``date`` (default: the last simulated day)."""
        return np.flatnonzero(self.item_created <= np.datetime64(date or self.end, "D"))

    def known_users(self, date: dt.date | None = None) -> np.ndarray:
        """Indices of the users signed up by ``date`` (default: the last simulated day)."""
        return np.flatnonzero(self.user_signup <= np.datetime64(date or self.end, "D"))

    def tastes(self, user_idx: np.ndarray, date: dt.date | None = None) -> np.ndarray:
        """True tastes on ``date`` (default: the last simulated day): post-shift after a taste shift."""
        day = date or self.end
        shifted = (
            self.shift_date is not None
            and self.meta.get("shift") == "taste_shift"
            and day >= self.shift_date
        )
        return (self.taste1 if shifted else self.taste0)[user_idx]

    def utility(self, user_ids, item_ids, date: dt.date | None = None) -> np.ndarray:
        """``taste · factor`` for every (user, item): shape ``(len(user_ids), len(item_ids))``."""
        return (
            self.tastes(self.user_index(user_ids), date) @ self.factor[self.item_index(item_ids)].T
        )

    def click_probability(self, user_ids, item_ids, date: dt.date | None = None) -> np.ndarray:
        """P(click | the item is shown at the top of a slate): matrix users × items, in [0, 1]."""
        return click_probability(self.utility(user_ids, item_ids, date), self.config)

    def relevance(self, user_ids, item_ids, date: dt.date | None = None) -> np.ndarray:
        """True expected preference, matrix ``len(user_ids) × len(item_ids)``.

        The probability that one browsing view of the user on ``date`` lands on the item *and*
        is clicked -- taste, popularity and novelty together, over the catalog of that day (items
        not yet created get 0). Sorting a user's row gives the oracle ranking of the logged
        interactions (oracle NDCG); scale-free per user. Users are RAW ids.
        """
        cfg = self.config
        day = date or self.end
        taste = self.tastes(self.user_index(user_ids), day)
        avail = self.available_items(day)
        logits = cfg.beta * (taste @ self.factor[avail].T) + self.view_bias[avail]
        top = logits.max(axis=1, keepdims=True)
        log_norm = top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
        idx = self.item_index(item_ids)
        util = taste @ self.factor[idx].T
        p_view = np.exp(cfg.beta * util + self.view_bias[idx] - log_norm)
        p_view[:, self.item_created[idx] > np.datetime64(day, "D")] = 0.0
        return p_view * click_probability(util, cfg)


def load_truth(lake: Lake) -> Truth:
    """Read ``sim/`` back; a :class:`SimulatorError` if no simulation ran in this lake."""
    if not lake.exists("sim/meta.json"):
        raise SimulatorError(
            f"no simulator ground truth at {lake.url('sim/meta.json')}: run `flywheel simulate` first"
        )
    meta = json.loads(lake.read_text("sim/meta.json"))
    cfg_d = meta["config"]
    cfg = SimConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg_d.items()})
    users = lake.read_parquet("sim/users.parquet")
    items = lake.read_parquet("sim/items.parquet")

    def mat(t, p):
        return np.column_stack([t.column(f"{p}{j}").to_numpy() for j in range(cfg.dim)])

    uid = users.column("user_id").to_pylist()
    iid = items.column("item_id").to_pylist()
    return Truth(
        meta=meta,
        config=cfg,
        users=users,
        items=items,
        taste0=mat(users, "f"),
        taste1=mat(users, "g"),
        factor=mat(items, "f"),
        price=items.column("price").to_numpy(),
        user_pos={u: i for i, u in enumerate(uid)},
        item_pos={it: i for i, it in enumerate(iid)},
        view_bias=cfg.gamma * items.column("log_popularity").to_numpy()
        + items.column("boost").to_numpy(),
        user_signup=users.column("signup_date").to_numpy().astype("datetime64[D]"),
        item_created=items.column("created_date").to_numpy().astype("datetime64[D]"),
    )
