"""Conform raw Arrow tables to the contract: lossless casts, and the dictionary encoding the
gate and the pseudonyms share.

Pure Arrow (which releases the GIL): :func:`ingestion.pipeline.ingest_day` runs
:func:`encode_strings` in a thread while GX checks other tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.contract import TABLES

if TYPE_CHECKING:
    from collections.abc import Collection

    import pyarrow as pa


def conform(tbl: pa.Table, table: str, text: bool = False) -> tuple[pa.Table, list[str]]:
    """Cast contract columns losslessly to the contract's Arrow types where possible.

    Text is parsed into numbers and timestamps only for a text format (``text``: CSV); a
    Parquet file with a string ``value`` column has the wrong type and fails the schema suite.

    Columns that cannot be converted keep their type, so the schema suite reports them; the
    conversion error (which names an offending value) is returned as a note.
    """
    import pyarrow as pa

    notes = []
    contract = TABLES[table]
    for i, name in enumerate(tbl.column_names):
        if name not in contract.column_names:
            continue
        col = contract.column(name)
        target = col.arrow_type()
        if tbl.column(i).type == target:
            continue
        try:
            new = _cast(tbl.column(i), col.dtype, target, text)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            notes.append(f"column '{name}': {str(exc).splitlines()[0]}")
            new = None
        if new is not None:
            tbl = tbl.set_column(i, pa.field(name, target), new)
    return tbl, notes


def _cast(
    arr: pa.ChunkedArray, dtype: str, target: pa.DataType, text: bool
) -> pa.ChunkedArray | None:
    """``arr`` cast to ``target`` (the contract's ``dtype``) when that is lossless, else
    ``None`` (the schema suite reports the column). Raises Arrow's error for a bad value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    if pa.types.is_null(t):
        return arr.cast(target)
    if dtype == "string" and (
        pa.types.is_large_string(t)
        or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))
    ):
        return arr.cast(target)
    if dtype == "float64" and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return arr.cast(target)
    if dtype == "float64" and text and pa.types.is_string(t):
        return pc.cast(arr, target)
    if dtype == "timestamp" and pa.types.is_timestamp(t):
        if t.tz is None:  # the contract's timestamps are UTC
            arr = pc.assume_timezone(arr, "UTC")
        return arr.cast(target, safe=False)  # ns → µs truncates sub-µs digits only
    if dtype == "timestamp" and text and pa.types.is_string(t):
        try:
            return pc.cast(arr, target)
        except pa.ArrowInvalid:  # no zone offset: UTC by contract
            return pc.assume_timezone(pc.cast(arr, pa.timestamp("us")), "UTC")
    return None


def matches_contract(tbl: pa.Table, table: str) -> bool:
    """Exactly the contract's columns and types (any order): the schema suite cannot fail."""
    expected = {f.name: f.type for f in TABLES[table].arrow_schema()}
    return len(tbl.schema) == len(expected) and all(
        expected.get(f.name) == f.type for f in tbl.schema
    )


def encode_strings(tbl: pa.Table, skip: Collection[str] = ()) -> pa.Table:
    """``tbl`` with every string column (but ``skip``) dictionary-encoded as one chunk.

    A column's dictionary is then its distinct non-null values (in order of appearance): the
    cross-day checks and the pseudonyms use it instead of hashing the column again. Pure Arrow,
    which releases the GIL: :func:`ingestion.pipeline.ingest_day` runs it in a thread while GX
    checks other tables.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for name, a in zip(tbl.column_names, tbl.columns, strict=True):
        if pa.types.is_string(a.type) and name not in skip:
            a = pc.dictionary_encode(one_chunk(a))
        cols.append(a)
    return pa.table(cols, names=tbl.column_names)


def one_chunk(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """``col`` as one Arrow array (without a copy when it has a single chunk)."""
    import pyarrow as pa

    if isinstance(col, pa.Array):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
