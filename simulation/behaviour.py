"""The behaviour model: how a user responds to a shown item, in one place.

Shared by the offline simulator (organic views) and the simulated traffic against the serving
API (served slates, with a position bias). A shown item goes through the funnel of
:func:`respond`: click, add to cart, purchase, rating, each more likely with higher utility
(``taste · factor``); purchases are less likely for expensive items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.config import SimConfig


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
    """P(click) of shown items of this ``utility``; lower further down a slate (``position``)."""
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
