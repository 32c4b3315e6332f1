"""Read a day's raw files (Parquet or UTF-8 CSV) of one table, conformed to the contract.

A problem with a file (unreadable, empty, not UTF-8, unsupported type) is not an exception:
it is recorded on the :class:`RawFile` and becomes a gate failure that names the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.contract import TABLES
from core.lake import RAW
from ingestion.conform import conform, encode_strings, matches_contract

if TYPE_CHECKING:
    import datetime as dt

    import pyarrow as pa

    from core.lake import Lake

#: The rule a file that cannot be read fails (as named in findings).
READ_RULE = "file readable as Parquet or UTF-8 CSV"

#: Arrow quotes the offending CSV row after its parse error ("Expected 4 columns, got 5: <row>"):
#: a row holds a raw user id, which no error message may show.
_QUOTED_ROW = re.compile(r"^(CSV parse error: [^:]*): .*$")


@dataclass
class RawFile:
    """One raw file: its key, its table once read (and conformed), or why it could not be."""

    key: str
    table: pa.Table | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # type conversions that failed

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def read_raw(lake: Lake, key: str, table: str) -> RawFile:
    """Read one raw file; problems become ``RawFile.error`` (a gate failure), not exceptions."""
    import pyarrow as pa

    out = RawFile(key)
    lower = key.lower()
    try:
        data = lake.read_bytes(key)
        if not data:
            out.error = "file is empty (0 bytes)"
        elif lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            out.table = pq.read_table(pa.BufferReader(data))
        elif lower.endswith(".csv"):
            out.table = _read_csv(data, table)
        else:
            out.error = "unsupported file type (expected .parquet or .csv)"
    except (pa.ArrowException, OSError, ValueError) as exc:  # corrupt Parquet, bad UTF-8, bad CSV
        text = _QUOTED_ROW.sub(r"\1 (row not shown)", str(exc).splitlines()[0])
        if "utf8" in text.lower() or "utf-8" in text.lower():
            text = f"not valid UTF-8 ({text})"
        out.error = f"unreadable: {text}"
    if out.table is not None:
        out.table, out.notes = conform(out.table, table, text=lower.endswith(".csv"))
    return out


def _read_csv(data: bytes, table: str) -> pa.Table:
    """A CSV file's contract columns as text (conform parses them), empty cells as nulls."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = TABLES[table].column_names
    return pacsv.read_csv(
        pa.BufferReader(data),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in names}, strings_can_be_null=True
        ),
    )


def read_files(lake: Lake, day: dt.date, table: str) -> list[RawFile]:
    """Every raw file of ``table`` on ``day``, read (unreadable ones carry their error)."""
    return [read_raw(lake, key, table) for key in lake.partition_files(RAW, table, day)]


def batch(table: str, files: list[RawFile]) -> pa.Table:
    """The contract columns of the (readable) ``files`` as one table."""
    import pyarrow as pa

    names = TABLES[table].column_names
    # files of one day may differ in nullability only (Parquet "not null" vs CSV): unify it
    return pa.concat_tables([f.table.select(names) for f in files], promote_options="default")


def read_and_encode(lake: Lake, day: dt.date, table: str) -> tuple[list[RawFile], pa.Table | None]:
    """``(files, encoded)``: the raw files of ``table`` and, if they are exactly the contract,
    their batch through :func:`~ingestion.conform.encode_strings` (else ``None``). Arrow only:
    for a thread."""
    files = read_files(lake, day, table)
    if files and all(f.table is not None and matches_contract(f.table, table) for f in files):
        return files, encode_strings(batch(table, files), TABLES[table].unique)
    return files, None
