"""Quarantine: failing raw files moved byte-identical, with the result (JSON) and a report (HTML).

Layout: ``quarantine/<table>/dt=YYYY-MM-DD/<same file name>`` plus ``validation_result.json``
and ``validation_report.html`` beside them. To re-run a quarantined day, fix the files and move
them back to ``raw/<table>/dt=YYYY-MM-DD/`` (``flywheel ingest DAY`` or clear the Airflow task).
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

from core.lake import QUARANTINE, partition_prefix

if TYPE_CHECKING:
    import datetime as dt

    from core.lake import Lake

RESULT_NAME = "validation_result.json"
REPORT_NAME = "validation_report.html"


def quarantine_prefix(table: str, day: dt.date) -> str:
    return partition_prefix(QUARANTINE, table, day)


def quarantine(
    lake: Lake, table: str, day: dt.date, raw_keys: list[str], result: dict, report_html: str
) -> str:
    """Move ``raw_keys`` into quarantine with the result and report; returns the prefix."""
    prefix = quarantine_prefix(table, day)
    lake.write_text(prefix + RESULT_NAME, json.dumps(result, indent=2, default=str))
    lake.write_text(prefix + REPORT_NAME, report_html)
    for key in raw_keys:
        lake.move(key, prefix + key.rsplit("/", 1)[-1])
    return prefix


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
