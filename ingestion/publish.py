"""Publish a day that passed, or quarantine the tables of a day that failed.

A passing day's tables become ``validated/<table>/dt=D/part-00000.parquet`` with ``user_id``
pseudonymised (:class:`Pseudonyms`), each partition replaced atomically. The Parquet bytes are
made ahead (:func:`partition_files`, in a thread while GX checks the events) and written only
once the whole day has passed (:func:`publish`). A failing table's raw files move to
quarantine, its full result to ``quality/`` (:func:`quarantine_failed`); rows split off a table
that was published go to ``quarantine/<table>_rows/`` (:func:`quarantine_rows`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.contract import TABLES
from core.lake import PART_NAME, VALIDATED, parquet_bytes, partition_prefix
from core.privacy import pseudonym_key, pseudonymise_array
from ingestion.conform import one_chunk
from validation.quarantine import quarantine, quarantine_prefix, rows_prefix

if TYPE_CHECKING:
    import datetime as dt

    import pyarrow as pa

    from core.lake import Lake
    from ingestion.gate import TableCheck

TABLE_ORDER = ("items", "users", "events")  # items and users of D before the events that use them


class Pseudonyms:
    """The pseudonyms of a day's distinct user ids, each id hashed once for all its tables.

    ``Pseudonyms(ids, key)`` hashes the distinct values of the arrays ``ids``; :meth:`extended`
    returns a copy that also covers more ids (hashing only the new ones); :meth:`apply` replaces
    a table's column by the pseudonyms of its values. Immutable: safe to share with a thread.
    """

    def __init__(self, ids: list[pa.Array | pa.ChunkedArray], key: bytes | None = None):
        import pyarrow as pa
        import pyarrow.compute as pc

        self.key = key if key is not None else pseudonym_key()
        parts = [c for a in ids for c in (a.chunks if isinstance(a, pa.ChunkedArray) else [a])]
        self.ids = pc.unique(pa.chunked_array(parts, pa.string()))
        self.values = pseudonymise_array(self.ids, self.key)

    def extended(self, ids: pa.Array | pa.ChunkedArray) -> Pseudonyms:
        import pyarrow as pa
        import pyarrow.compute as pc

        new = Pseudonyms([pc.filter(ids, pc.invert(pc.is_in(ids, value_set=self.ids)))], self.key)
        out = object.__new__(Pseudonyms)
        out.key = self.key
        out.ids = pa.concat_arrays([self.ids, new.ids])
        out.values = pa.concat_arrays([self.values, new.values])
        return out

    def apply(self, tbl: pa.Table, column: str, encoded: pa.DictionaryArray | None = None):
        """``tbl`` with ``column`` replaced by its pseudonyms (``encoded``: the column's
        dictionary encoding when already at hand)."""
        import pyarrow.compute as pc

        if encoded is None:
            new = pc.take(self.values, pc.index_in(one_chunk(tbl[column]), value_set=self.ids))
        else:
            mapped = pc.take(self.values, pc.index_in(encoded.dictionary, value_set=self.ids))
            new = pc.take(mapped, encoded.indices)
        i = tbl.column_names.index(column)
        return tbl.set_column(i, tbl.schema.field(i), new)


def partition_files(
    table: str,
    data: pa.Table | None,
    pseudonyms: Pseudonyms,
    user_ids: pa.DictionaryArray | None = None,
) -> dict[str, bytes]:
    """The validated partition of ``table`` (file name → Parquet bytes), ``user_id``
    pseudonymised (``user_ids``: that column dictionary-encoded, when at hand).

    Computes only: nothing is written here (the caller publishes once the gate has passed).
    """
    if data is None:
        return {}
    if "user_id" in data.column_names:
        data = pseudonyms.apply(data, "user_id", user_ids)
    return {PART_NAME: parquet_bytes(data.cast(TABLES[table].arrow_schema()))}


def publish(lake: Lake, day: dt.date, files: dict[str, dict[str, bytes]]) -> None:
    """Replace the validated partitions of ``day`` by ``files`` (table → name → bytes) for the
    tables in ``files`` (those that passed); a failed table's partition is left as it was."""
    for table in TABLE_ORDER:  # items and users before the events that use them
        if table in files:
            lake.replace_partition(partition_prefix(VALIDATED, table, day), files[table])


def quarantine_rows(
    lake: Lake, day: dt.date, checks: dict[str, TableCheck], outcomes: dict[str, dict[str, Any]]
) -> None:
    """Write the rows split off each published table (with their ``reason``) to
    :func:`validation.quarantine.rows_prefix`, or clear that folder when none were (a re-run
    of a fixed day); fills in the outcomes' ``quarantined_rows``."""
    for table, c in checks.items():
        if c.failed:
            continue
        prefix = rows_prefix(table, day)
        if c.split is not None and c.split.rows_quarantined:
            lake.replace_partition(prefix, {PART_NAME: parquet_bytes(c.split.rejected)})
            outcomes[table]["quarantined_rows"] = lake.url(prefix + PART_NAME)
        elif lake.list(prefix):
            lake.replace_partition(prefix, {})


def quarantine_failed(
    lake: Lake, day: dt.date, failed: dict[str, TableCheck], outcomes: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Move the raw files of the ``failed`` tables to quarantine and keep their full result
    (:func:`validation.quarantine.quarantine`); returns table → quarantine prefix (tables that
    had files). Fills in the outcomes' ``quarantined``; their report is written, like every
    table's, when the outcome is recorded (:func:`validation.results.record`)."""
    where: dict[str, str] = {}
    for table, c in failed.items():  # (nothing to do when no table failed)
        if c.keys:
            gx_json = [r.to_json_dict() for r in c.gx_results]
            result = {"outcome": outcomes[table], "great_expectations": gx_json}
            outcomes[table]["quarantined"] = quarantine(lake, table, day, c.keys, result)
            where[table] = quarantine_prefix(table, day)
    return where
