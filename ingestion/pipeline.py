"""Ingestion of one day: raw files → quality gate → pseudonymised, validated partitions.

:func:`ingest_day` is what the ``ingest_events`` DAG and ``flywheel ingest DAY`` run. For the day
``D`` (data interval ``[D 00:00, D+1 00:00)`` UTC):

1. find the raw files of ``items``, ``users`` and ``events`` under ``raw/<table>/dt=D/``;
2. read each (Parquet or UTF-8 CSV); an unreadable, empty or non-UTF-8 file is a gate failure;
3. conform types losslessly to the contract (ints → float, any timestamp unit → µs UTC);
4. validate all three tables with Great Expectations (:mod:`validation.gate`): the schema suite
   per file, then the data suite on the day's batch;
5. if every table passed: pseudonymise ``user_id``, write ``validated/<table>/dt=D/`` (items and
   users first, events last), each partition replaced atomically (the Parquet bytes are made in
   a thread while GX checks the events, and written only once the whole day has passed);
   if any failed: move the failing tables' raw files to ``quarantine/`` with the result and an
   HTML report, publish nothing of ``D`` (passing tables stay in ``raw/`` for the re-run), and
   raise :class:`validation.gate.GateFailure`;
6. record each table's outcome under ``quality/results/dt=D/<table>.json`` (latest) and
   ``quality/runs/dt=D/<table>/<validation_id>.json`` (every run) for the UI.

Cross-day rules read only what they need from earlier validated partitions: the ``event_id``
column of the other days and the ``item_id`` column of earlier items. This is linear in the
history, fine for months of days at this scale; past that, keep a per-day sorted id index or a
Bloom filter next to each partition and bound the look-back window.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.contract import ISO_COUNTRIES, TABLES
from core.lake import Lake, LocalLake, get_lake, partition_prefix

if TYPE_CHECKING:
    from collections.abc import Collection

    import pandas as pd
    import pyarrow as pa

    from validation.config import GateConfig
    from validation.gate import Finding

TABLE_ORDER = ("items", "users", "events")  # items and users of D before the events that use them
PART_NAME = "part-00000.parquet"
READ_RULE = "file readable as Parquet or UTF-8 CSV"


def day_of(value: dt.date | dt.datetime | str) -> dt.date:
    """A day from a date, a datetime (its UTC date) or ``YYYY-MM-DD``."""
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def interval(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


# --- reading ------------------------------------------------------------------------------------
@dataclass
class RawFile:
    key: str
    table: pa.Table | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # type conversions that failed

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def _read_table(lake: Lake, key: str, columns: list[str] | None = None) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(lake, LocalLake):
        return pq.read_table(lake.path(key), columns=columns)
    return pq.read_table(pa.BufferReader(lake.read_bytes(key)), columns=columns)


def read_raw(lake: Lake, key: str, table: str) -> RawFile:
    """Read one raw file; problems become ``RawFile.error`` (a gate failure), not exceptions."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

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
            names = TABLES[table].column_names
            out.table = pacsv.read_csv(
                pa.BufferReader(data),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in names}, strings_can_be_null=True
                ),
            )
        else:
            out.error = "unsupported file type (expected .parquet or .csv)"
    except (pa.ArrowException, OSError, ValueError) as exc:  # corrupt Parquet, bad UTF-8, bad CSV
        text = str(exc).splitlines()[0]
        if "utf8" in text.lower() or "utf-8" in text.lower():
            text = f"not valid UTF-8 ({text})"
        out.error = f"unreadable: {text}"
    if out.table is not None:
        out.table, out.notes = conform(out.table, table, text=lower.endswith(".csv"))
    return out


