"""Simulated users against the serving API: ``flywheel simulate --serve-url URL --days N``.

For each simulated day, the users who are active that day (same activity model as the offline
simulator) ask the service for recommendations::

    GET  {url}/recommendations/{user_id}?k=10
         → {"request_id", "user_id", "items": [{"item_id", "score"}], "model_version", "variant", "fallback"}

and answer the slate with the simulator's own behaviour model (:func:`simulation.behaviour.respond`,
with a position bias), posting each click, add to cart, purchase and rating::

    POST {url}/feedback  {"request_id", "item_id", "event_type", "value"}

Users are the simulator's raw ids, their tastes the ground truth in ``sim/`` (post-shift after a
taste shift). Traffic is bounded: at most ``max_requests`` recommendation requests and
``time_limit_s`` seconds, and only to a loopback address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from core.lake import Lake, get_lake
from core.names import FEEDBACK_EVENT_TYPES
from simulation.behaviour import click_probability, respond
from simulation.config import SimulatorError
from simulation.truth import Truth, load_truth
from simulation.world import stream_rng

if TYPE_CHECKING:
    import httpx


@dataclass
class TrafficSummary:
    """What the simulated users did against the service."""

    url: str
    days: list[str] = field(default_factory=list)
    requests: int = 0
    errors: int = 0  # recommendation requests that failed
    feedback_errors: int = 0
    fallbacks: int = 0
    unknown_items: int = 0
    feedback: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FEEDBACK_EVENT_TYPES, 0))
    variants: dict[str, int] = field(default_factory=dict)
    # which model answered (a registered version, or "popularity" for a fallback): slates and
    # their mean true relevance per version, so a figure is read against the model that earned it
    model_versions: dict[str, int] = field(default_factory=dict)
    relevance_by_version: dict[str, float] = field(default_factory=dict)
    served_relevance: float = 0.0  # mean true relevance of the served slates
    oracle_relevance: float = 0.0  # mean true relevance of each user's true top-k
    stopped: str = ""  # why traffic stopped early, if it did

    @property
    def clicks_per_slate(self) -> float:
        """Clicks per served slate (a slate has several items: it can exceed 1; not a CTR)."""
        shown = self.requests - self.errors
        return self.feedback["click"] / shown if shown else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"clicks_per_slate": self.clicks_per_slate}


def check_loopback(url: str) -> str:
    """``url`` without a trailing slash, or a :class:`SimulatorError` unless it is http(s) on loopback."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.scheme not in ("http", "https") or not host:
        raise SimulatorError(
            f"--serve-url {url!r} is not an http(s) URL like http://127.0.0.1:8000"
        )
    try:
        loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = False
    if not loop:
        raise SimulatorError(
            f"--serve-url {url!r}: simulated traffic only goes to a loopback address"
        )
    return url.rstrip("/")


def active_users(truth: Truth, day: dt.date, rng: np.random.Generator) -> np.ndarray:
    """Indices of the users active on ``day`` (signed up by then; activity × weekly cycle)."""
    cfg = truth.config
    known = truth.known_users(day)
    act = truth.users.column("activity").to_numpy()[known]
    p = np.clip(cfg.active_rate * act * cfg.weekly[day.weekday()], 0, 0.95)
    return known[rng.random(len(known)) < p]


