"""``flywheel ab-report`` (table and JSON) and ``flywheel serve --help``."""

from __future__ import annotations

import datetime as dt
import json

from typer.testing import CliRunner

from core.errors import FlywheelError
from flywheel.cli import app
from serving.feedback import FeedbackLog, Impression


def test_ab_report_command(lake):
    ts = dt.datetime(2026, 5, 1, 9, tzinfo=dt.UTC)
    log = FeedbackLog(lake)
    for n, variant in enumerate(["champion", "champion", "challenger"]):
        log.record_impression(Impression(f"r{n}", "u", ("i1",), (1.0,), "1", variant, ts))
    log.record_feedback("r0", "i1", "click", now=ts)
    log.flush()
    runner = CliRunner()
    out = runner.invoke(app, ["ab-report", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["variant"]: r for r in json.loads(out.output)["variants"]}
    assert rows["champion"]["impressions"] == 2 and rows["champion"]["ctr"] == 0.5
    table = runner.invoke(app, ["ab-report", "--start", "2026-05-01", "--end", "2026-05-01"])
    assert table.exit_code == 0 and "50.00%" in table.output and "challenger" in table.output
    bad = runner.invoke(app, ["ab-report", "--start", "May 1st"])
    assert isinstance(bad.exception, FlywheelError) and "--start 'May 1st' is not a date" in str(
        bad.exception
    )


def test_serve_command_is_registered():
    out = CliRunner().invoke(app, ["serve", "--help"])
    assert out.exit_code == 0 and "--port" in out.output and "--host" in out.output
