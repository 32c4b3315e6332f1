"""Broken batches: the ways a delivery breaks the data contract, put into the lake on purpose.

:func:`fault_plan` picks which batches a ``faults`` scenario breaks; :func:`inject_fault`
replaces a raw batch with a broken one (keeping the valid one under ``sim/clean/``) and records
it in ``sim/faults.json``; :func:`repair_fault` puts the valid batch back (a corrected
re-delivery). Every kind is one the ingest gate must reject with a message that names the file,
the column and the rule.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import TYPE_CHECKING

import numpy as np

from core.contract import TABLES
from core.lake import PART_NAME, RAW, Lake, partition_prefix
from simulation.config import SIM, SimConfig, SimulatorError
from simulation.days import CSV_PART_NAME, encode
from simulation.world import US_PER_DAY, stream_rng

if TYPE_CHECKING:
    import pyarrow as pa

FAULT_KINDS: tuple[str, ...] = (
    "empty_file",
    "zero_rows",
    "missing_column",
    "extra_column",
    "wrong_type",
    "null_keys",
    "duplicate_event_id",
    "duplicate_event_id_earlier",
    "unknown_event_type",
    "rating_out_of_range",
    "future_timestamps",
    "unknown_items",
    "corrupt_parquet",
    "non_utf8_csv",
    "volume_collapse",
)
#: The table a fault breaks unless told otherwise (the generic kinds work on every table).
FAULT_TABLE: dict[str, str] = {k: "events" for k in FAULT_KINDS} | {
    "corrupt_parquet": "items",
    "non_utf8_csv": "users",
}
_EVENT_ONLY = {
    "duplicate_event_id",
    "duplicate_event_id_earlier",
    "unknown_event_type",
    "rating_out_of_range",
    "future_timestamps",
    "unknown_items",
    "volume_collapse",
}
#: Kinds that break the file itself, not its rows.
_FILE_KINDS = {"empty_file", "corrupt_parquet", "non_utf8_csv"}
FAULTS = SIM + "faults.json"
CLEAN = SIM + "clean/"  # valid copies of the batches inject_fault broke


def fault_plan(
    days: int, seed: int, shift_day: int | None, cfg: SimConfig
) -> list[tuple[int, str, str]]:
    """``[(day index, kind, table)]``: which batches a faults scenario breaks."""
    eligible = [
        d for d in range(3, days) if shift_day is None or d not in (shift_day, shift_day + 1)
    ]
    if not eligible:
        raise SimulatorError(
            f"the faults scenario needs days after the first 3 (and the shift), got --days {days}"
        )
    rng = stream_rng(seed, 2)
    n = max(1, len(eligible) // max(1, cfg.fault_every))
    chosen = sorted(int(d) for d in rng.choice(eligible, size=min(n, len(eligible)), replace=False))
    kinds = list(cfg.fault_kinds) or [str(k) for k in rng.permutation(FAULT_KINDS)]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise SimulatorError(
            f"unknown fault kind(s) {', '.join(unknown)}: choose from {', '.join(FAULT_KINDS)}"
        )
    return [
        (d, kinds[i % len(kinds)], FAULT_TABLE[kinds[i % len(kinds)]]) for i, d in enumerate(chosen)
    ]


def _read_batch(lake: Lake, table: str, day: dt.date, clean: bool = True) -> pa.Table:
    """The valid batch of a day: the clean copy kept by :func:`inject_fault`, else the raw one."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    files = lake.list(CLEAN + partition_prefix(RAW, table, day)) if clean else []
    files = files or lake.partition_files(RAW, table, day)
    if not files:
        raise SimulatorError(
            f"no raw {table} batch for {day} to break: run `flywheel simulate` first"
        )
    key = files[0]
    data = lake.read_bytes(key)
    schema = TABLES[table].arrow_schema()
    try:
        if key.endswith(".csv"):
            opts = pcsv.ConvertOptions(column_types=schema)
            return pcsv.read_csv(io.BytesIO(data), convert_options=opts).select(schema.names)
        return pq.read_table(pa.BufferReader(data)).cast(schema)
    except (pa.ArrowException, ValueError, KeyError) as exc:
        raise SimulatorError(
            f"raw {table} batch {lake.url(key)} is not a valid batch to break: {exc}"
        ) from None


