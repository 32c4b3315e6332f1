"""The Evidently drift report as kept: header first, drifted columns first, shares not counts,
the data day as its time, tagged with its decision; the workspace project's trend dashboard.

Small synthetic frames (14 reference days against 1 current day) through the real Evidently
``Report`` and a real local workspace (``FLYWHEEL_HOME`` of the test).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from core.settings import get_settings
from monitoring.config import DriftConfig
from monitoring.report import (
    HEADER_ID,
    PROJECT,
    SCORE_PANEL,
    SHARE_PANEL,
    add_to_workspace,
    finish_report,
    relabel_run,
    report_html,
    run_report,
    snapshot_timestamp,
)

DAY = dt.date(2026, 1, 15)
WINDOW = ["2026-01-01", "2026-01-14"]
CONFIG = DriftConfig(
    numeric=("item_price", "user_views_1d"), categorical=("item_category", "user_country")
)


def _frames(day: int, shift: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """14 days of reference rows (100 a day) and one current day of 100 rows."""
    rng = np.random.default_rng(day)
    n = 1400
    reference = pd.DataFrame(
        {
            "item_price": rng.normal(10, 2, n),
            "user_views_1d": rng.poisson(3, n).astype(float),
            "item_category": rng.choice(["books", "games", "music"], n, p=[0.5, 0.3, 0.2]),
            "user_country": rng.choice(["de", "fr"], n),
        }
    )
    cats = ["books", "games", "music"]
    current = pd.DataFrame(
        {
            "item_price": rng.normal(14 if shift else 10, 2, 100),
            "user_views_1d": rng.poisson(3, 100).astype(float),
            "item_category": rng.choice(cats, 100, p=[0.1, 0.2, 0.7] if shift else [0.5, 0.3, 0.2]),
            "user_country": rng.choice(["de", "fr"], 100),
        }
    )
    return reference, current


def _checked(day: dt.date, shift: bool, decision: str) -> tuple[object, dict]:
    """A finished snapshot of ``day`` and the summary it was finished with."""
    reference, current = _frames(day.day, shift)
    snapshot, per_column, share = run_report(
        reference, current, CONFIG, timestamp=snapshot_timestamp(day), name=f"drift {day}"
    )
    summary = {
        "date": day.isoformat(),
        "reference_window": WINDOW,
        "reference_rows": len(reference),
        "current_rows": len(current),
        "columns": per_column,
        "drift_share": share,
        "decision": decision,
        "reason": "drift: 2/4 columns drifted" if shift else "no drift: share 0.00 < 0.1",
    }
    return finish_report(snapshot, summary), summary


def _column_order(snapshot) -> list[str]:
    """The columns of the snapshot's ValueDrift widgets, in the order they are shown."""
    model = snapshot.to_snapshot_model()
    columns = {
        fp: m["config"].get("column")
        for fp, m in zip(model.top_level_metrics, snapshot.dict()["metrics"], strict=True)
    }
    order = [columns.get((w.linked_metrics or [None])[0]) for w in model.widgets]
    return list(dict.fromkeys(c for c in order if c))


def test_report_opens_with_header_and_drifted_columns_first():
    snapshot, summary = _checked(DAY, shift=True, decision="drift, trigger pending")
    columns = summary["columns"]
    drifted = [c for c, v in columns.items() if v["drifted"]]
    assert set(drifted) == {"item_price", "item_category"}

    model = snapshot.to_snapshot_model()
    header = [w for w in model.widgets if w.id.startswith(HEADER_ID)]
    assert model.widgets[: len(header)] == header and len(header) == 3
    counters = {c["label"]: c["value"] for c in header[0].params["counters"]}
    assert header[0].title == f"Drift check of {DAY}"
    assert counters["drift: 2/4 columns drifted"] == "drift, trigger pending"
    assert counters["drifted columns (2 of 4)"] == ", ".join(
        sorted(drifted, key=lambda c: -columns[c]["score"])
    )
    window = "reference 2026-01-01 … 2026-01-14: 1400 rows; current 2026-01-15: 100 rows"
    assert counters[window] == "14 days vs 1"
    # the column table and the per-column sections: drifted first, then by score
    by_score = sorted(columns, key=lambda c: (not columns[c]["drifted"], -columns[c]["score"]))
    assert [row[0] for row in header[1].params["data"]] == by_score
    assert _column_order(snapshot) == by_score
    assert _column_order(snapshot) != list(columns)  # Evidently's own order differs
    html = report_html(snapshot).decode()
    assert "Drift check of 2026-01-15" in html and "1400 rows; current 2026-01-15: 100" in html


