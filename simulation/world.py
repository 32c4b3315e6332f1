"""The world of a run: every user and item, with their latent factors, its clock and its dice.

Users and items live in a low-dimensional latent space; categories are clusters in it. The
world holds everyone who ever appears in the run (the initial population and catalog, daily
growth, a shift's wave), each with the day they arrive. :func:`build_world` draws it from
separate random streams, so a scenario's days before its shift equal the stable run's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from core.contract import AGE_BUCKETS
from simulation.config import SimConfig

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


# --------------------------------------------------------------------------------------------
# clock and dice
# --------------------------------------------------------------------------------------------
def day_of(start: dt.date, d: int) -> dt.date:
    """The date of day index ``d`` of a run starting on ``start``."""
    return start + dt.timedelta(days=d)


def day_us(day: dt.date) -> int:
    """Midnight (UTC) of ``day`` in µs since the epoch: the unit of every simulated timestamp."""
    return (day - dt.date(1970, 1, 1)).days * US_PER_DAY


def stream_rng(seed: int, *stream: int) -> np.random.Generator:
    """The random stream ``(seed, *stream)``: each part of a run draws from its own."""
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


@dataclass(frozen=True)
class _Categories:
    """The base categories: clusters in the latent space, with a share of tastes and a price."""

    names: list[str]
    centres: np.ndarray  # unit vectors, one per category
    weight: np.ndarray  # share of the users' tastes (sums to 1)
    price: np.ndarray  # typical price


#: A block of users or items (column → values) and each one's arrival day index.
_Block = tuple[dict[str, np.ndarray], np.ndarray]


def _categories(rng: np.random.Generator, cfg: SimConfig) -> _Categories:
    k_base = cfg.n_categories
    names = list(_BASE_CATEGORIES[:k_base]) + [f"category_{i}" for i in range(12, k_base)]
    centres = _unit(rng.normal(size=(k_base, cfg.dim)))
    cat_p = np.exp(rng.normal(0, 0.8, size=k_base))
    cat_p /= cat_p.sum()
    cat_price = np.exp(rng.normal(3.0, 0.6, size=k_base))
    return _Categories(names, centres, cat_p, cat_price)


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
        day_us(start) + days.astype(np.int64) * US_PER_DAY + rng.integers(0, 600_000_000, len(days))
    )


def _arrivals(
    rng: np.random.Generator, rate: float, n: int, days: int, quiet: Collection[int]
) -> np.ndarray:
    """Arrival day of ``n`` initial ones (day 0) and of a Poisson ``rate * n`` more each day.

    ``quiet`` days get nobody new.
    """
    growth = [0] + [int(rng.poisson(rate * n)) for d in range(1, days)]
    growth = [0 if d in quiet else g for d, g in enumerate(growth)]
    return np.repeat(np.arange(days), [n + g if d == 0 else g for d, g in enumerate(growth)])


def _wave_days(
    rng: np.random.Generator, n: int, share: float, shift_day: int, days: int
) -> np.ndarray:
    """A shift's wave arrives on the shift day (``share`` of it) and the day after."""
    return np.where(rng.random(n) < share, shift_day, min(shift_day + 1, days - 1))


def _by_day(blocks: list[_Block]) -> _Block:
    """The blocks as one, sorted by arrival day (stable: initial ones keep their order)."""
    if len(blocks) == 1 and (np.diff(blocks[0][1]) >= 0).all():
        return blocks[0]  # already in order: no copy of a million users' columns
    days = np.concatenate([d for _, d in blocks])
    merged = {k: np.concatenate([b[k] for b, _ in blocks]) for k in blocks[0][0]}
    order = np.argsort(days, kind="stable")
    return {k: v[order] for k, v in merged.items()}, days[order]


def _base_users(rng_u, cfg: SimConfig, cats: _Categories, n_users: int, days: int, quiet) -> _Block:
    """The initial population and the daily signups."""
    u_days = _arrivals(rng_u, cfg.daily_signups, n_users, days, quiet)
    block = _user_block(
        rng_u, cfg, cats.centres, len(u_days), cats.weight, _BASE_COUNTRIES, _BASE_AGES, 1.0, "base"
    )
    return block, u_days


def _population_wave(
    rng_s, cfg: SimConfig, cats: _Categories, n_users: int, shift_day: int, days: int
) -> _Block:
    """A population shift: newcomers from other countries, younger, more active, other tastes."""
    cat_p = cats.weight
    n_wave = int(round(cfg.population_wave * n_users))
    wave_p = cat_p[::-1] ** 2 / (cat_p[::-1] ** 2).sum()  # the least popular categories first
    block = _user_block(rng_s, cfg, cats.centres, n_wave, wave_p, _WAVE_COUNTRIES, _WAVE_AGES,
                        cfg.population_activity, "wave")  # fmt: skip
    return block, _wave_days(rng_s, n_wave, 0.6, shift_day, days)


