"""Gate a day's tables: the schema suite per raw file, then the data suite on the batch.

The suites and their GX run are :mod:`validation`'s; this module hands them the batch in the
shape GX is fastest on (:func:`gx_frame`) and the suite parameters from outside the batch
(:mod:`validation.history`), and names the file(s) each finding comes from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.contract import TABLES
from ingestion.conform import encode_strings, matches_contract, one_chunk
from ingestion.read import READ_RULE, RawFile, batch
from validation.gate import Finding, redact_finding
from validation.history import events_parameters, table_parameters
from validation.rows import RowSplit, is_row_level, offending_rows, prescreen

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Collection

    import pandas as pd
    import pyarrow as pa

    from validation.config import GateConfig
    from validation.gate import Gate
    from validation.history import History

log = logging.getLogger(__name__)


@dataclass
class TableCheck:
    """The gate's findings on one table of the day, its batch once the schema passed, and its
    verdict: passed (no findings), split (row-level findings on few rows: ``split`` holds the
    rows kept and those quarantined) or failed (any other finding).

    ``rejected``: files set aside on their own (unreadable, or not the contract's schema) while
    the table's other files passed the schema suite; those others are the batch (``files``) and
    are judged without them. When the batch fails too, :meth:`reject_all` folds them back: a
    failed table is quarantined whole.
    """

    table: str
    files: list[RawFile] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    rejected: list[RawFile] = field(default_factory=list)
    rejected_findings: list[Finding] = field(default_factory=list)
    gx_results: list[Any] = field(default_factory=list)  # GX validation results (objects)
    gx_batches: list[str] = field(default_factory=list)  # what each result ran on (file, table)
    data: pa.Table | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # the data suite's
    split: RowSplit | None = None
    encoded: pa.Table | None = None  # the events' batch through encode_strings

    @property
    def keys(self) -> list[str]:
        return [f.key for f in self.files]

    @property
    def rejected_keys(self) -> list[str]:
        return [f.key for f in self.rejected]

    @property
    def all_findings(self) -> list[Finding]:
        """The files' findings (the set-aside ones first) and the batch's."""
        return self.rejected_findings + self.findings

    def reject_all(self) -> None:
        """A failed table: its set-aside files rejoin it (all are quarantined together)."""
        if self.rejected:
            order = {f.key: f for f in [*self.files, *self.rejected]}
            self.files = [order[k] for k in sorted(order)]
            self.findings = self.rejected_findings + self.findings
            self.rejected, self.rejected_findings = [], []

    @property
    def rows(self) -> int:
        return 0 if self.data is None else self.data.num_rows

    @property
    def failed(self) -> bool:
        return bool(self.findings) and self.split is None

    @property
    def published(self) -> pa.Table | None:
        """The rows to publish (``None`` when the table failed or had no batch)."""
        if self.failed:
            return None
        return self.split.kept if self.split is not None else self.data

    @property
    def rows_quarantined(self) -> int:
        return self.split.rows_quarantined if self.split is not None else 0


def verdict(day: dt.date, check: TableCheck) -> str:
    """One line: the table's verdict and what it found, e.g. ``gate events 2026-01-08: FAILED
    — expect_column_values_to_be_in_set(event_type, value_set=[view, …]): 3 of 40 rows``."""
    if check.failed:
        state = "FAILED"
    elif not check.files and not check.rejected:
        state = "no raw files"
    else:
        state = f"passed ({check.rows - check.rows_quarantined} rows published"
        state += f", {check.rows_quarantined} rows quarantined" if check.rows_quarantined else ""
        state += f", {len(check.rejected)} file(s) set aside)" if check.rejected else ")"
    found = "; ".join(f.headline() for f in check.all_findings)
    return f"gate {check.table} {day}: {state}" + (f" — {found}" if found else "")


def log_verdict(day: dt.date, check: TableCheck, config: GateConfig) -> None:
    """Log :func:`verdict` as soon as the table is judged: a warning when it found anything
    (the first lines of a failing task's log say why), else info (debug in a bulk range,
    ``gx_every_batch=False``: thousands of clean days)."""
    clean = logging.DEBUG if config.gx_every_batch is False else logging.INFO
    log.log(logging.WARNING if check.all_findings else clean, verdict(day, check))


# --- frames for GX -------------------------------------------------------------------------------
def schema_frame(tbl: pa.Table) -> pd.DataFrame:
    """One row per column: its name and Arrow type (what the schema suite checks)."""
    import pandas as pd

    return pd.DataFrame({"column": tbl.column_names, "type": [str(f.type) for f in tbl.schema]})


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


# --- the suites ----------------------------------------------------------------------------------
def check_files(gate: Gate, day: dt.date, table: str, files: list[RawFile]) -> TableCheck:
    """Run the schema suite on each of the day's raw ``files`` of ``table``.

    ``check.data`` is the concatenated batch of the files that were readable and passed. When
    some files did and others did not, the others are set aside (``check.rejected``, with their
    findings): a junk file beside the export does not fail the export. When none passed, the
    findings are the table's (it fails).
    """
    check = TableCheck(table)
    if not files:
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
    for raw in files:
        found = _file_findings(gate, check, raw)
        if found:
            check.rejected.append(raw)
            check.rejected_findings += found
        else:
            check.files.append(raw)
    if not check.files:  # no file passed on its own: the table fails
        check.reject_all()
    else:
        check.data = batch(table, check.files)
    return check


def _file_findings(gate: Gate, check: TableCheck, raw: RawFile) -> list[Finding]:
    """What one raw file breaks: unreadable, or the schema suite's findings (none: it passed)."""
    if raw.error:
        return [Finding("file_readable", READ_RULE, None, raw.error, files=[raw.key])]
    if matches_contract(raw.table, check.table):
        return []  # exact contract schema: nothing for the schema suite to find
    found, res = gate.run(check.table, "schema", schema_frame(raw.table))
    for f in found:
        f.files = [raw.key]
        if raw.notes:
            f.message += " (" + "; ".join(raw.notes) + ")"
    check.gx_results.append(res)
    check.gx_batches.append(raw.key)
    return found


def run_data_suite(gate: Gate, check: TableCheck, data: pa.Table, parameters: dict) -> None:
    """The data suite on the batch ``data`` (``check.data``, maybe dictionary-encoded), then the
    table's verdict (:func:`judge`).

    An Arrow replica of every rule screens the batch first (:func:`validation.rows.prescreen`,
    like :func:`~ingestion.conform.matches_contract` for the schema suite): when it finds
    nothing, GX has nothing to report and does not run; when it finds something, GX runs and
    its results are the verdict that is recorded. The screen is on only when
    ``gx_every_batch`` is ``False``: a bulk range's default (:func:`ingestion.bulk.ingest_range`);
    a daily run (``None``, the default) runs GX on every batch.
    """
    check.parameters = parameters
    config = gate.config
    if config.gx_every_batch is False and not prescreen(
        check.table, check.data, parameters, config
    ):
        return
    frame = gx_frame(data, TABLES[check.table].unique)
    found, res = gate.run(check.table, "data", frame, parameters)
    for f in found:
        _attribute(f, check.files)  # (by the raw values)
        redact_finding(f)  # then raw ids are never shown: their pseudonyms are
    check.findings += found
    check.gx_results.append(res)
    check.gx_batches.append(check.table)
    judge(check, config)


def judge(check: TableCheck, config: GateConfig) -> None:
    """Split the batch when every finding is row-level and the offending rows are at most
    ``max_bad_row_share`` of it (``check.split``); otherwise the findings fail the table."""
    if not check.findings or check.data is None:
        return
    if not all(is_row_level(check.table, f) for f in check.findings):
        return
    split = offending_rows(check.table, check.data, check.findings, check.parameters, config)
    if split.rows_quarantined <= config.max_bad_row_share * check.rows:
        check.split = split


def check_table_values(gate: Gate, day: dt.date, check: TableCheck) -> None:
    """The data suite of ``items`` or ``users`` on the batch (when the schema passed)."""
    if check.data is not None:
        parameters = table_parameters(check.table, day, gate.config, check.data)
        run_data_suite(gate, check, check.data, parameters)


def check_event_values(
    gate: Gate,
    history: History,
    day: dt.date,
    now: dt.datetime,
    events: TableCheck,
    encoded: pa.Table,
    same_day_items: pa.ChunkedArray | None,
) -> None:
    """The data suite of the events (``encoded``: the batch through :func:`encode_strings`),
    against ``history`` and the day's items that passed (``same_day_items``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    event_ids = encoded["event_id"]
    if pa.types.is_dictionary(event_ids.type):
        event_ids = one_chunk(event_ids).dictionary
    else:
        event_ids = pc.unique(one_chunk(event_ids).drop_null())
    item_ids = one_chunk(encoded["item_id"]).dictionary
    parameters = events_parameters(
        history, day, gate.config, now, event_ids, item_ids, same_day_items
    )
    run_data_suite(gate, events, encoded, parameters)


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
