"""Publish a day that passed, or quarantine the tables of a day that failed.

A passing day's tables become ``validated/<table>/dt=D/part-00000.parquet`` with ``user_id``
pseudonymised (:class:`Pseudonyms`), each partition replaced atomically. The Parquet bytes are
made ahead (:func:`partition_files`, in a thread while GX checks the events) and written only
once the whole day has passed (:func:`publish`). A failing table's raw files move to
quarantine, its full result to ``quality/`` (:func:`quarantine_files`, which also moves a junk
file set aside from a table published without it), and an earlier run's publication of it is
withdrawn to ``quarantine/<table>_withdrawn/`` (:func:`withdraw`); rows split off a table that
was published go to ``quarantine/<table>_rows/`` (:func:`quarantine_rows`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.contract import TABLES
from core.lake import PART_NAME, VALIDATED, parquet_bytes, partition_prefix
from core.privacy import pseudonym_key, pseudonymise_array
from ingestion.conform import one_chunk
from validation.gate import redact_gx_result
from validation.quarantine import quarantine, quarantine_prefix, rows_prefix, withdrawn_prefix

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable

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
    tables in ``files`` (those that passed; a failed table's partition was withdrawn, see
    :func:`withdraw`). An earlier withdrawn partition of a table published now is superseded:
    it is removed, as a re-run replaces the partition it publishes."""
    for table in TABLE_ORDER:  # items and users before the events that use them
        if table in files:
            lake.replace_partition(partition_prefix(VALIDATED, table, day), files[table])
            aside = withdrawn_prefix(table, day)
            if lake.list(aside):
                lake.replace_partition(aside, {})


def to_withdraw(lake: Lake, day: dt.date, failed: Iterable[str]) -> dict[str, list[str]]:
    """The validated files of ``day`` an earlier run published for the ``failed`` tables
    (table → keys; tables with none left out): what :func:`withdraw` moves aside."""
    out = {}
    for table in failed:
        keys = lake.list(partition_prefix(VALIDATED, table, day))
        if keys:
            out[table] = keys
    return out


def withdrawn_keys(table: str, day: dt.date, keys: list[str]) -> list[str]:
    """Where :func:`withdraw` moves the validated ``keys`` of ``table`` on ``day``."""
    src, dst = partition_prefix(VALIDATED, table, day), withdrawn_prefix(table, day)
    return [dst + k[len(src) :] for k in keys]


def aside_after(
    lake: Lake, day: dt.date, failed: Iterable[str], moving: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The withdrawn files of each ``failed`` table once :func:`withdraw` moved ``moving``
    (table → keys): the ones moved now, else those an earlier run moved aside (a run cut off
    after withdrawing, or an earlier failed re-run: the day is still withdrawn). Tables with
    none are left out."""
    out = {}
    for table in failed:
        keys = withdrawn_keys(table, day, moving.get(table, []))
        keys = keys or lake.list(withdrawn_prefix(table, day))
        if keys:
            out[table] = keys
    return out


def withdraw(lake: Lake, day: dt.date, tables: dict[str, list[str]]) -> None:
    """Move the validated partitions of ``day`` of ``tables`` (from :func:`to_withdraw`) to
    :func:`validation.quarantine.withdrawn_prefix`: a day whose latest verdict is "fail" is not
    in ``validated/`` any more, so features and training never read it. Each file is moved
    whole (the destination is complete before the source goes); an earlier withdrawal of the
    same partition is replaced."""
    for table, keys in tables.items():
        moved = withdrawn_keys(table, day, keys)
        for key, dst in zip(keys, moved, strict=True):
            lake.move(key, dst)
        for stale in lake.list(withdrawn_prefix(table, day)):
            if stale not in moved:
                lake.delete(stale)


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


def quarantine_files(
    lake: Lake, day: dt.date, checks: dict[str, TableCheck], outcomes: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Move to quarantine the raw files of the failed tables, and the files set aside from
    tables published without them (``TableCheck.rejected``), keeping their full result
    (:func:`validation.quarantine.quarantine`; offending user ids as pseudonyms); returns
    table → quarantine prefix (tables with files moved). Fills in the outcomes'
    ``quarantined``; their report is written, like every table's, when the outcome is recorded
    (:func:`validation.results.record`)."""
    where: dict[str, str] = {}
    for table, c in checks.items():
        keys = c.keys if c.failed else c.rejected_keys
        if keys:
            gx_json = [redact_gx_result(r.to_json_dict()) for r in c.gx_results]
            result = {"outcome": outcomes[table], "great_expectations": gx_json}
            outcomes[table]["quarantined"] = quarantine(lake, table, day, keys, result)
            where[table] = quarantine_prefix(table, day)
    return where
