"""Features: daily feature tables computed from validated data, served through Feast.

``compute`` turns validated events/items/users of day D into one Parquet partition per feature
view (``features/<view>/dt=D/part-00000.parquet``); ``store`` wraps the Feast feature store of the
active profile (apply, materialize, freshness, training frames, online lookups).

The names below are the interface the trainer and the serving API code against: the numeric and
the string columns of the feature service :data:`FEATURE_SERVICE`, as they appear in the frames
that :func:`features.store.build_training_frame` and
:func:`features.store.online_features` return (plain names, unique across views).
"""

from __future__ import annotations

from core.errors import FlywheelError


class FeatureError(FlywheelError):
    """Features are missing, stale or cannot be computed; the message names the day and view."""


#: The feature service the model reads through (training and serving alike).
FEATURE_SERVICE = "recommender_v1"

#: The feature views, by short name (also the lake folder ``features/<name>/``).
USER_VIEW = "user_stats"
ITEM_VIEW = "item_stats"
VIEWS: tuple[str, ...] = (USER_VIEW, ITEM_VIEW)

#: How long a day's values serve (the views' Feast ``ttl``): a row of day D reads the features
#: of D-1, or of D-2 when D-1's batch was quarantined; a longer gap means missing features.
FEATURE_TTL_DAYS = 2

#: Rolling windows in days, each ending at the end of day D.
WINDOWS: tuple[int, ...] = (1, 7, 28)

#: Event types counted per window, and the word that names their count.
COUNTED: dict[str, str] = {
    "view": "views",
    "click": "clicks",
    "add_to_cart": "carts",
    "purchase": "purchases",
    "rating": "ratings",
}

USER_COUNTS: list[str] = [f"user_{word}_{w}d" for word in COUNTED.values() for w in WINDOWS]
ITEM_COUNTS: list[str] = [f"item_{word}_{w}d" for word in COUNTED.values() for w in WINDOWS]

#: Numeric user features, in the order the model uses them.
USER_FEATURES: list[str] = [
    *USER_COUNTS,
    "user_ctr_28d",
    "user_purchase_rate_28d",
    "user_mean_rating_28d",
    "user_days_since_last_event",
    "user_active_days_28d",
    "user_tenure_days",
    "user_top_category_share",
]
#: String user features.
USER_CATEGORICAL: list[str] = ["user_top_category", "user_country", "user_age_bucket"]

#: Numeric item features, in the order the model uses them.
ITEM_FEATURES: list[str] = [
    *ITEM_COUNTS,
    "item_ctr_28d",
    "item_conversion_28d",
    "item_mean_rating_28d",
    "item_age_days",
    "item_price",
]
#: String item features.
ITEM_CATEGORICAL: list[str] = ["item_category"]

__all__ = [
    "FEATURE_SERVICE",
    "FeatureError",
    "ITEM_CATEGORICAL",
    "ITEM_FEATURES",
    "ITEM_VIEW",
    "USER_CATEGORICAL",
    "USER_FEATURES",
    "USER_VIEW",
    "VIEWS",
    "WINDOWS",
]