def conform(tbl: pa.Table, table: str, text: bool = False) -> tuple[pa.Table, list[str]]:
    """Cast contract columns losslessly to the contract's Arrow types where possible.

    Text is parsed into numbers and timestamps only for a text format (``text``: CSV); a
    Parquet file with a string ``value`` column has the wrong type and fails the schema suite.

    Columns that cannot be converted keep their type, so the schema suite reports them; the
    conversion error (which names an offending value) is returned as a note.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    notes = []
    contract = TABLES[table]
    for i, name in enumerate(tbl.column_names):
        if name not in contract.column_names:
            continue
        col = contract.column(name)
        target = col.arrow_type()
        arr = tbl.column(i)
        t = arr.type
        if t == target:
            continue
        new = None
        try:
            if pa.types.is_null(t):
                new = arr.cast(target)
            elif col.dtype == "string" and (
                pa.types.is_large_string(t)
                or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))
            ):
                new = arr.cast(target)
            elif col.dtype == "float64" and (pa.types.is_integer(t) or pa.types.is_floating(t)):
                new = arr.cast(target)
            elif col.dtype == "float64" and text and pa.types.is_string(t):
                new = pc.cast(arr, target)
            elif col.dtype == "timestamp" and pa.types.is_timestamp(t):
                if t.tz is None:  # the contract's timestamps are UTC
                    arr = pc.assume_timezone(arr, "UTC")
                new = arr.cast(target, safe=False)  # ns → µs truncates sub-µs digits only
            elif col.dtype == "timestamp" and text and pa.types.is_string(t):
                try:
                    new = pc.cast(arr, target)
                except pa.ArrowInvalid:  # no zone offset: UTC by contract
                    new = pc.assume_timezone(pc.cast(arr, pa.timestamp("us")), "UTC")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            notes.append(f"column '{name}': {str(exc).splitlines()[0]}")
            new = None
        if new is not None:
            tbl = tbl.set_column(i, pa.field(name, target), new)
    return tbl, notes


def _matches_contract(tbl: pa.Table, table: str) -> bool:
    """Exactly the contract's columns and types (any order): the schema suite cannot fail."""
    expected = {f.name: f.type for f in TABLES[table].arrow_schema()}
    return len(tbl.schema) == len(expected) and all(
        expected.get(f.name) == f.type for f in tbl.schema
    )


def schema_frame(tbl: pa.Table) -> pd.DataFrame:
    """One row per column: its name and Arrow type (what the schema suite checks)."""
    import pandas as pd

    return pd.DataFrame({"column": tbl.column_names, "type": [str(f.type) for f in tbl.schema]})


