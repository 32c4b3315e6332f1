"""What serving knows from the lake, and the popularity fallback.

:class:`ServingData` is a snapshot of validated data, loaded at start and again whenever a new
model version is swapped in:

* the catalog (every validated item id) -- served items must be known so the feedback on them
  passes the next ingest gate;
* per user (pseudonym) the items they purchased in the last ``history_days`` days -- excluded
  from their recommendations (purchases that arrive through ``/feedback`` are added in memory);
* per user their country (validated users);
* item popularity over the same window, overall and per country.

The fallback, for users the model cannot serve (no online features, or the model returns
nothing for them), is documented here and in the API: the most popular items among users of the
user's country (``popular_country``) when the country is known from validated users and has any
activity, otherwise the most popular items overall (``popular_overall``). Popularity is a
weighted count of interactions in the window (view 0.1, click 1, add to cart 2, purchase 3,
rating ``value``/5), scaled so the top item scores 1.0. Purchased items are excluded here too.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.contract import EVENTS, ITEMS, USERS
from core.lake import VALIDATED, Lake

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

POPULAR_COUNTRY = "popular_country"
POPULAR_OVERALL = "popular_overall"

WEIGHTS: dict[str, float] = {"view": 0.1, "click": 1.0, "add_to_cart": 2.0, "purchase": 3.0}
_TOP_N = 1000  # popular items kept per list: far more than any k plus purchases to skip


def _ranked(scores: pd.Series) -> list[tuple[str, float]]:
    top = scores.nlargest(_TOP_N)
    peak = float(top.iloc[0]) if len(top) and top.iloc[0] > 0 else 1.0
    return [(str(i), float(s) / peak) for i, s in top.items()]


def _pairs(table: pa.Table | None, key: str, value: str) -> list[tuple]:
    """(key, value) rows of two columns of a table (none when there is no table)."""
    if table is None:
        return []
    return list(zip(table.column(key).to_pylist(), table.column(value).to_pylist(), strict=True))


def _purchases(events: pa.Table) -> dict[str, set[str]]:
    """Items each user purchased in ``events``."""
    import pyarrow.compute as pc

    bought = events.filter(pc.equal(events.column("event_type"), "purchase"))
    purchased: dict[str, set[str]] = {}
    for user, item in _pairs(bought, "user_id", "item_id"):
        purchased.setdefault(user, set()).add(item)
    return purchased


def _weighted(events: pa.Table, catalog: frozenset[str]) -> pa.Table:
    """``user_id, item_id, w``: each interaction with a catalogued item and its weight."""
    import pyarrow as pa
    import pyarrow.compute as pc

    etype = events.column("event_type")
    weight = pc.multiply(pc.divide(events.column("value"), 5.0), 1.0)
    for name, w in WEIGHTS.items():
        weight = pc.if_else(pc.equal(etype, name), w, weight)
    scored = pa.table(
        {"user_id": events.column("user_id"), "item_id": events.column("item_id"), "w": weight}
    )
    scored = scored.filter(
        pc.invert(pc.is_null(pc.index_in(etype, pa.array([*WEIGHTS, "rating"]))))
    )
    if catalog:
        scored = scored.filter(pc.is_in(scored.column("item_id"), pa.array(sorted(catalog))))
    return scored


def _popular_by_country(
    scored: pa.Table, users: pa.Table | None
) -> dict[str, list[tuple[str, float]]]:
    """Ranked popularity among the users of each country known from validated users."""
    if users is None or users.num_rows == 0:
        return {}
    joined = scored.join(users, "user_id", join_type="inner")
    if joined.num_rows == 0:
        return {}
    by = joined.group_by(["country", "item_id"]).aggregate([("w", "sum")]).to_pandas()
    return {
        str(c): _ranked(g.set_index("item_id")["w_sum"])
        for c, g in by.groupby("country", sort=False)
    }


@dataclass
class ServingData:
    """A snapshot of validated data for serving (see the module docstring)."""

    catalog: frozenset[str] = frozenset()
    purchased: dict[str, set[str]] = field(default_factory=dict)
    user_country: dict[str, str] = field(default_factory=dict)
    popular_overall: list[tuple[str, float]] = field(default_factory=list)
    popular_by_country: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    as_of: dt.date | None = None
    _extra_purchases: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_lake(cls, lake: Lake, history_days: int = 28) -> ServingData:
        """Load the snapshot: all validated items and users, the last ``history_days`` of events."""
        items = lake.read(ITEMS.name, columns=["item_id"], zone=VALIDATED)
        catalog = (
            frozenset(items.column("item_id").to_pylist()) if items is not None else frozenset()
        )
        users = lake.read(USERS.name, columns=["user_id", "country"], zone=VALIDATED)
        days = lake.partitions(VALIDATED, EVENTS.name)
        as_of = days[-1] if days else None
        window = [d for d in days if as_of and d > as_of - dt.timedelta(days=history_days)]
        events = lake.read(
            EVENTS.name, window, ["user_id", "item_id", "event_type", "value"], zone=VALIDATED
        )
        data = cls(
            catalog=catalog, user_country=dict(_pairs(users, "user_id", "country")), as_of=as_of
        )
        if events is None or events.num_rows == 0:
            return data
        # Arrow kernels, not pandas: the window can hold millions of events, and only the
        # aggregates (per item, per country and item) and the purchases leave Arrow.
        data.purchased = _purchases(events)
        scored = _weighted(events, catalog)
        if scored.num_rows == 0:
            return data
        overall = scored.group_by("item_id").aggregate([("w", "sum")]).to_pandas()
        data.popular_overall = _ranked(overall.set_index("item_id")["w_sum"])
        data.popular_by_country = _popular_by_country(scored, users)
        return data

    # --- purchases ----------------------------------------------------------------------------
    def purchased_by(self, user_id: str) -> set[str]:
        """Items this (pseudonymised) user bought: validated history plus live feedback."""
        base = self.purchased.get(user_id, set())
        extra = self._extra_purchases.get(user_id)
        return base | extra if extra else base

    def add_purchase(self, user_id: str, item_id: str) -> None:
        with self._lock:
            self._extra_purchases.setdefault(user_id, set()).add(item_id)

    def carry_purchases_from(self, older: ServingData) -> None:
        """Keep live purchases across a reload (they reach validated data only after ingest)."""
        with older._lock:
            for user, items in older._extra_purchases.items():
                self._extra_purchases.setdefault(user, set()).update(items)

    # --- fallback -----------------------------------------------------------------------------
    def is_known_item(self, item_id: str) -> bool:
        return item_id in self.catalog

    def fallback(
        self, user_id: str, k: int, exclude: Iterable[str] = ()
    ) -> tuple[list[str], list[float], str]:
        """Popular items for a user the model cannot serve: (items, scores, which fallback)."""
        skip = set(exclude)
        country = self.user_country.get(user_id)
        ranked = self.popular_by_country.get(country) if country else None
        kind = POPULAR_COUNTRY
        if not ranked:
            ranked, kind = self.popular_overall, POPULAR_OVERALL
        items, scores = [], []
        for item, score in ranked:
            if item in skip:
                continue
            items.append(item)
            scores.append(score)
            if len(items) == k:
                break
        if len(items) < k and kind == POPULAR_COUNTRY:
            # a small country: top up with overall popularity, still labelled by its origin
            seen = skip | set(items)
            for item, score in self.popular_overall:
                if item not in seen:
                    items.append(item)
                    scores.append(score)
                    if len(items) == k:
                        break
        return items, scores, kind
