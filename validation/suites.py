"""Great Expectations suites of the ingestion gate, one per raw table, on the GX Core 1.x API.

Two kinds of suite:

* :func:`schema_suite` runs on a tiny *schema frame* (one row per raw column: its name and its
  Arrow type after lossless conformance). It catches missing, extra and wrongly typed columns
  before any value check runs.
* :func:`data_suite` runs on the batch itself. Rules that need state from outside the batch
  (event ids already validated on other days, the catalog so far, the trailing volume, the data
  interval) use GX suite parameters (``{"$PARAMETER": name}``) that :mod:`validation.gate`
  computes at run time, so they are still reported through GX results.

Every expectation carries ``meta["rule"]``: the short human name used in error messages.
Thresholds come from :mod:`validation.config`, never from literals here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.contract import (
    AGE_BUCKETS,
    EVENT_TYPES,
    IMPLICIT_VALUE,
    TABLES,
)
from validation.config import DEFAULT

if TYPE_CHECKING:
    import great_expectations as gx

    from validation.config import GateConfig

#: Arrow type names the contract's column types conform to (see ``ingestion.conform``).
ARROW_TYPE_NAMES = {"string": "string", "float64": "double", "timestamp": "timestamp[us, tz=UTC]"}


def _p(name: str) -> dict:
    return {"$PARAMETER": name}


def schema_suite(table: str) -> gx.ExpectationSuite:
    """Columns and types of one raw table (validated on the schema frame ``column``/``type``)."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    contract = TABLES[table]
    names = contract.column_names
    pairs = [(c.name, ARROW_TYPE_NAMES[c.dtype]) for c in contract.columns]
    suite = gx.ExpectationSuite(name=f"{table}_schema")
    for exp in (
        # extra columns mean the producer changed its export: fail instead of dropping data
        gxe.ExpectColumnValuesToBeInSet(
            column="column", value_set=names, meta={"rule": "no extra columns", "on": "columns"}
        ),
        # a missing column cannot be filled in without inventing data
        gxe.ExpectColumnDistinctValuesToContainSet(
            column="column",
            value_set=names,
            meta={"rule": "all contract columns present", "on": "columns"},
        ),
        # types are part of the contract; downstream code relies on them
        gxe.ExpectColumnPairValuesToBeInSet(
            column_A="column",
            column_B="type",
            value_pairs_set=pairs,
            row_condition=Column("column").is_in(names),
            meta={"rule": "column types as in the contract", "on": "types"},
        ),
    ):
        suite.add_expectation(exp)
    return suite


def _not_null(table: str) -> list:
    import great_expectations.expectations as gxe

    # null keys and values cannot be joined, counted or trained on
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=c.name, meta={"rule": "not null"})
        for c in TABLES[table].columns
        if not c.nullable
    ]


def _events_expectations(config: GateConfig) -> list:
    """Value rules of the day's events (cross-day inputs come as suite parameters)."""
    import great_expectations.expectations as gxe

    # GX registers the custom expectation when its module is imported, and that module
    # imports GX: imported here, with GX, so that importing the suites stays light
    from validation.expectations import ExpectValueToMatchEventType

    return [
        # duplicates inflate popularity and leak between train and test
        gxe.ExpectColumnValuesToBeUnique(
            column="event_id", meta={"rule": "event_id unique in the batch"}
        ),
        # an event validated on another day must not be counted twice (re-sent exports)
        gxe.ExpectColumnValuesToNotBeInSet(
            column="event_id",
            value_set=_p("event_ids_seen"),
            meta={"rule": "event_id not already in validated data"},
        ),
        # unknown types have no meaning for the model
        gxe.ExpectColumnValuesToBeInSet(
            column="event_type",
            value_set=list(EVENT_TYPES),
            meta={"rule": "allowed event_type"},
        ),
        # ratings are on a 0.5-5 scale (half stars; GateConfig.rating_min/max); implicit
        # feedback carries no magnitude (1.0). One
        # pass over (event_type, value): see validation.expectations for why not two
        # row-conditioned checks
        ExpectValueToMatchEventType(
            column_A="event_type",
            column_B="value",
            rated_type="rating",
            min_value=config.rating_min,
            max_value=config.rating_max,
            implicit_value=IMPLICIT_VALUE,
            meta={
                "rule": "value in the rating scale for ratings, 1.0 otherwise",
                "column": "value",
            },
        ),
        # events belong to the day they are filed under (late/early clocks tolerated)
        gxe.ExpectColumnValuesToBeBetween(
            column="event_ts",
            min_value=_p("ts_min"),
            max_value=_p("ts_max"),
            meta={"rule": "event_ts inside the data interval"},
        ),
        # a timestamp after the moment of validation is a broken clock
        gxe.ExpectColumnValuesToBeBetween(
            column="event_ts", max_value=_p("now"), meta={"rule": "event_ts not in the future"}
        ),
        # an event on an item nobody created cannot be joined to item features
        gxe.ExpectColumnValuesToNotBeInSet(
            column="item_id",
            value_set=_p("unknown_item_ids"),
            meta={"rule": "item_id known from items (catalog so far or same day)"},
        ),
        # a collapse or flood of volume means a broken export, not a change in users
        gxe.ExpectTableRowCountToBeBetween(
            min_value=_p("min_rows"),
            max_value=_p("max_rows"),
            meta={"rule": "row volume within the band of trailing days"},
        ),
    ]


