"""Quality results: where the gate's outcome of each (day, table) is kept, and how it is read.

Layout (in the lake)::

    quality/results/dt=D/<table>.json                   the latest outcome of the table on D
    quality/runs/dt=D/<table>/<validation_id>.json      every run's outcome
    quality/reports/dt=D/<table>.html                   the report of the table's latest run
    quality/quarantined/dt=D/<table>.json               a quarantined table's full result
                                                        (:mod:`validation.quarantine`)
    quality/data_docs/dt=D/<table>/...                  GX's Data Docs of the table's runs
                                                        (:mod:`validation.docs`)

The pipeline's own files are all here: ``quarantine/`` holds only files that came from ``raw/``,
so no raw file can take the name of a report or result.

An outcome is one JSON object: ``date, table, success, published, failed_expectations
[{expectation, rule, column, message, examples, files}], rows, rows_quarantined,
quarantined_reasons {rule: rows}, validation_id, validated_at, run_id, files, report_uri,
data_docs_key`` (the lake key of the run's GX Data Docs page, ``None`` when GX did not run on the
table: see :mod:`validation.docs`; a finding also has a ``title``, see
:class:`validation.gate.Finding`) (and
``quarantined`` for the raw files moved to quarantine: a failing table's, or a junk file set
aside from a table published without it; ``quarantined_rows`` for the file of rows split off a
published table; ``withdrawn`` for a failing table's earlier publication of the day, moved out
of ``validated/``). Offending values of a personal column (``user_id``) are shown as their
pseudonyms (:func:`validation.gate.redact_finding`), never raw.

Everything that reads or writes these files goes through this module: ingestion records
outcomes (:func:`record`), the gate's volume band reads earlier days (:func:`read_result`), the
UI, the demo, the CLI and training list them (:func:`iter_results`, :func:`read_quality_history`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

from core.errors import LakeError
from core.lake import QUALITY, get_lake, partition_prefix
from validation.quarantine import render_report

if TYPE_CHECKING:
    from collections.abc import Iterator

    from core.lake import Lake
    from validation.gate import Finding

log = logging.getLogger(__name__)

#: Lake folder of the quality results (beside the zones; the UI serves files under it).
RESULTS = "results"  # quality/results/: the latest outcome per (day, table)
RUNS = "runs"  # quality/runs/: every run's outcome
HTML_REPORTS = "reports"  # quality/reports/: the HTML report of each (day, table)


def result_key(day: dt.date, table: str) -> str:
    """``quality/results/dt=D/<table>.json``: the latest outcome of ``table`` on ``day``."""
    return partition_prefix(QUALITY, RESULTS, day) + f"{table}.json"


def run_key(day: dt.date, table: str, validation_id: str) -> str:
    """``quality/runs/dt=D/<table>/<validation_id>.json``: one run's outcome."""
    return partition_prefix(QUALITY, RUNS, day) + f"{table}/{validation_id}.json"


def report_key(day: dt.date, table: str) -> str:
    """``quality/reports/dt=D/<table>.html``: the report of ``table`` on ``day`` (pass or fail)."""
    return partition_prefix(QUALITY, HTML_REPORTS, day) + f"{table}.html"


def outcome(
    day: dt.date,
    table: str,
    findings: list[Finding],
    published: bool,
    rows: int,
    files: list[str],
    validation_id: str,
    validated_at: str,
    run_id: str | None = None,
    rows_quarantined: int = 0,
    quarantined_reasons: dict[str, int] | None = None,
    data_docs_key: str | None = None,
) -> dict[str, Any]:
    """The outcome record of one table's validation (``report_uri`` filled in by
    :func:`record` unless the caller set one; ``data_docs_key``: the lake key of the run's
    GX Data Docs page of the table, :mod:`validation.docs`).

    ``success`` is GX's verdict on the whole batch; a table whose only findings are row-level
    breaches on few rows is ``published`` all the same, without those ``rows_quarantined``
    (``quarantined_reasons``: rule -> rows).
    """
    return {
        "date": day.isoformat(),
        "table": table,
        "success": not findings,
        "published": published,
        "failed_expectations": [f.as_dict() for f in findings],
        "rows": rows,
        "rows_quarantined": rows_quarantined,
        "quarantined_reasons": quarantined_reasons or {},
        "validation_id": validation_id,
        "validated_at": validated_at,
        "run_id": run_id,
        "files": files,
        "report_uri": None,
        "data_docs_key": data_docs_key,
    }


def record(lake: Lake, result: dict[str, Any]) -> None:
    """Store one outcome: its HTML report (when it has none yet), the run, the latest."""
    day, table = dt.date.fromisoformat(result["date"]), result["table"]
    if result["report_uri"] is None:
        key = report_key(day, table)
        lake.write_text(key, render_report(result))
        result["report_uri"] = lake.url(key)
    text = json.dumps(result, indent=2, default=str)
    lake.write_text(run_key(day, table, result["validation_id"]), text)
    lake.write_text(result_key(day, table), text)


def _load(lake: Lake, key: str) -> dict[str, Any] | None:
    """One stored outcome, or ``None`` when it is missing, unreadable or not an object."""
    try:
        rec = json.loads(lake.read_text(key))
    except (ValueError, LakeError):  # half-written, foreign (bad UTF-8 is a ValueError) or gone
        log.warning("unreadable quality result %s", key)
        return None
    return rec if isinstance(rec, dict) else None


def read_result(lake: Lake, day: dt.date, table: str) -> dict[str, Any] | None:
    """The latest outcome of ``table`` on ``day``; ``None`` when there is none (or unreadable)."""
    key = result_key(day, table)
    return _load(lake, key) if lake.exists(key) else None


def iter_results(lake: Lake, every_run: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, outcome)`` of every stored outcome, in key order (oldest day first, then table).

    The latest per (day, table), or every run (``every_run``). Unreadable files are skipped
    with a warning; ``date`` and ``table`` default to what the key says.
    """
    area = RUNS if every_run else RESULTS
    for key in lake.list(f"{QUALITY}/{area}/"):
        parts = key.split("/")  # quality/<area>/dt=D/<table>.json | .../dt=D/<table>/<id>.json
        if len(parts) != (5 if every_run else 4) or not key.endswith(".json"):
            continue  # not an outcome of the layout
        rec = _load(lake, key)
        if rec is None:
            continue
        rec.setdefault("date", parts[2][len("dt=") :])
        rec.setdefault("table", parts[3] if every_run else parts[3][: -len(".json")])
        yield key, rec


def read_quality_history(lake: Lake | None = None, every_run: bool = False) -> list[dict]:
    """Validation outcomes, newest day first: the latest per (day, table), or every run.

    Each record: ``date, table, success, published, failed_expectations [{expectation, rule,
    column, message, examples, files}], rows, validation_id, validated_at, report_uri, files``.
    """
    out = [rec for _, rec in iter_results(lake or get_lake(), every_run)]
    out.sort(
        key=lambda r: (r.get("date", ""), r.get("validated_at", ""), r.get("table", "")),
        reverse=True,
    )
    return out
