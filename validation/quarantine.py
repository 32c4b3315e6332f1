"""Quarantine: failing raw files moved byte-identical, and where their full result is kept.

Layout: ``quarantine/<table>/dt=YYYY-MM-DD/`` holds only what came from
``raw/<table>/dt=YYYY-MM-DD/``, each file under the same path it had there. The pipeline writes
nothing of its own in ``quarantine/``, so a raw file can never take the name of one of its
files (a raw ``validation_report.html`` stays a quarantined payload, which the UI serves only
as a download). The pipeline's files live in ``quality/``, where raw files never go: the full
result (the outcome and Great Expectations' results) at ``quality/quarantined/dt=D/<table>.json``
(:func:`full_result_key`) and the HTML report, as for every table, at
``quality/reports/dt=D/<table>.html`` (written by :func:`validation.results.record`).

Rows split off a table that was published (row-level breaches under ``max_bad_row_share``,
see :mod:`validation.rows`) are the pipeline's own file, so they live beside the raw tables'
folders: ``quarantine/<table>_rows/dt=D/part-00000.parquet`` (:func:`rows_prefix`), the raw rows
with a ``reason`` column (the rule(s) each broke). The raw file itself stays in ``raw/``
untouched, so nothing is lost; a re-run replaces the rows file.

A table that passed on an earlier run and fails on a re-run of the day is withdrawn: its
validated partition moves to ``quarantine/<table>_withdrawn/dt=D/`` (:func:`withdrawn_prefix`),
so nothing downstream reads a day whose latest verdict is "fail"; its outcome says
``withdrawn``. A later run that publishes the table again removes the withdrawn copy.

When a table has several raw files and only some fail on their own (unreadable, or not the
contract's schema) while the others pass, only the failing ones move here and the others are
judged, and published, without them.

To re-run a quarantined day, fix the files and move everything under the quarantine folder back
to ``raw/<table>/dt=YYYY-MM-DD/`` (``flywheel ingest DAY`` or clear the Airflow task).
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

from core.lake import QUALITY, QUARANTINE, RAW, partition_prefix

if TYPE_CHECKING:
    import datetime as dt

    from core.lake import Lake

#: Folder of ``quality/`` with the full results of quarantined tables (one JSON per day, table).
FULL_RESULTS = "quarantined"


def quarantine_prefix(table: str, day: dt.date) -> str:
    """``quarantine/<table>/dt=D/``: the raw files of ``table`` on ``day`` that failed."""
    return partition_prefix(QUARANTINE, table, day)


def rows_prefix(table: str, day: dt.date) -> str:
    """``quarantine/<table>_rows/dt=D/``: rows split off the published ``table`` of ``day``."""
    return partition_prefix(QUARANTINE, f"{table}_rows", day)


def withdrawn_prefix(table: str, day: dt.date) -> str:
    """``quarantine/<table>_withdrawn/dt=D/``: the validated partition of ``table`` on ``day``
    that an earlier run published, moved aside when a later run of the day failed."""
    return partition_prefix(QUARANTINE, f"{table}_withdrawn", day)


def full_result_key(table: str, day: dt.date) -> str:
    """``quality/quarantined/dt=D/<table>.json``: the full result of a quarantined table."""
    return partition_prefix(QUALITY, FULL_RESULTS, day) + f"{table}.json"


def quarantine(
    lake: Lake, table: str, day: dt.date, raw_keys: list[str], result: dict
) -> list[str]:
    """Store ``result`` (:func:`full_result_key`) and move ``raw_keys``, files of
    ``raw/<table>/dt=D/``, to the same paths under :func:`quarantine_prefix`; returns their new
    keys. A key outside that raw partition is refused (``ValueError``) before anything moves."""
    src, dst = partition_prefix(RAW, table, day), quarantine_prefix(table, day)
    foreign = [k for k in raw_keys if not k.startswith(src) or k == src]
    if foreign:
        raise ValueError(f"not a raw file of {table} on {day}: {', '.join(foreign)}")
    lake.write_text(full_result_key(table, day), json.dumps(result, indent=2, default=str))
    moved = []
    for key in raw_keys:
        moved.append(dst + key[len(src) :])
        lake.move(key, moved[-1])
    return moved


def render_report(outcome: dict) -> str:
    """A self-contained HTML page for one table's outcome (what failed, where, examples)."""
    e = html.escape
    status = "passed" if outcome["success"] else "FAILED"
    rows = "".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>".format(
            e(f["expectation"]),
            e(f.get("rule", "")),
            e(str(f.get("column") or "")),
            e(f["message"]),
            e(json.dumps(f.get("examples", []), default=str)),
            e(", ".join(f.get("files", []))),
        )
        for f in outcome.get("failed_expectations", [])
    )
    table = (
        "<table><tr><th>expectation</th><th>rule</th><th>column</th><th>what</th>"
        f"<th>examples</th><th>files</th></tr>{rows}</table>"
        if rows
        else "<p>Every expectation passed.</p>"
    )
    files = "".join(f"<li><code>{e(f)}</code></li>" for f in outcome.get("files", []))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(outcome["table"])} {e(outcome["date"])}: {status}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
.FAILED{{color:#b00}}.passed{{color:#070}}</style></head>
<body><h1>Data quality: <code>{e(outcome["table"])}</code> on {e(outcome["date"])}
<span class="{status}">{status}</span></h1>
<p>Validation <code>{e(str(outcome.get("validation_id")))}</code>, {outcome.get("rows", 0)} rows,
checked at {e(str(outcome.get("validated_at", "")))}.</p>
<h2>Files</h2><ul>{files or "<li>none</li>"}</ul>
<h2>Failed expectations</h2>{table}
</body></html>
"""