def _shifted_tastes(rng_s, cfg: SimConfig, cats: _Categories, users: dict) -> np.ndarray:
    """The users' tastes after a taste shift (unchanged for the users who do not move)."""
    k_base = len(cats.weight)
    centres = cats.centres
    taste1 = users["taste"].copy()
    # favourite categories move to their mirror in the popularity ranking: strong, visible
    rank = np.argsort(cats.weight)
    perm = np.empty(k_base, dtype=int)
    perm[rank] = rank[::-1]
    fixed = np.flatnonzero(perm == np.arange(k_base))
    for f in fixed:  # odd count: the middle one swaps with its neighbour
        other = (f + 1) % k_base
        perm[f], perm[other] = perm[other], perm[f]
    # ... and most movers follow a trend towards the least popular quarter of the categories
    n_u = len(taste1)
    moved = rng_s.random(n_u) < cfg.taste_shift_fraction
    trend = rng_s.choice(rank[: max(1, k_base // 4)], n_u)
    main1 = np.where(rng_s.random(n_u) < 0.85, trend, perm[users["main"]])
    new = cfg.taste_scale * (0.75 * centres[main1] + 0.25 * centres[perm[users["second"]]])
    taste1[moved] = new[moved] + users["noise"][moved]
    return taste1


def _base_items(rng_i, cfg: SimConfig, cats: _Categories, n_items: int, days: int, quiet) -> _Block:
    """The initial catalog and the daily novelties."""
    i_days = _arrivals(rng_i, cfg.daily_new_items, n_items, days, quiet)
    k_base = len(cats.weight)
    return _item_block(rng_i, cfg, cats.centres, len(i_days), np.arange(k_base), cats.price), i_days


def _catalog_wave(
    rng_s, cfg: SimConfig, cats: _Categories, n_items: int, shift_day: int, days: int
) -> tuple[_Block, list[str]]:
    """A catalog shift: pricier, boosted items in new categories between two old ones."""
    k_base, cat_p, centres, cat_price = len(cats.weight), cats.weight, cats.centres, cats.price
    k_new = cfg.catalog_new_categories
    names = [
        _WAVE_CATEGORIES[i] if i < len(_WAVE_CATEGORIES) else f"wave_{i}" for i in range(k_new)
    ]
    pairs = np.array([rng_s.choice(k_base, 2, replace=False, p=cat_p) for _ in range(k_new)])
    new_centres = _unit(centres[pairs[:, 0]] + centres[pairs[:, 1]])
    all_centres = np.vstack([centres, new_centres])
    wave_price = np.median(cat_price) * rng_s.lognormal(0, 0.2, size=k_new)
    all_price = np.concatenate([cat_price, wave_price])
    n_wave = int(round(cfg.catalog_wave * n_items))
    block = _item_block(rng_s, cfg, all_centres, n_wave, np.arange(k_base, k_base + k_new), all_price,
                        cfg.catalog_price_factor, cfg.catalog_boost)  # fmt: skip
    return (block, _wave_days(rng_s, n_wave, 0.7, shift_day, days)), names


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
    """All users and items of the run (initial, daily growth and shift waves), deterministic.

    ``quiet_days``: table (``users``, ``items``) → day indices on which nobody new arrives.
    """
    quiet = quiet_days or {}
    # separate streams: a scenario's days before its shift equal the stable run's
    rng, rng_u, rng_i, rng_s = (stream_rng(seed, 0, j) for j in range(4))
    cats = _categories(rng, cfg)
    user_blocks = [_base_users(rng_u, cfg, cats, n_users, days, quiet.get("users", ()))]
    if shift == "population_shift":
        user_blocks.append(_population_wave(rng_s, cfg, cats, n_users, shift_day, days))
    users, u_days = _by_day(user_blocks)
    taste1 = (
        _shifted_tastes(rng_s, cfg, cats, users)
        if shift == "taste_shift"
        else users["taste"].copy()
    )
    names = list(cats.names)
    item_blocks = [_base_items(rng_i, cfg, cats, n_items, days, quiet.get("items", ()))]
    if shift == "catalog_shift":
        wave, wave_names = _catalog_wave(rng_s, cfg, cats, n_items, shift_day, days)
        item_blocks.append(wave)
        names += wave_names
    items, i_days = _by_day(item_blocks)

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