def test_categories_compare_as_shares():
    snapshot, summary = _checked(DAY, shift=True, decision="drift, trigger pending")
    shares = summary["columns"]["item_category"]["shares"]
    assert list(shares) == ["music", "books", "games"]  # largest share (either side) first
    assert shares["music"][1] > 0.5 > shares["music"][0]
    assert sum(v[0] for v in shares.values()) == pytest.approx(1, abs=1e-3)
    table = snapshot.to_snapshot_model().widgets[2]
    assert "Category shares" in table.title and "14 days" in table.title
    assert table.params["data"][0][:2] == ["item_category", "music"]
    assert table.params["data"][0][3].endswith("%")
    # Evidently's distribution plots open on percent, not on counts of 1400 vs 100 rows
    plots = []
    for w in snapshot.to_snapshot_model().widgets:
        plots += [t.widget for t in w.tabs if t.title == "DATA DISTRIBUTION"]
    assert len(plots) == 4
    for plot in plots:
        shown = [t for t in plot.params["data"] if t["visible"]]
        assert {t["name"] for t in shown} == {"current", "reference"}
        assert plot.params["layout"]["yaxis"]["title"] == "Percent"
        for trace in shown:
            assert sum(trace["y"]) == pytest.approx(100, abs=0.5)


def test_snapshot_carries_the_data_day_and_its_decision(fw_home):
    snapshot, summary = _checked(DAY, shift=True, decision="drift, trigger pending")
    model = snapshot.to_snapshot_model()
    assert model.timestamp == dt.datetime(2026, 1, 15)  # the data day, never the wall clock
    assert model.tags == ["drift", "decision:pending"]
    assert model.metadata["date"] == "2026-01-15"
    assert model.metadata["reference_window"] == "2026-01-01..2026-01-14"
    assert model.metadata["decision"] == "drift, trigger pending"
    run_id = add_to_workspace(snapshot, DAY)
    # the trigger goes out later: the run keeps its id, its tags and header follow
    summary["decision"] = "drift, retrain triggered (run r1)"
    again = relabel_run(run_id, summary)
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(get_settings().evidently_workspace))
    (project,) = ws.search_project(PROJECT)
    assert [str(r) for r in ws.list_runs(project.id)] == [run_id]
    stored = ws.get_run(project.id, run_id)
    assert stored.tags == ["drift", "decision:drift-triggered"]
    assert stored.metadata["decision"] == "drift, retrain triggered (run r1)"
    assert stored.timestamp == dt.datetime(2026, 1, 15)
    headers = [w for w in stored.widgets if w.id.startswith(HEADER_ID)]
    assert len(headers) == 3 and stored.widgets[:3] == headers  # replaced, not added
    assert "retrain triggered (run r1)" in report_html(again).decode()


def test_workspace_dashboard_plots_drift_over_days(fw_home):
    from evidently.ui.service.base import SeriesFilter
    from evidently.ui.service.storage.local import create_local_project_manager
    from evidently.ui.workspace import Workspace

    days = [DAY, DAY + dt.timedelta(days=1)]
    shares, scores = [], []
    for day, shift in zip(days, (False, True), strict=True):
        snapshot, summary = _checked(day, shift, "drift, trigger pending" if shift else "no drift")
        shares.append(summary["drift_share"])
        scores.append({c: v["score"] for c, v in summary["columns"].items()})
        add_to_workspace(snapshot, day)
    path = str(get_settings().evidently_workspace)
    (project,) = Workspace(path).search_project(PROJECT)
    dashboard = project.dashboard.model()
    titles = [p.title for p in dashboard.panels]
    assert titles == [SHARE_PANEL, "Drifted columns", SCORE_PANEL]  # once, not per run
    assert [t.title for t in dashboard.tabs] == ["Drift over time"]

    storage = create_local_project_manager(path, False).data_storage
    series = {}
    for panel in dashboard.panels:
        filters = [
            SeriesFilter(
                tags=v.tags, metadata=v.metadata, metric=v.metric, metric_labels=v.metric_labels
            )
            for v in panel.values
        ]
        found = asyncio.run(storage.get_data_series(project.id, filters, None, None))
        assert [s.timestamp for s in found.sources] == [snapshot_timestamp(d) for d in days]
        series[panel.title] = found.series
    (share,) = series[SHARE_PANEL]
    assert share.values == pytest.approx(shares) and shares[1] == 0.5
    per_column = {s.params["column"]: s.values for s in series[SCORE_PANEL]}
    assert set(per_column) == set(CONFIG.numeric) | set(CONFIG.categorical)
    for column, values in per_column.items():
        assert values == pytest.approx([s[column] for s in scores], abs=1e-5)


def test_report_html_keeps_hostile_categories_as_data():
    """A category that spells markup stays a string in the report's data, never markup."""
    evil = "</script><img src=x onerror=alert(1)>"
    reference, current = _frames(DAY.day, shift=True)
    reference.loc[:99, "item_category"] = evil
    current.loc[:59, "item_category"] = evil
    snapshot, per_column, _ = run_report(reference, current, CONFIG, name="x")
    assert list(per_column["item_category"]["shares"])[0] == evil
    summary = {
        "date": DAY.isoformat(),
        "reference_window": WINDOW,
        "columns": per_column,
        "decision": "drift, trigger pending",
        "reason": evil,
    }
    html = report_html(finish_report(snapshot, summary)).decode()
    assert evil not in html and "</script><img" not in html
    assert evil.replace("<", "\\u003c") in html  # the same string to JavaScript
    assert html.count("</script>") == report_html(snapshot).decode().count("</script>")
