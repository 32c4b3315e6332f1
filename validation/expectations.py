"""Custom Great Expectations expectations of the ingestion gate (GX Core 1.x).

GX registers an expectation and its metric when their classes are defined, so
:mod:`validation.suites` imports this module before building a suite.

:class:`ExpectValueToMatchEventType` checks the contract's ``value`` rule (0.5-5 for ratings, 1.0
for every other event type) in one vectorised pass over the ``(event_type, value)`` pair. The
core expectations can only say it with two ``row_condition`` checks, and GX's pandas engine
re-filters the whole batch (``DataFrame.query``) for every metric of a row-conditioned
expectation: ten copies of a million-row frame per day for one rule.
"""

from __future__ import annotations

from typing import ClassVar

from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnPairMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnPairMapMetricProvider,
    column_pair_condition_partial,
)

VALUE_MATCHES_TYPE = "column_pair_values.flywheel_value_matches_event_type"


class ColumnPairValueMatchesEventType(ColumnPairMapMetricProvider):
    """Row-wise: ``column_B`` within ``[min_value, max_value]`` where ``column_A`` is
    ``rated_type``, else equal to ``implicit_value``. A missing value in either column passes:
    the not-null expectations report those."""

    condition_metric_name = VALUE_MATCHES_TYPE
    condition_domain_keys = ("batch_id", "table", "column_A", "column_B", "row_condition")
    condition_value_keys = ("rated_type", "min_value", "max_value", "implicit_value")

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, rated_type, min_value, max_value, implicit_value, **_):
        rated = column_A == rated_type
        in_range = column_B.between(min_value, max_value)
        ok = (rated & in_range) | (~rated & (column_B == implicit_value))
        return ok | column_A.isna() | column_B.isna()


class ExpectValueToMatchEventType(ColumnPairMapExpectation):
    """Expect ``column_B`` (a value) in ``[min_value, max_value]`` on rows whose ``column_A``
    (an event type) is ``rated_type``, and equal to ``implicit_value`` on all other rows."""

    rated_type: str
    min_value: float
    max_value: float
    implicit_value: float

    map_metric: ClassVar[str] = VALUE_MATCHES_TYPE
    success_keys: ClassVar[tuple[str, ...]] = (
        "column_A",
        "column_B",
        "rated_type",
        "min_value",
        "max_value",
        "implicit_value",
        "mostly",
    )
    args_keys = ("column_A", "column_B")