def encode_strings(tbl: pa.Table, skip: Collection[str] = ()) -> pa.Table:
    """``tbl`` with every string column (but ``skip``) dictionary-encoded as one chunk.

    A column's dictionary is then its distinct non-null values (in order of appearance): the
    cross-day checks and the pseudonyms use it instead of hashing the column again. Pure Arrow,
    which releases the GIL: :func:`ingest_day` runs it in a thread while GX checks other tables.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for name, a in zip(tbl.column_names, tbl.columns, strict=True):
        if pa.types.is_string(a.type) and name not in skip:
            a = pc.dictionary_encode(_one_chunk(a))
        cols.append(a)
    return pa.table(cols, names=tbl.column_names)


def _one_chunk(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    import pyarrow as pa

    if isinstance(col, pa.Array):
        return col
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _categorical_per_row(col: pa.ChunkedArray) -> pd.Categorical | None:
    """A string column whose values are distinct as a categorical with one category per row
    (what dictionary encoding gives for it), or ``None`` if its values are not distinct.

    pandas validates that a categorical's categories are unique, hashing them, and GX needs
    that hash table anyway (``isin`` on the column). Letting that validation be the check
    skips the Arrow dictionary encoding, a second hash of every value.
    """
    import numpy as np
    import pandas as pd

    if col.null_count:
        return None
    cats = pd.Index(col.to_numpy(), dtype=object, copy=False)
    try:
        dtype = pd.CategoricalDtype(cats, ordered=False)
    except ValueError:  # "Categorical categories must be unique": encode it instead
        return None
    codes = np.arange(len(cats), dtype=np.int32)
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def gx_frame(tbl: pa.Table, distinct: Collection[str] = ()) -> pd.DataFrame:
    """The batch as pandas for GX, every string column dictionary-encoded.

    GX copies and null-checks the frame per metric; pandas categoricals make that the price of
    their integer codes. Measured on a 1M-event day: even the all-distinct ``event_id`` is
    cheaper as a categorical (encode ≈ +1 s, GX run ≈ -6 s); Arrow-backed pandas columns
    (``pd.ArrowDtype``) are free to convert but make the GX run ~8x slower.

    ``distinct``: string columns expected to hold distinct values (the table's unique keys):
    built as one category per row when they do (:func:`_categorical_per_row`), encoded like the
    others when not. Columns already dictionary-encoded (:func:`encode_strings`) are taken as
    they are. ``deduplicate_objects=False``: the categories are distinct already; pyarrow's
    default would hash every one of them again.
    """
    import pyarrow as pa

    per_row = {}
    for name in distinct:
        if name in tbl.column_names and pa.types.is_string(tbl.schema.field(name).type):
            cat = _categorical_per_row(tbl.column(name))
            if cat is not None:
                per_row[name] = cat
    frame = encode_strings(tbl.drop_columns(list(per_row))).to_pandas(deduplicate_objects=False)
    for name, cat in per_row.items():
        frame.insert(tbl.column_names.index(name), name, cat)
    return frame


# --- cross-day state ----------------------------------------------------------------------------
def seen_event_ids(
    lake: Lake, day: dt.date, batch_ids: pa.ChunkedArray | pa.Array, distinct: bool = False
) -> list[str]:
    """Batch event ids already present in validated events of OTHER days (not ``day`` itself).

    ``distinct``: ``batch_ids`` are already the batch's distinct non-null ids.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    found: list[pa.Array] = []
    batch = None
    for other in lake.partitions("validated", "events"):
        if other == day:
            continue  # a re-run replaces its own partition: its ids are not duplicates
        for key in lake.partition_files("validated", "events", other):
            if batch is None:  # only when there is history to compare with
                batch = batch_ids if distinct else pc.unique(batch_ids.drop_null())
            ids = _read_table(lake, key, ["event_id"]).column("event_id")
            hit = pc.filter(batch, pc.is_in(batch, value_set=ids))
            found += hit.chunks if isinstance(hit, pa.ChunkedArray) else [hit]
    if not found:
        return []
    return pc.unique(pa.chunked_array(found, type=pa.string())).to_pylist()


def unknown_item_ids(
    lake: Lake, day: dt.date, batch_items: pa.Array, same_day: pa.ChunkedArray | None
) -> list[str]:
    """Which of ``batch_items`` (the batch's distinct non-null item ids: the column's
    dictionary) are absent from validated items before ``day`` and from the day's items."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = batch_items
    sources = [same_day] if same_day is not None else []
    for other in lake.partitions("validated", "items"):
        if other < day:
            for key in lake.partition_files("validated", "items", other):
                sources.append(_read_table(lake, key, ["item_id"]).column("item_id"))
    for known in sources:
        if len(missing) == 0:
            break
        known = known.cast(pa.string())
        missing = pc.filter(missing, pc.invert(pc.is_in(missing, value_set=known)))
    return missing.to_pylist()


def volume_bounds(lake: Lake, day: dt.date, config: GateConfig) -> tuple[int, int | None]:
    """Row band for events of ``day`` from the trailing days' validated counts."""
    counts = []
    for back in range(1, config.volume_window_days + 1):
        d = day - dt.timedelta(days=back)
        key = _results_key(d, "events")
        if lake.exists(key):
            rec = json.loads(lake.read_text(key))
            if rec.get("success") and rec.get("published", True):
                counts.append(int(rec["rows"]))
    if len(counts) < config.volume_min_history_days:
        return config.min_event_rows, None
    avg = sum(counts) / len(counts)
    low = max(config.min_event_rows, int(avg * config.volume_min_ratio))
    return low, int(avg * config.volume_max_ratio) + 1


# --- privacy ------------------------------------------------------------------------------------
class Pseudonyms:
    """The pseudonyms of a day's distinct user ids, each id hashed once for all its tables.

    ``Pseudonyms(ids, key)`` hashes the distinct values of the arrays ``ids``; :meth:`extended`
    returns a copy that also covers more ids (hashing only the new ones); :meth:`apply` replaces
    a table's column by the pseudonyms of its values. Immutable: safe to share with a thread.
    """

    def __init__(self, ids: list[pa.Array | pa.ChunkedArray], key: bytes | None = None):
        import pyarrow as pa
        import pyarrow.compute as pc

        from core.privacy import pseudonym_key, pseudonymise_array

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
            new = pc.take(self.values, pc.index_in(_one_chunk(tbl[column]), value_set=self.ids))
        else:
            mapped = pc.take(self.values, pc.index_in(encoded.dictionary, value_set=self.ids))
            new = pc.take(mapped, encoded.indices)
        i = tbl.column_names.index(column)
        return tbl.set_column(i, tbl.schema.field(i), new)


# --- results ------------------------------------------------------------------------------------
def _results_key(day: dt.date, table: str) -> str:
    return f"quality/results/dt={day.isoformat()}/{table}.json"


def _runs_key(day: dt.date, table: str, validation_id: str) -> str:
    return f"quality/runs/dt={day.isoformat()}/{table}/{validation_id}.json"


def read_quality_history(lake: Lake | None = None, every_run: bool = False) -> list[dict]:
    """Validation outcomes, newest day first: the latest per (day, table), or every run.

    Each record: ``date, table, success, published, failed_expectations [{expectation, rule,
    column, message, examples, files}], rows, validation_id, validated_at, report_uri, files``.
    """
    lake = lake or get_lake()
    prefix = "quality/runs/" if every_run else "quality/results/"
    out = [json.loads(lake.read_text(k)) for k in lake.list(prefix) if k.endswith(".json")]
    out.sort(
        key=lambda r: (r.get("date", ""), r.get("validated_at", ""), r.get("table", "")),
        reverse=True,
    )
    return out


# --- the day ------------------------------------------------------------------------------------
@dataclass
class TableCheck:
    table: str
    files: list[RawFile] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    gx_results: list[Any] = field(default_factory=list)  # GX validation results (objects)
    data: pa.Table | None = None

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.files]

    @property
    def rows(self) -> int:
        return 0 if self.data is None else self.data.num_rows


