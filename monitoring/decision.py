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
from collections.abc import Iterable
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
    sampled_rows: dict[str, int] | None = None  # rows compared per side, when sampled
    champion_version: str | None = None
    prediction_drift: dict[str, float] | None = None
    quality: dict[str, float] | None = None
    snapshot_id: str | None = None
    #: The retraining trigger emitted for this day (``{"run_id", "at"}``, from the trigger log),
    #: or None: what the pages show comes from here, never from ``drift_detected`` alone.
    trigger: dict[str, Any] | None = None
    decision: str = ""

    def summary(self) -> dict[str, Any]:
        """Every field as a plain dict (stored as ``summary.json``, sent as Asset metadata)."""
        self.decision = decision_label(dataclasses.asdict(self))
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


def decision_label(summary: dict[str, Any]) -> str:
    """What happened on a day, in words, from its summary (``trigger`` = an emitted event).

    ``drift, retrain triggered`` only when a trigger was emitted for the day; a drift that did
    not trigger says why (``suppressed: …``); ``drift, trigger pending`` between the decision
    and the emission (or when the emission failed); ``nothing compared: <why>`` for a day
    without a comparison (never a plain "no drift").
    """
    if summary.get("trigger"):
        run = summary["trigger"].get("run_id")
        return "drift, retrain triggered" + (f" (run {run})" if run else "")
    if summary.get("candidate") or summary.get("drift_detected"):
        if summary.get("suppressed_by"):
            return f"drift, suppressed: {summary['suppressed_by']}"
        return "drift, trigger pending"
    if summary.get("drift_share") is None:  # no report: the check compared nothing
        return f"nothing compared: {summary.get('reason') or 'no reason recorded'}"
    return "no drift"


def apply_cooldown(
    result: DriftResult,
    config: DriftConfig,
    triggers: Iterable[str] | str | None = None,
    trainings_in_flight: int = 0,
) -> DriftResult:
    """Turn a drift candidate into a trigger unless one is not due.

    ``triggers``: the days (ISO) that already triggered retraining (or will, earlier in the
    same run). Not due: the day itself already triggered (one trigger per day, whatever
    re-runs or retries happen), a training is queued, a later day already triggered, or the
    last earlier trigger is less than ``cooldown_days`` ago.
    """
    if not result.candidate:
        return result
    day = dt.date.fromisoformat(result.date)
    days = [triggers] if isinstance(triggers, str) else list(triggers or ())
    done = sorted(dt.date.fromisoformat(d[:10]) for d in days)
    before = [t for t in done if t < day]
    later = [t for t in done if t > day]
    if day in done:
        result.suppressed_by = f"retraining for {day} was already triggered"
    elif trainings_in_flight:
        result.suppressed_by = f"{trainings_in_flight} {TRAIN_DAG} run(s) queued"
    elif later:
        result.suppressed_by = f"a later day ({later[-1]}) already triggered retraining"
    elif before and (day - before[-1]).days < config.cooldown_days:
        result.suppressed_by = (
            f"cooldown: last trigger on {before[-1]}, {config.cooldown_days} days must pass"
        )
    if result.suppressed_by:
        result.drift_detected = False
        result.reason += f" — not triggering ({result.suppressed_by})"
    return result