def play(
    url: str,
    days: int = 1,
    *,
    lake: Lake | None = None,
    seed: int = 0,
    k: int = 10,
    max_requests: int = 2000,
    time_limit_s: float = 300.0,
    start: dt.date | None = None,
    client: httpx.Client | None = None,
    progress: bool = False,
) -> TrafficSummary:
    """Play ``days`` days of simulated users against the service at ``url``.

    Days start the day after the offline simulation (or at ``start``). ``client`` replaces the
    HTTP client (tests pass FastAPI's ``TestClient``; then ``url`` is not checked).
    """
    import httpx

    if days < 1 or k < 1 or max_requests < 1:
        raise SimulatorError(
            f"--days, --k and --max-requests must be ≥ 1 (got {days}, {k}, {max_requests})"
        )
    truth = load_truth(lake or get_lake())
    base = url.rstrip("/") if client is not None else check_loopback(url)
    own = client is None
    http = client or httpx.Client(timeout=10.0)
    first = start or truth.end + dt.timedelta(days=1)
    summary = TrafficSummary(url=base)
    served: list[tuple[str, float]] = []  # (model version, true relevance of its slate)
    oracle: list[float] = []
    deadline = time.monotonic() + time_limit_s
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_requests, desc="simulated users", unit="req")
    try:
        for j in range(days):
            day = first + dt.timedelta(days=j)
            summary.days.append(day.isoformat())
            rng = stream_rng(seed, 4, day.toordinal())
            # an even share of the remaining requests; a quiet day leaves more for the next
            share = (max_requests - summary.requests) // (days - j)
            users = active_users(truth, day, rng)[: max(1, share)]
            for u in users:
                if summary.requests >= max_requests:
                    summary.stopped = f"max_requests={max_requests} reached"
                    return summary
                if time.monotonic() > deadline:
                    summary.stopped = f"time limit {time_limit_s:.0f}s reached"
                    return summary
                _one_user(http, base, truth, int(u), day, k, rng, summary, served, oracle)
                if bar is not None:
                    bar.update(1)
    finally:
        summary.served_relevance = float(np.mean([r for _, r in served])) if served else 0.0
        for version in summary.model_versions:
            mine = [r for v, r in served if v == version]
            summary.relevance_by_version[version] = float(np.mean(mine)) if mine else 0.0
        summary.oracle_relevance = float(np.mean(oracle)) if oracle else 0.0
        if bar is not None:
            bar.close()
        if own:
            http.close()
    return summary


def _one_user(http, base, truth: Truth, u: int, day, k, rng, summary, served, oracle) -> None:
    import httpx

    user_id = truth.users.column("user_id")[u].as_py()
    summary.requests += 1
    try:
        r = http.get(f"{base}/recommendations/{user_id}", params={"k": k})
    except httpx.TransportError as exc:
        raise SimulatorError(f"cannot reach the serving API at {base}: {exc}") from None
    if r.status_code != 200:
        summary.errors += 1
        return
    body = r.json()
    summary.fallbacks += bool(body.get("fallback"))
    variant = str(body.get("variant", ""))
    summary.variants[variant] = summary.variants.get(variant, 0) + 1
    version = str(body.get("model_version") or "unknown")
    summary.model_versions[version] = summary.model_versions.get(version, 0) + 1
    slate = [it["item_id"] for it in body.get("items", [])][:k]
    idx = truth.item_index(slate, missing=-1)
    summary.unknown_items += int((idx < 0).sum())
    pos = np.flatnonzero(idx >= 0)
    taste = truth.tastes(np.array([u]), day)[0]
    # the best the service could have done (items existing that day) vs what it did
    avail = truth.available_items(day)
    true_rel = click_probability(truth.factor[avail] @ taste, truth.config)
    oracle.append(float(np.sort(true_rel)[::-1][:k].mean()))
    if not len(pos):
        served.append((version, 0.0))
        return
    util = truth.factor[idx[pos]] @ taste
    served.append((version, float(click_probability(util, truth.config).sum() / k)))
    resp = respond(
        util, truth.price[idx[pos]], rng, truth.config, truth.meta["ref_price"], position=pos
    )
    request_id = body.get("request_id")
    for j, p in enumerate(pos):
        for event_type, hit, value in (
            ("click", resp.clicked[j], 1.0),
            ("add_to_cart", resp.carted[j], 1.0),
            ("purchase", resp.purchased[j], 1.0),
            ("rating", resp.rated[j], float(resp.rating[j])),
        ):
            if not hit:
                continue
            payload = {
                "request_id": request_id,
                "item_id": slate[p],
                "event_type": event_type,
                "value": value,
            }
            try:
                fr = http.post(f"{base}/feedback", json=payload)
            except httpx.TransportError as exc:
                raise SimulatorError(f"cannot reach the serving API at {base}: {exc}") from None
            if fr.status_code >= 300:
                summary.feedback_errors += 1
            else:
                summary.feedback[event_type] += 1