def _attribute(finding: Finding, files: list[RawFile]) -> None:
    """Name the file(s) a finding comes from (the offending values' files when several)."""
    import pyarrow.compute as pc

    readable = [f for f in files if f.table is not None]
    if (
        len(files) == 1
        or not finding.column
        or finding.column not in readable[0].table.column_names
    ):
        finding.files = [f.key for f in files]
        return
    hits = []
    for f in readable:
        col = f.table.column(finding.column)
        if "null" in finding.rule:
            hit = col.null_count > 0
        else:
            try:
                hit = pc.any(pc.is_in(col, value_set=pc.cast(finding.examples, col.type))).as_py()
            except Exception:  # examples of another type (timestamps as text): name every file
                hit = True
        if hit:
            hits.append(f.key)
    finding.files = hits or [f.key for f in files]


def _read_files(lake: Lake, day: dt.date, table: str) -> list[RawFile]:
    return [read_raw(lake, key, table) for key in lake.partition_files("raw", table, day)]


def _batch(table: str, files: list[RawFile]) -> pa.Table:
    import pyarrow as pa

    names = TABLES[table].column_names
    # files of one day may differ in nullability only (Parquet "not null" vs CSV): unify it
    return pa.concat_tables([f.table.select(names) for f in files], promote_options="default")


def _read_and_encode(lake: Lake, day: dt.date, table: str):
    """``(files, encoded)``: the raw files of ``table`` and, if they are exactly the contract,
    their batch through :func:`encode_strings` (else ``None``). Arrow only: for a thread."""
    files = _read_files(lake, day, table)
    if files and all(f.table is not None and _matches_contract(f.table, table) for f in files):
        return files, encode_strings(_batch(table, files), TABLES[table].unique)
    return files, None


def _read_table_files(
    gate, lake: Lake, day: dt.date, table: str, files: list[RawFile] | None = None
) -> TableCheck:
    """Read the day's raw files of ``table`` (unless given) and run the schema suite on each.

    ``check.data`` is the concatenated batch when every file was readable and passed.
    """
    from validation.gate import Finding

    check = TableCheck(table)
    raws = files if files is not None else _read_files(lake, day, table)
    if not raws:
        if table == "events":
            check.findings.append(
                Finding(
                    "raw_files_present",
                    "raw events exist for the day",
                    None,
                    f"no raw events for {day}",
                )
            )
        return check
    for raw in raws:
        key = raw.key
        check.files.append(raw)
        if raw.error:
            check.findings.append(Finding("file_readable", READ_RULE, None, raw.error, files=[key]))
            continue
        if _matches_contract(raw.table, table):
            continue  # exact contract schema: nothing for the schema suite to find
        found, res = gate.run(table, "schema", schema_frame(raw.table))
        for f in found:
            f.files = [key]
            if raw.notes:
                f.message += " (" + "; ".join(raw.notes) + ")"
        check.findings += found
        check.gx_results.append(res)
    if not check.findings:
        check.data = _batch(table, check.files)
    return check


