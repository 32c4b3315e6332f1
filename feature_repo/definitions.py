"""Flywheel's Feast definitions: entity → source → feature view → feature service.

The feature tables are computed daily from validated data by ``features.compute`` into
the lake (``features/<view>/dt=YYYY-MM-DD/part-00000.parquet``); the sources below read the whole
``features/<view>/`` folder. Where that folder is (a local path or ``s3://…``) comes from the
settings (``FLYWHEEL_LAKE_URI``, ``FLYWHEEL_S3_ENDPOINT_URL``), so the same definitions serve the
embedded and the production profile. The column lists come from ``features.columns`` -- the
one place the model's feature names are spelled -- and the service, view and window names from
``core.names``.

Apply with ``flywheel features apply`` (renders the store config from the settings) or, for the
default embedded home, ``feast -c feature_repo apply``.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

from core.names import (
    COUNTED_EVENTS,
    FEATURE_SERVICE,
    FEATURE_TTL_DAYS,
    FEATURE_WINDOWS,
    ITEM_VIEW,
    USER_VIEW,
)
from features.columns import (
    ITEM_CATEGORICAL,
    ITEM_FEATURES,
    USER_CATEGORICAL,
    USER_FEATURES,
    is_count,
)
from features.store import source_location

# Descriptions of every feature column (the Feast UI and `feast feature-views describe` show them).
# A count column is named by a short word (``carts``); its description spells out what was
# counted where the word alone would not.
_COUNTED_TEXT = {"add_to_cart": "add-to-cart events"}
DESCRIPTIONS: dict[str, str] = {}
for _kind, _acted in (("user", "by the user"), ("item", "on the item")):
    for _event, _word in COUNTED_EVENTS.items():
        _text = _COUNTED_TEXT.get(_event, _word)
        for _w in FEATURE_WINDOWS:
            DESCRIPTIONS[f"{_kind}_{_word}_{_w}d"] = (
                f"Number of {_text} {_acted} in the {_w} days ending at the end of the day"
            )
DESCRIPTIONS.update(
    {
        "user_ctr_28d": "Clicks / views of the user over 28 days (0 without views)",
        "user_purchase_rate_28d": "Purchases / views of the user over 28 days (0 without views)",
        "user_mean_rating_28d": "Mean rating (1-5) the user gave over 28 days (0 if none)",
        "user_days_since_last_event": "Days from the user's last event to the end of the day, capped at 28",
        "user_active_days_28d": "Distinct days with at least one event over 28 days",
        "user_tenure_days": "Days since the user signed up",
        "user_top_category_share": "Share of the user's 28-day events in their top category",
        "user_top_category": "Category the user interacted with most over 28 days ('unknown' if none)",
        "user_country": "ISO 3166-1 alpha-2 country of the user",
        "user_age_bucket": "Age band of the user",
        "item_ctr_28d": "Clicks / views of the item over 28 days (0 without views)",
        "item_conversion_28d": "Purchases / views of the item over 28 days (0 without views)",
        "item_mean_rating_28d": "Mean rating (1-5) the item received over 28 days (0 if none)",
        "item_age_days": "Days since the item entered the catalog",
        "item_price": "Price of the item",
        "item_category": "Category of the item",
    }
)


def _fields(numeric: list[str], strings: list[str]) -> list[Field]:
    out = [
        Field(name=c, dtype=Int64 if is_count(c) else Float64, description=DESCRIPTIONS[c])
        for c in numeric
    ]
    out += [Field(name=c, dtype=String, description=DESCRIPTIONS[c]) for c in strings]
    return out


_TAGS = {"team": "flywheel", "computed_by": "features.compute", "cadence": "daily"}

# --- entities -------------------------------------------------------------------------------

# A user, by pseudonym (``p_…``): raw ids never leave ingestion.
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A user, identified by the pseudonym assigned at ingestion",
)

# An item of the catalog.
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="An item of the catalog",
)

# --- sources --------------------------------------------------------------------------------

# Daily per-user statistics; event_timestamp = end of the day the values describe.
_user_path, _endpoint = source_location(USER_VIEW)
user_stats_source = FileSource(
    name="user_stats_source",
    path=_user_path,
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    s3_endpoint_override=_endpoint,
    description="features/user_stats/ in the lake: one Parquet partition per day",
)

# Daily per-item statistics and catalog attributes.
_item_path, _ = source_location(ITEM_VIEW)
item_stats_source = FileSource(
    name="item_stats_source",
    path=_item_path,
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
    s3_endpoint_override=_endpoint,
    description="features/item_stats/ in the lake: one Parquet partition per day",
)

# --- feature views --------------------------------------------------------------------------

# User behaviour over 1/7/28 days. TTL 2 days: values of day D serve until D+2 00:00; a missed
# day is tolerated once, a longer outage shows up as missing features (and fails freshness).
user_stats_fv = FeatureView(
    name="user_stats_fv",
    entities=[user],
    ttl=timedelta(days=FEATURE_TTL_DAYS),
    schema=_fields(USER_FEATURES, USER_CATEGORICAL),
    online=True,
    source=user_stats_source,
    tags={**_TAGS, "entity": "user"},
    description="Per-user interaction statistics, recomputed daily from validated events",
)

# Item popularity and catalog attributes. Same TTL and cadence as the user view.
item_stats_fv = FeatureView(
    name="item_stats_fv",
    entities=[item],
    ttl=timedelta(days=FEATURE_TTL_DAYS),
    schema=_fields(ITEM_FEATURES, ITEM_CATEGORICAL),
    online=True,
    source=item_stats_source,
    tags={**_TAGS, "entity": "item"},
    description="Per-item popularity statistics and catalog attributes, recomputed daily",
)

# --- feature services -----------------------------------------------------------------------

# Exactly what recommender v1 reads, in training (get_historical_features) and serving.
recommender_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[user_stats_fv, item_stats_fv],
    tags={"model": "flywheel-recommender", "version": "1"},
    description="Features of the two-tower recommender v1: user and item statistics",
)
