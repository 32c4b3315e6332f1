"""Which rows broke a row-level rule: the mask that splits a batch into published and quarantined.

Great Expectations reports the verdict of every rule (how many rows, a few examples); to set the
offending rows apart the gate needs each row's verdict, which GX's BASIC results do not carry.
:func:`offending_rows` recomputes it in Arrow from the same expectation (its type, column and
parameters, taken from the suite), one vectorised pass per failed rule.

A rule is *row-level* when it judges each row on its own (values in range or in a set, not
null, an unknown item, an id already validated, an id repeated in the batch); the table's row
count (the volume band) is not, and neither is a rule GX could not evaluate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from validation import suites
from validation.config import DEFAULT

if TYPE_CHECKING:
    import pyarrow as pa

    from validation.config import GateConfig
    from validation.gate import Finding

#: The column of a quarantined rows file that says which rule(s) each row broke.
REASON = "reason"


@functools.cache
def _rules(table: str, config: GateConfig = DEFAULT) -> dict[tuple[str, str | None], Any]:
    """The data suite's expectations of ``table`` by (rule name, column): a finding's
    ``rule`` and ``column`` (the not-null rule has one expectation per column)."""
    out = {}
    for e in suites.data_expectations(table, config):
        column = getattr(e, "column", None) or e.meta.get("column")
        out[(e.meta["rule"], column)] = e
    return out


def _expectation(table: str, finding: Finding, config: GateConfig = DEFAULT) -> Any:
    return _rules(table, config).get((finding.rule, finding.column))


def _param(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]]
    return value


def is_row_level(table: str, finding: Finding) -> bool:
    """Whether ``finding`` (of the data suite of ``table``) judges rows one by one."""
    exp = _expectation(table, finding)
    if exp is None or finding.message.startswith("could not be evaluated"):
        return False
    return exp.expectation_type != "expect_table_row_count_to_be_between"


def _scalar(value: Any, type_: pa.DataType):
    import pyarrow as pa

    return pa.scalar(value, type=type_)


def _mask(exp: Any, data: pa.Table, parameters: dict[str, Any]) -> pa.ChunkedArray:
    """Rows of ``data`` that break ``exp`` (true = offending)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = exp.expectation_type

    def kw(name: str) -> Any:
        return getattr(exp, name, None)

    if kind == "expect_column_values_to_not_be_null":  # pandas (GX) counts NaN as missing
        return pc.is_null(data[kw("column")], nan_is_null=True)
    if kind == "expect_column_values_to_be_unique":
        col = data[kw("column")]
        counts = pc.value_counts(col.drop_null())
        repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        return pc.fill_null(pc.is_in(col, value_set=repeated), False)
    if kind in ("expect_column_values_to_be_in_set", "expect_column_values_to_not_be_in_set"):
        col = data[kw("column")]
        values = pa.array(list(_param(kw("value_set"), parameters)), col.type)
        hit = pc.fill_null(pc.is_in(col, value_set=values), False)
        if kind.endswith("not_be_in_set"):
            return hit
        return pc.and_(pc.invert(hit), pc.is_valid(col))
    if kind == "expect_column_values_to_be_between":
        col = data[kw("column")]
        out = pc.and_(pc.is_null(col), pc.is_valid(col))  # all false
        low, high = _param(kw("min_value"), parameters), _param(kw("max_value"), parameters)
        if low is not None:
            out = pc.or_(out, pc.fill_null(pc.less(col, _scalar(low, col.type)), False))
        if high is not None:
            out = pc.or_(out, pc.fill_null(pc.greater(col, _scalar(high, col.type)), False))
        return out
    if kind == "expect_value_to_match_event_type":
        a, b = data[kw("column_A")], data[kw("column_B")]
        rated = pc.equal(a, kw("rated_type"))
        in_range = pc.and_(pc.greater_equal(b, kw("min_value")), pc.less_equal(b, kw("max_value")))
        ok = pc.or_(
            pc.and_(rated, in_range),
            pc.and_(pc.invert(rated), pc.equal(b, 1.0 * kw("implicit_value"))),
        )
        return pc.fill_null(pc.invert(ok), False)
    raise ValueError(f"no row mask for {kind}")


@dataclass
class RowSplit:
    """A batch split by the row-level rules: what passes, what is quarantined and why."""

    kept: pa.Table
    rejected: pa.Table  # the offending rows, with a ``reason`` column
    reasons: dict[str, int]  # rule -> offending rows

    @property
    def rows_quarantined(self) -> int:
        return self.rejected.num_rows


def offending_rows(
    table: str,
    data: pa.Table,
    findings: list[Finding],
    parameters: dict[str, Any],
    config: GateConfig = DEFAULT,
) -> RowSplit:
    """Split ``data`` by the row-level ``findings`` (each :func:`is_row_level`): the rows that
    broke none, and the others with their rules joined by ``; `` in :data:`REASON`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = None
    reasons: dict[str, int] = {}
    labels: list[pa.ChunkedArray] = []
    for f in findings:
        mask = _mask(_expectation(table, f, config), data, parameters)
        label = f"{f.rule} ({f.column})" if f.rule == "not null" else f.rule
        reasons[label] = pc.sum(mask).as_py() or 0
        labels.append(pc.if_else(mask, pa.scalar(label), pa.scalar(None, pa.string())))
        bad = mask if bad is None else pc.or_(bad, mask)
    if bad is None:
        bad = pa.chunked_array([pa.array([False] * data.num_rows, pa.bool_())])
    rejected = data.filter(bad)
    reason = (
        pc.binary_join_element_wise(
            *[pc.filter(x, bad) for x in labels], "; ", null_handling="skip"
        )
        if labels
        else pa.array([], pa.string())
    )
    rejected = rejected.append_column(REASON, reason)
    return RowSplit(data.filter(pc.invert(bad)), rejected, reasons)


def prescreen(
    table: str, data: pa.Table, parameters: dict[str, Any], config: GateConfig = DEFAULT
) -> bool:
    """Whether any rule of the data suite of ``table`` could fail on ``data``: each row-level
    rule's Arrow replica (:func:`_mask`) and the row count. ``False`` means GX would report
    nothing; ``True`` means GX must run and decide."""
    import pyarrow.compute as pc

    for exp in _rules(table, config).values():
        if exp.expectation_type == "expect_table_row_count_to_be_between":
            low = _param(exp.min_value, parameters)
            high = _param(exp.max_value, parameters)
            if (low is not None and data.num_rows < low) or (
                high is not None and data.num_rows > high
            ):
                return True
        elif pc.any(_mask(exp, data, parameters)).as_py():
            return True
    return False
