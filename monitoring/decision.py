"""The drift decision and the retraining cooldown: pure functions over a :class:`DriftResult`.

Drift is decided when the share of drifted columns reaches ``drift_share`` or the slate quality
drop reaches ``quality_drop`` (:func:`decide`). A detected drift only *triggers* retraining
outside the cooldown (:func:`apply_cooldown`): no training queued (one that has not started
trains on the newest data anyway; one already running started before the drift was known, so the
trigger still goes out and queues behind it), and ``cooldown_days`` since the last trigger.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from core.names import TRAIN_DAG
from monitoring.config import PREDICTION_COLUMNS, DriftConfig


@dataclass
class DriftResult:
    """The outcome of one day's check; :meth:`summary` is what goes to the lake and the Asset."""

    date: str
    drift_detected: bool
    drift_share: float | None
    drifted_columns: list[str]
    quality_drop: float | None
    reason: str
    report_uri: str | None = None
    candidate: bool = False  # drift seen, before the cooldown
    suppressed_by: str | None = None
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_window: list[str] | None = None
    reference_rows: int = 0
    current_rows: int = 0
    champion_version: str | None = None
    prediction_drift: dict[str, float] | None = None
    quality: dict[str, float] | None = None
    snapshot_id: str | None = None

    def summary(self) -> dict[str, Any]:
        """Every field as a plain dict (stored as ``summary.json``, sent as Asset metadata)."""
        return dataclasses.asdict(self)

    @classmethod
    def no_decision(cls, day: dt.date, reason: str) -> DriftResult:
        """A day that could not be judged (no champion yet, inside its window): no drift."""
        return cls(
            date=day.isoformat(),
            drift_detected=False,
            drift_share=None,
            drifted_columns=[],
            quality_drop=None,
            reason=reason,
        )


def too_little_traffic(result: DriftResult, config: DriftConfig) -> bool:
    """True (and the reason set) when day D has fewer active rows than ``min_rows``."""
    if result.current_rows >= config.min_rows:
        return False
    result.reason = (
        f"too little traffic on {result.date}: {result.current_rows} active rows "
        f"< min_rows {config.min_rows}"
    )
    return True


def decide(
    result: DriftResult,
    per_column: dict[str, dict[str, Any]],
    share: float,
    config: DriftConfig,
) -> DriftResult:
    """Fill in the report's scores and the drift decision (before any cooldown), with its reason.

    ``result.quality_drop`` must already be set (None without served slates).
    """
    result.columns = per_column
    result.drift_share = round(share, 6)
    result.drifted_columns = sorted(c for c, v in per_column.items() if v["drifted"])
    rec = {c: per_column[c]["score"] for c in PREDICTION_COLUMNS if c in per_column}
    result.prediction_drift = rec or None
    quality_drop = result.quality_drop
    reasons = []
    if share >= config.drift_share:
        reasons.append(
            f"{len(result.drifted_columns)}/{len(per_column)} columns drifted "
            f"(share {share:.2f} ≥ {config.drift_share}): {', '.join(result.drifted_columns)}"
        )
    if quality_drop is not None and quality_drop >= config.quality_drop:
        reasons.append(f"slate CTR dropped {quality_drop:.0%} (≥ {config.quality_drop:.0%})")
    result.candidate = result.drift_detected = bool(reasons)
    if reasons:
        result.reason = "drift: " + "; ".join(reasons)
    else:
        q = (
            ""
            if quality_drop is None
            else f", quality drop {quality_drop:.2f} < {config.quality_drop}"
        )
        result.reason = f"no drift: share {share:.2f} < {config.drift_share}{q}"
    return result


def apply_cooldown(
    result: DriftResult,
    config: DriftConfig,
    last_trigger: str | None = None,
    trainings_in_flight: int = 0,
) -> DriftResult:
    """Turn a drift candidate into a trigger unless a training is queued or the last is recent.

    ``last_trigger`` is the day (ISO) of the last trigger sent, if any; a re-run of that day
    itself is not blocked by its own trigger.
    """
    if not result.candidate:
        return result
    day = dt.date.fromisoformat(result.date)
    if trainings_in_flight:
        result.suppressed_by = f"{trainings_in_flight} {TRAIN_DAG} run(s) queued"
    elif (
        last_trigger
        and day > dt.date.fromisoformat(last_trigger)
        and (day - dt.date.fromisoformat(last_trigger)).days < config.cooldown_days
    ):
        result.suppressed_by = (
            f"cooldown: last trigger on {last_trigger}, {config.cooldown_days} days must pass"
        )
    if result.suppressed_by:
        result.drift_detected = False
        result.reason += f" — not triggering ({result.suppressed_by})"
    return result