def _run_data_suite(gate, check: TableCheck, frame: pd.DataFrame, parameters: dict) -> None:
    """The data suite on the batch (``frame``: :func:`gx_frame` of ``check.data``)."""
    found, res = gate.run(check.table, "data", frame, parameters)
    for f in found:
        _attribute(f, check.files)
    check.findings += found
    check.gx_results.append(res)


def _partition_files(
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
    return {PART_NAME: _parquet_bytes(data.cast(TABLES[table].arrow_schema()))}


def ingest_day(
    day: dt.date | str,
    lake: Lake | None = None,
    config: GateConfig | None = None,
    now: dt.datetime | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Validate and publish one day; returns the summary (the asset metadata).

    Raises :class:`validation.gate.GateFailure` (nothing published) when any table fails.
    ``now`` bounds "not in the future" (the wall clock by default; tests pin it).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from core.privacy import pseudonym_key
    from validation.config import DEFAULT
    from validation.gate import Gate, GateFailure, failure_message
    from validation.quarantine import quarantine, render_report

    day = day_of(day)
    lake = lake or get_lake()
    config = config or DEFAULT
    now = now or dt.datetime.now(dt.UTC)
    key = pseudonym_key()  # fail fast (production without a secret) before touching data
    validation_id = f"{day.isoformat()}-{uuid.uuid4().hex[:12]}"
    validated_at = now.isoformat()
    start, end = interval(day)
    tol = dt.timedelta(minutes=config.ts_tolerance_minutes)
    gate = Gate.cached(config)
    checks: dict[str, TableCheck] = {}

    def params(table: str, data: pa.Table, frame: pd.DataFrame) -> dict:
        if table == "users":
            present = pc.unique(data.column("country").drop_null()).to_pylist()
            return {"ts_max": end + tol, "iso_countries": sorted(set(present) & ISO_COUNTRIES)}
        if table != "events":
            return {"ts_max": end + tol}
        items = checks["items"]
        same_day = items.data.column("item_id") if items.data is not None else None
        low, high = volume_bounds(lake, day, config)
        event_ids = data["event_id"]  # distinct already if GX got one category per value
        if pa.types.is_dictionary(event_ids.type):
            event_ids = _one_chunk(event_ids).dictionary
        ids_distinct = not event_ids.null_count and len(event_ids) == len(
            frame["event_id"].cat.categories
        )
        item_ids = _one_chunk(data["item_id"]).dictionary
        return {
            "event_ids_seen": seen_event_ids(lake, day, event_ids, distinct=ids_distinct),
            "unknown_item_ids": unknown_item_ids(lake, day, item_ids, same_day),
            "ts_min": start - tol,
            "ts_max": end + tol,
            "now": now,
            "min_rows": low,
            "max_rows": high,
        }

    # GX is pure Python (it holds the GIL); Arrow encoding and Parquet writing release it. So
    # one worker thread does the Arrow work while GX checks data: the events' dictionary
    # encoding during the items and users suites, then the pseudonymised Parquet bytes of each
    # table once every earlier suite passed (the events' while their own data suite runs). Those
    # bytes are published only if the whole day passed; until then nothing is written.
    files: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest") as worker:
        raw = {t: _read_files(lake, day, t) for t in ("items", "users")}  # small: read first
        reading = worker.submit(_read_and_encode, lake, day, "events")  # (Arrow's pool is shared)
        for table in ("items", "users"):
            c = checks[table] = _read_table_files(gate, lake, day, table, raw[table])
            if c.data is not None:
                frame = gx_frame(c.data, TABLES[table].unique)
                _run_data_suite(gate, c, frame, params(table, c.data, frame))
        may_pass = not any(c.findings for c in checks.values())
        if may_pass:  # hash the users' ids while the worker reads and encodes the events
            users = checks["users"].data
            pseudonyms = Pseudonyms([users["user_id"]] if users is not None else [], key)
            for table in ("items", "users"):
                data = checks[table].data
                files[table] = worker.submit(_partition_files, table, data, pseudonyms)
        raw_events, encoded = reading.result()
        events = checks["events"] = _read_table_files(gate, lake, day, "events", raw_events)
        may_pass = may_pass and not events.findings
        if events.data is not None:
            if encoded is None:
                encoded = encode_strings(events.data, TABLES["events"].unique)
            if may_pass:  # the events' Parquet bytes are made while GX checks them
                user_ids = _one_chunk(encoded.column("user_id"))
                pseudonyms = pseudonyms.extended(user_ids.dictionary)
                files["events"] = worker.submit(
                    _partition_files, "events", events.data, pseudonyms, user_ids
                )
            frame = gx_frame(encoded, TABLES["events"].unique)
            parameters = params("events", encoded, frame)
            _run_data_suite(gate, events, frame, parameters)
            del frame
        failed = {t: c for t, c in checks.items() if c.findings}
        for future in files.values():
            if failed:
                future.cancel()
        if not failed:
            files = {t: files[t].result() for t in TABLE_ORDER}

    where: dict[str, str] = {}
    outcomes = {}
    for table, c in checks.items():
        outcomes[table] = {
            "date": day.isoformat(),
            "table": table,
            "success": not c.findings,
            "published": not failed,
            "failed_expectations": [f.as_dict() for f in c.findings],
            "rows": c.rows,
            "validation_id": validation_id,
            "validated_at": validated_at,
            "run_id": run_id,
            "files": c.keys,
            "report_uri": None,
        }

    if failed:
        for table, c in failed.items():
            report = render_report(outcomes[table])
            if c.keys:
                gx_json = [r.to_json_dict() for r in c.gx_results]
                result = {"outcome": outcomes[table], "great_expectations": gx_json}
                where[table] = quarantine(lake, table, day, c.keys, result, report)
                outcomes[table]["report_uri"] = lake.url(where[table] + "validation_report.html")
                outcomes[table]["quarantined"] = [where[table] + r.name for r in c.files]
    else:
        for table in TABLE_ORDER:  # items and users before the events that use them
            lake.replace_partition(partition_prefix("validated", table, day), files[table])

    for table, outcome in outcomes.items():
        if outcome["report_uri"] is None:
            rk = f"quality/reports/dt={day.isoformat()}/{table}.html"
            lake.write_text(rk, render_report(outcome))
            outcome["report_uri"] = lake.url(rk)
        text = json.dumps(outcome, indent=2, default=str)
        lake.write_text(_runs_key(day, table, validation_id), text)
        lake.write_text(_results_key(day, table), text)

    if failed:
        raise GateFailure(
            failure_message(
                day.isoformat(), validation_id, {t: c.findings for t, c in failed.items()}, where
            )
        )
    return {
        "date": day.isoformat(),
        "rows": encoded.num_rows,
        "distinct_users": len(_one_chunk(encoded.column("user_id")).dictionary),
        "distinct_items": len(_one_chunk(encoded.column("item_id")).dictionary),
        "validation_id": validation_id,
        "items": checks["items"].rows,
        "users": checks["users"].rows,
        "partition": lake.url(partition_prefix("validated", "events", day)),
    }


def _parquet_bytes(tbl: pa.Table) -> bytes:
    """``tbl`` as zstd Parquet. Into an Arrow buffer, not a ``BytesIO``: writing to a Python file
    object takes the GIL for every page, and :func:`ingest_day` calls this in a thread while GX
    holds the GIL (reading through ``pa.BufferReader`` likewise)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(tbl, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# --- backfill through Airflow -------------------------------------------------------------------
INGEST_DAG = "ingest_events"


def airflow_backfill(
    start: dt.date,
    end: dt.date,
    out=print,
    timeout_s: float = 6 * 3600,
    reprocess: str = "completed",
) -> dict[str, Any]:
    """Ingest ``[start, end]`` through Airflow's own backfill; returns per-day outcomes.

    Uses the Airflow API server at ``settings.airflow_url`` when one answers (``flywheel airflow
    standalone`` or the demo). Otherwise it starts, for the duration, an embedded api-server,
    scheduler and dag-processor with ``[scheduler] use_job_schedule = False``: the scheduler
    runs the backfill's runs but creates no catch-up runs of its own. Either way the scheduler
    runs the days one at a time, oldest first (backfill ``max_active_runs=1``), in long-lived
    processes: no process start per day.
    """
    import json as _json
    import secrets
    import time

    from core.errors import FlywheelError
    from core.settings import get_settings
    from deploy.twin import AirflowClient, ProcessGroup, free_port, venv_bin, wait_until
    from flywheel.airflow_env import airflow_env, ensure_db

    if end < start:
        raise FlywheelError(f"backfill range is empty: --end {end} is before --start {start}")
    settings = get_settings()
    settings.ensure_home()
    group: ProcessGroup | None = None
    pw_file = settings.airflow_home / "simple_auth_manager_passwords.json"
    probe = AirflowClient(settings.airflow_url, "admin", "")
    try:
        if probe.healthy() and pw_file.exists():
            out(f"using the Airflow at {settings.airflow_url}")
            client = AirflowClient(
                settings.airflow_url, "admin", _json.loads(pw_file.read_text())["admin"]
            )
        else:
            if probe.healthy():  # the port is taken by something we cannot log in to
                settings = settings.model_copy(update={"airflow_port": free_port()})
            env = airflow_env(settings)
            env.update(
                {
                    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # backfill runs only
                    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                    "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
                }
            )
            ensure_db(settings)
            if not pw_file.exists():
                pw_file.parent.mkdir(parents=True, exist_ok=True)
                pw_file.write_text(_json.dumps({"admin": secrets.token_urlsafe(9)}))
            group = ProcessGroup(settings.home / "backfill" / "logs")
            out(f"starting an embedded Airflow for the backfill (logs in {group.log_dir})")
            airflow = venv_bin("airflow")
            group.start(
                "airflow-apiserver",
                [airflow, "api-server", "--port", str(settings.airflow_port)],
                env,
            )
            group.start("airflow-scheduler", [airflow, "scheduler"], env)
            group.start("airflow-dag-processor", [airflow, "dag-processor"], env)
            client = AirflowClient(
                settings.airflow_url, "admin", _json.loads(pw_file.read_text())["admin"]
            )
            wait_until(client.healthy, 300, "airflow api-server", group, interval=1)

        def parsed() -> bool:
            errors = [
                e for e in client.import_errors() if e["filename"].endswith(f"{INGEST_DAG}.py")
            ]
            if errors:
                raise FlywheelError(
                    f"{INGEST_DAG} does not import: {errors[0]['stack_trace'].strip().splitlines()[-1]}"
                )
            return INGEST_DAG in client.dag_ids()

        wait_until(parsed, 300, f"{INGEST_DAG} parsed by the dag-processor", group, interval=2)
        client.set_paused(INGEST_DAG, False)
        backfill = client.post(
            "/backfills",
            {
                "dag_id": INGEST_DAG,
                "from_date": dt.datetime.combine(start, dt.time(), dt.UTC).isoformat(),
                "to_date": dt.datetime.combine(end, dt.time(), dt.UTC).isoformat(),
                "max_active_runs": 1,
                "reprocess_behavior": reprocess,
            },
        )
        out(f"backfill {backfill['id']} created: {start} .. {end}")
        days = {start + dt.timedelta(days=k) for k in range((end - start).days + 1)}
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            runs = [
                r
                for r in client.dag_runs(INGEST_DAG)
                if r.get("run_type") == "backfill" and day_of(r["data_interval_start"]) in days
            ]
            latest: dict[dt.date, dict] = {}
            for r in runs:  # the newest run per day (a re-run creates another)
                d = day_of(r["data_interval_start"])
                if d not in latest or r["run_after"] > latest[d]["run_after"]:
                    latest[d] = r
            states = {d: r["state"] for d, r in latest.items()}
            done = [d for d, s in states.items() if s in ("success", "failed")]
            line = f"{len(done)}/{len(days)} days done, {sum(s == 'failed' for s in states.values())} failed"
            if line != last:
                out(line)
                last = line
            if len(done) == len(days):
                break
            if group is not None:
                group.check_alive()
            if time.monotonic() > deadline:
                raise FlywheelError(f"backfill not finished after {timeout_s:.0f}s ({line})")
            time.sleep(2)
    finally:
        if group is not None:
            group.stop()
    lake = get_lake()
    failed = {}
    for d in sorted(d for d, s in states.items() if s == "failed"):
        key = _results_key(d, "events")
        reasons = []
        for t in TABLE_ORDER:
            k = _results_key(d, t)
            if lake.exists(k):
                rec = json.loads(lake.read_text(k))
                if rec.get("validation_id") and not rec["success"]:
                    reasons += [
                        f"{t}: {f['rule']} ({f['message']})" for f in rec["failed_expectations"]
                    ]
        failed[d.isoformat()] = "; ".join(reasons) or (
            "see the task log" if lake.exists(key) else "no result"
        )
    return {
        "days": len(days),
        "succeeded": sorted(d.isoformat() for d, s in states.items() if s == "success"),
        "failed": failed,
    }
