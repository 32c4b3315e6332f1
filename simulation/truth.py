"""The simulator's ground truth, kept in the lake under ``sim/`` beside the raw data it explains.

* ``sim/users.parquet`` -- raw ``user_id``, signup date, country, age band, activity, cohort and
  the latent taste before (``f0…``) and after (``g0…``) a taste shift;
* ``sim/items.parquet`` -- ``item_id``, category, price, popularity, novelty boost, factors ``f0…``;
* ``sim/meta.json`` -- scenario, seed, start, days, shift day, the config.

:func:`load_truth` reads it back as a :class:`Truth`: true tastes, relevance and click
probabilities, for the oracle metrics of training and for the simulated traffic.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.lake import Lake
from simulation.behaviour import click_probability
from simulation.config import SIM, SimConfig, SimulatorError
from simulation.world import World

if TYPE_CHECKING:
    import pyarrow as pa

META = SIM + "meta.json"
USERS_TRUTH = SIM + "users.parquet"
ITEMS_TRUTH = SIM + "items.parquet"


def _dates(start: dt.date, days: np.ndarray) -> np.ndarray:
    """``start`` + ``days`` (day indices) as dates: Arrow's date32, a million at a time."""
    return np.datetime64(start, "D") + days.astype("timedelta64[D]")


def write_truth(lake: Lake, w: World, meta: dict) -> None:
    """Write the world's ground truth and ``meta`` (its ``start_date``, a date, is not written)."""
    import pyarrow as pa

    dim = w.cfg.dim
    users = {
        "user_id": w.user_id,
        "signup_date": _dates(meta["start_date"], w.user_day),
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
        "created_date": _dates(meta["start_date"], w.item_day),
    }
    items |= {f"f{j}": w.factor[:, j] for j in range(dim)}
    lake.write_parquet(USERS_TRUTH, pa.table(users))
    lake.write_parquet(ITEMS_TRUTH, pa.table(items))
    lake.write_text(
        META, json.dumps({k: v for k, v in meta.items() if k != "start_date"}, indent=2)
    )


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
    if not lake.exists(META):
        raise SimulatorError(
            f"no simulator ground truth at {lake.url(META)}: run `flywheel simulate` first"
        )
    meta = json.loads(lake.read_text(META))
    cfg_d = meta["config"]
    cfg = SimConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg_d.items()})
    users = lake.read_parquet(USERS_TRUTH)
    items = lake.read_parquet(ITEMS_TRUTH)

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
