"""Every threshold of the drift check and the retraining trigger, in one typed config.

Per column, a method suited to its type:

* numeric → normed Wasserstein distance (distance / reference std) — a distance, not a p-value,
  so 100k-row samples do not flag negligible differences;
* categorical → Jensen-Shannon distance between the category frequencies.

The prediction-drift columns (:data:`PREDICTION_COLUMNS`, built from the served slates by
:mod:`monitoring.frames`) are compared the same way when the serving API left impressions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Category of each recommended item (prediction drift: what the model shows).
REC_CATEGORY = "rec_category"
#: log1p of each recommended item's 7-day views (prediction drift: how popular it is).
REC_POPULARITY = "rec_popularity"
PREDICTION_COLUMNS: tuple[str, ...] = (REC_CATEGORY, REC_POPULARITY)


@dataclass(frozen=True)
class DriftConfig:
    """Every threshold of the drift check and the retraining trigger, with the reason for each.

    Tuned on the simulator (``tests/unit/test_drift_detection.py``): stable 14 days give no
    decision, each shift scenario is decided on its onset day or the next.
    """

    # --- which columns -------------------------------------------------------------------------
    #: Numeric columns compared. Per-day quantities of active entities only, so a young lake
    #: (days with less history) looks like an old one. Left out on purpose: 7/28-day counts and
    #: 28-day rates (they move while the history fills up: rates of 2 events vs 200), per-entity
    #: 1-day rates (ratios of 0–3 events: noise), tenure and item age (they grow with the
    #: calendar), days since last event (≈0 for every active entity).
    numeric: tuple[str, ...] = ("user_views_1d", "item_price")
    #: Categorical columns compared. ``traffic_category``: the category of every item view of
    #: the day (item rows repeated by their 1-day views) — the first thing to move when tastes
    #: shift (a user's 28-day top category lags by days). ``traffic_event``: the type of every
    #: event of the day (from the users' 1-day counts) — click-through and conversion of the
    #: whole traffic, measured on thousands of events instead of per user.
    categorical: tuple[str, ...] = (
        "user_top_category",
        "user_country",
        "user_age_bucket",
        "item_category",
        "traffic_category",
        "traffic_event",
    )
    #: A row counts as active on its day when this column is > 0 (per view).
    user_active: str = "user_views_1d"
    item_active: str = "item_views_1d"

    # --- per-column methods and thresholds -----------------------------------------------------
    #: Distances, not p-values: at 100k rows every test rejects; a distance has a size.
    num_method: str = "wasserstein"
    #: Normed Wasserstein ≥ 0.1 std: Evidently's default; day-to-day noise in stable stays < 0.06.
    num_threshold: float = 0.1
    cat_method: str = "jensenshannon"
    #: Jensen-Shannon distance ≥ 0.1 (Evidently's default); stable noise stays < 0.05.
    cat_threshold: float = 0.1
    #: Overrides by column name (method, threshold), set well above the day-to-day noise
    #: measured on the simulator's stable world (weekday seasonality moves volumes; a 28-day
    #: top category of a user with few events flips easily).
    per_column: dict[str, tuple[str, float]] = field(
        default_factory=lambda: {
            "user_views_1d": ("wasserstein", 0.15),
            "user_top_category": ("jensenshannon", 0.15),
        }
    )

    # --- the decision --------------------------------------------------------------------------
    #: Share of compared columns that must drift: 0.1 = any one of the eight. Every threshold
    #: sits well above stable noise, and a taste shift moves only the traffic's category mix at
    #: first; a larger share would decide it days late.
    drift_share: float = 0.1
    #: Relative drop of slate click-through vs the reference serving days that alone decides.
    quality_drop: float = 0.2
    #: Days after a trigger during which no new trigger is sent (the retrained model needs time).
    cooldown_days: int = 3
    #: Fewer current rows than this: no decision (too little traffic to judge).
    min_rows: int = 30
    #: Rows compared per side at most; a larger side is compared on a deterministic sample
    #: (:mod:`monitoring.frames`: a fair share per kind of row, entities by a stable hash of
    #: id and day, traffic mixes apportioned from their full counts), logged and recorded in
    #: the result's ``sampled_rows``. Why 200k: Evidently's time and memory grow with the rows
    #: (about 13 s and 1 GiB for 200k on the 2-core machine) while a 50k-row share per column
    #: estimates a distance to ±0.01, ten times under the thresholds above; a 14-day reference
    #: of 1M users is ~44M rows. The demo's sides (1,500 users, 300 items) stay under it and
    #: are compared whole.
    max_rows: int = 200_000
    #: Serving days used as the quality reference when the training window has no impressions.
    serving_reference_days: int = 2

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the report may compare: features, then prediction columns."""
        return (*self.numeric, *self.categorical, *PREDICTION_COLUMNS)

    def is_categorical(self, column: str) -> bool:
        """Whether ``column`` is compared as categories (else as numbers)."""
        return column in self.categorical or column == REC_CATEGORY

    def method_for(self, column: str) -> tuple[str, float]:
        """The (Evidently method, threshold) that judges ``column``."""
        if column in self.per_column:
            return self.per_column[column]
        if self.is_categorical(column):
            return self.cat_method, self.cat_threshold
        return self.num_method, self.num_threshold

    def as_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able values (``per_column`` tuples become lists)."""
        d = dataclasses.asdict(self)
        d["per_column"] = {k: list(v) for k, v in self.per_column.items()}
        return d