def _items_expectations(config: GateConfig) -> list:
    """Value rules of the day's items."""
    import great_expectations.expectations as gxe

    return [
        # one row per item: duplicates make the catalog ambiguous
        gxe.ExpectColumnValuesToBeUnique(
            column="item_id", meta={"rule": "item_id unique in the batch"}
        ),
        # negative prices are export errors
        gxe.ExpectColumnValuesToBeBetween(
            column="price", min_value=0.0, meta={"rule": "price >= 0"}
        ),
        # the catalog cannot contain items from the future
        gxe.ExpectColumnValuesToBeBetween(
            column="created_ts",
            max_value=_p("ts_max"),
            meta={"rule": "created_ts not after the day"},
        ),
    ]


def _users_expectations(config: GateConfig) -> list:
    """Value rules of the day's users."""
    import great_expectations.expectations as gxe

    return [
        # one row per user: duplicates double-count signups
        gxe.ExpectColumnValuesToBeUnique(
            column="user_id", meta={"rule": "user_id unique in the batch"}
        ),
        # country feeds features and reports; free text is not a country. The allowed set
        # is the batch's distinct values that are ISO codes (``iso_countries``, computed at
        # run time): the same rule as the full ISO list, but GX serialises a handful of
        # values per check instead of 250.
        gxe.ExpectColumnValuesToBeInSet(
            column="country",
            value_set=_p("iso_countries"),
            meta={"rule": "country is ISO 3166-1 alpha-2"},
        ),
        # age bands are a closed vocabulary
        gxe.ExpectColumnValuesToBeInSet(
            column="age_bucket",
            value_set=list(AGE_BUCKETS),
            meta={"rule": "allowed age_bucket"},
        ),
        # nobody signs up in the future
        gxe.ExpectColumnValuesToBeBetween(
            column="signup_ts",
            max_value=_p("ts_max"),
            meta={"rule": "signup_ts not after the day"},
        ),
    ]


#: The value rules of each raw table, besides its not-null rules.
_VALUE_RULES = {
    "events": _events_expectations,
    "items": _items_expectations,
    "users": _users_expectations,
}


def data_expectations(table: str, config: GateConfig = DEFAULT) -> list:
    """The expectations of :func:`data_suite` (not bound to a suite): the not-null rules, then
    the value rules. ``validation.rows`` reads them to recompute each row's verdict."""
    return _not_null(table) + _VALUE_RULES[table](config)  # KeyError for a table without a suite


def data_suite(table: str, config: GateConfig = DEFAULT) -> gx.ExpectationSuite:
    """Value rules of one raw table (bounds from ``config``); parameters are listed in
    :func:`parameter_names`."""
    import great_expectations as gx

    exps = data_expectations(table, config)
    suite = gx.ExpectationSuite(name=f"{table}_data")
    for exp in exps:
        suite.add_expectation(exp)
    return suite


def parameter_names(table: str) -> set[str]:
    """Suite parameters :func:`data_suite` expects for ``table``."""
    return {
        "events": {
            "event_ids_seen",
            "ts_min",
            "ts_max",
            "now",
            "unknown_item_ids",
            "min_rows",
            "max_rows",
        },
        "items": {"ts_max"},
        "users": {"ts_max", "iso_countries"},
    }[table]
