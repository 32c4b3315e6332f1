"""The feature columns the trainer and the serving API code against.

The numeric and the string columns of the feature service :data:`core.names.FEATURE_SERVICE`,
as they appear in the frames that :func:`features.store.build_training_frame` and
:func:`features.store.online_features` return (plain names, unique across views). The window
counts are spelled from :data:`core.names.FEATURE_WINDOWS` and :data:`core.names.COUNTED_EVENTS`.
"""

from __future__ import annotations

from core.names import COUNTED_EVENTS, FEATURE_WINDOWS

USER_COUNTS: list[str] = [
    f"user_{word}_{w}d" for word in COUNTED_EVENTS.values() for w in FEATURE_WINDOWS
]
ITEM_COUNTS: list[str] = [
    f"item_{word}_{w}d" for word in COUNTED_EVENTS.values() for w in FEATURE_WINDOWS
]

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

_COUNTS = frozenset(USER_COUNTS + ITEM_COUNTS)


def is_count(column: str) -> bool:
    """Whether a feature column is a window count (an integer; every other numeric is a float)."""
    return column in _COUNTS