def _some(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    k = min(n, max(1, int(round(n * share))))
    return np.sort(rng.choice(n, size=k, replace=False)) if n else np.array([], dtype=int)


def _set(table: pa.Table, name: str, values, nullable: bool = False, type_=None) -> pa.Table:
    import pyarrow as pa

    arr = pa.array(values, type=type_ or table.schema.field(name).type)
    i = table.schema.get_field_index(name)
    return table.set_column(i, pa.field(name, arr.type, nullable=nullable), arr)


def _earlier_event_ids(lake: Lake, day: dt.date) -> list[str]:
    """Event ids of the latest earlier day that the gate will publish.

    A fault in any table rejects the whole day, so its events never reach validated/ and their
    ids would not be duplicates there: skip every day with a recorded fault.
    """
    records = json.loads(lake.read_text(FAULTS)) if lake.exists(FAULTS) else []
    broken = {r["date"] for r in records}
    for earlier in reversed([p for p in lake.partitions(RAW, "events") if p < day]):
        if earlier.isoformat() in broken:
            continue
        try:
            ids = _read_batch(lake, "events", earlier, clean=False).column("event_id").to_pylist()
        except SimulatorError:
            continue
        if ids:
            return ids
    raise SimulatorError(
        f"duplicate_event_id_earlier needs an earlier valid events batch than {day}"
    )


def _break(lake: Lake, day: dt.date, kind: str, table: str, t: pa.Table, rng) -> tuple[str, bytes]:
    """The broken file (name, bytes) of one batch."""
    if kind in _FILE_KINDS:
        return _break_file(day, kind, table, t)
    if kind in _EVENT_ONLY:
        return encode(_break_events(lake, day, kind, t, rng), "parquet")
    if kind in FAULT_KINDS:
        return encode(_break_table(kind, table, t, rng), "parquet")
    raise SimulatorError(f"unknown fault kind {kind!r}: choose from {', '.join(FAULT_KINDS)}")


def _break_file(day: dt.date, kind: str, table: str, t: pa.Table) -> tuple[str, bytes]:
    """A file that cannot be read as a batch: empty, truncated Parquet, CSV not in UTF-8."""
    if kind == "empty_file":
        return PART_NAME, b""
    if kind == "corrupt_parquet":
        _, data = encode(t, "parquet")
        return PART_NAME, data[: max(8, len(data) // 2)] + b"\x00garbage\xff"
    import pyarrow.csv as pcsv

    buf = io.BytesIO()
    pcsv.write_csv(t, buf)
    text = buf.getvalue().decode("utf-8")
    extra = {
        "events": f"e{day:%Y%m%d}-x000001,u_zoë,i_café,view,1.0,{day}T12:00:00Z",
        "items": f"i_café_{day:%Y%m%d},décor,9.99,{day}T00:00:01Z",
        "users": f"u_zoë_{day:%Y%m%d},{day}T00:00:01Z,FR,25-34",
    }[table]
    return CSV_PART_NAME, (text + extra + "\n").encode("cp1252")


def _break_table(kind: str, table: str, t: pa.Table, rng) -> pa.Table:
    """A readable batch of any table with the wrong shape: no rows, a column too few or too
    many, a column of the wrong type, null keys."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = t.num_rows
    if kind == "zero_rows":
        return t.slice(0, 0)
    if kind == "missing_column":
        drop = {"events": "event_ts", "items": "price", "users": "country"}[table]
        return t.drop_columns([drop])
    if kind == "extra_column":
        return t.append_column("session_note", pa.array(["x"] * n, pa.string()))
    if kind == "wrong_type":
        col = {"events": "value", "items": "price", "users": "signup_ts"}[table]
        return _set(t, col, pc.cast(t.column(col), pa.string()), type_=pa.string())
    # null_keys
    key_col = TABLES[table].column_names[0]
    keys = t.column(key_col).to_pylist()
    for i in _some(rng, n, 0.05):
        keys[i] = None
    return _set(t, key_col, keys, nullable=True)


def _break_events(lake: Lake, day: dt.date, kind: str, t: pa.Table, rng) -> pa.Table:
    """An events batch with bad rows: duplicate ids (within the day or with an earlier one),
    unknown types, ratings out of range, future timestamps, unknown items, or almost no rows."""
    import pyarrow as pa

    n = t.num_rows
    if kind == "duplicate_event_id":
        ids = t.column("event_id").to_pylist()
        idx = _some(rng, n, 0.02)
        src = rng.choice(n, size=len(idx))
        src = np.where(src == idx, (src + 1) % max(n, 1), src)
        for i, s in zip(idx, src, strict=True):
            ids[i] = ids[s]
        return _set(t, "event_id", ids)
    if kind == "duplicate_event_id_earlier":
        earlier = _earlier_event_ids(lake, day)
        ids = t.column("event_id").to_pylist()
        idx = _some(rng, n, 0.02)
        picks = rng.choice(len(earlier), size=min(len(idx), len(earlier)), replace=False)
        for i, j in zip(idx, picks, strict=False):
            ids[i] = earlier[j]
        return _set(t, "event_id", ids)
    if kind == "unknown_event_type":
        types = t.column("event_type").to_pylist()
        for i in _some(rng, n, 0.03):
            types[i] = "like"
        return _set(t, "event_type", types)
    if kind == "rating_out_of_range":
        types, values = t.column("event_type").to_pylist(), t.column("value").to_pylist()
        for j, i in enumerate(_some(rng, n, 0.01)):
            types[i], values[i] = "rating", (7.0 if j % 2 == 0 else 0.0)
        return _set(_set(t, "event_type", types), "value", values)
    if kind == "future_timestamps":
        ts = t.column("event_ts").cast(pa.int64()).to_numpy().copy()
        idx = _some(rng, n, 0.05)
        ts[idx] += 3650 * US_PER_DAY  # years ahead: past any data interval and any clock
        return _set(t, "event_ts", pa.array(ts).cast(pa.timestamp("us", tz="UTC")))
    if kind == "unknown_items":
        items = t.column("item_id").to_pylist()
        for j, i in enumerate(_some(rng, n, 0.05)):
            items[i] = f"ix{j:06d}"
        return _set(t, "item_id", items)
    # volume_collapse
    return t.take(_some(rng, n, 0.02))


def inject_fault(
    lake: Lake, day: dt.date, kind: str, table: str | None = None, seed: int = 0
) -> dict:
    """Break the raw ``table`` batch of ``day`` (already in the lake) in the way ``kind`` names.

    Replaces the partition's file with the broken one, records it in ``sim/faults.json`` and
    returns the record ``{"date", "table", "kind", "file"}``. Kinds are :data:`FAULT_KINDS`;
    ``table`` defaults to :data:`FAULT_TABLE` ``[kind]`` (event-specific kinds need ``events``).
    """
    if kind not in FAULT_KINDS:
        raise SimulatorError(f"unknown fault kind {kind!r}: choose from {', '.join(FAULT_KINDS)}")
    table = table or FAULT_TABLE[kind]
    if table not in TABLES:
        raise SimulatorError(f"unknown table {table!r}: choose from {', '.join(TABLES)}")
    if kind in _EVENT_ONLY and table != "events":
        raise SimulatorError(f"fault {kind!r} applies to events only, not {table}")
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    rng = stream_rng(seed, 3, day.toordinal(), FAULT_KINDS.index(kind))
    batch = _read_batch(lake, table, day)
    name, data = _break(lake, day, kind, table, batch, rng)
    prefix = partition_prefix(RAW, table, day)
    if not lake.list(CLEAN + prefix):  # keep the valid batch: repair_fault and re-injection use it
        for key in lake.list(prefix):
            lake.copy(key, CLEAN + key)
    lake.replace_partition(prefix, {name: data})
    record = {"date": day.isoformat(), "table": table, "kind": kind, "file": prefix + name}
    _record_faults(lake, day, table, record)
    return record


def _record_faults(lake: Lake, day: dt.date, table: str, record: dict | None) -> None:
    records = json.loads(lake.read_text(FAULTS)) if lake.exists(FAULTS) else []
    records = [r for r in records if (r["date"], r["table"]) != (day.isoformat(), table)]
    records = sorted(records + ([record] if record else []), key=lambda r: (r["date"], r["table"]))
    lake.write_text(FAULTS, json.dumps(records, indent=2))


def repair_fault(lake: Lake, day: dt.date, table: str) -> str:
    """Put the valid batch back (a corrected re-delivery); returns its key. Undoes :func:`inject_fault`."""
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    prefix = partition_prefix(RAW, table, day)
    clean = lake.list(CLEAN + prefix)
    if not clean:
        raise SimulatorError(f"no broken {table} batch recorded for {day}: nothing to repair")
    lake.replace_partition(prefix, {k.rsplit("/", 1)[1]: lake.read_bytes(k) for k in clean})
    lake.delete_prefix(CLEAN + prefix)
    _record_faults(lake, day, table, None)
    return prefix + clean[0].rsplit("/", 1)[1]
