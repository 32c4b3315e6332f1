"""The Evidently report of a drift check and the Evidently workspace it is kept in.

Everything is computed with Evidently 0.7's ``Report`` (``ValueDrift`` per column,
``DriftedColumnsCount`` for the share), with the method and threshold of each column from
:class:`monitoring.config.DriftConfig`. The snapshot goes to the Evidently workspace (project
:data:`PROJECT`, one run per day) and its HTML to the lake (see :mod:`monitoring.monitor`).

Once the decision is known, :func:`finish_report` shapes the snapshot for the reader (Evidently
runs once): a header (data day, reference window and volumes, decision and reason, drifted
columns), the per-column sections drifted first then by score, distributions in percent with
category shares (14 reference days meet 1 current day), the data day as its timestamp, tags
``drift`` + ``decision:…`` and metadata ``date``, ``reference_window``, ``decision``. The project's
dashboard (:func:`add_panels`) plots the drifted share and each column's score over the days.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

from core.settings import Settings, get_settings
from monitoring import DriftError
from monitoring.config import DriftConfig

if TYPE_CHECKING:
    import pandas as pd

#: The Evidently workspace project that holds one drift run per day.
PROJECT = "flywheel"
#: Every drift run's workspace tag (beside its ``decision:…`` tag).
TAG = "drift"
#: Categories per column in the header's share table.
SHARE_ROWS = 5
#: Id prefix of the header widgets (so a re-labelled report replaces them).
HEADER_ID = "flywheel-header-"
#: Where Evidently's standalone HTML starts the report's data (a JSON object per variable).
_DATA_BLOCK = re.compile(r"<script>\s*var metric_[0-9a-f]+ = ")
#: The project dashboard's tab and its trend panels (see :func:`add_panels`).
DASHBOARD_TAB = "Drift over time"
SHARE_PANEL = "Share of drifted columns"
SCORE_PANEL = "Drift score per column"


def compared_columns(
    reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig
) -> list[str]:
    """The config's columns that both sides have with at least one value (nothing else compares)."""
    cols = [
        c
        for c in config.columns
        if c in reference.columns
        and c in current.columns
        and reference[c].notna().any()
        and current[c].notna().any()
    ]
    if not cols:
        raise DriftError("no column to compare: reference and current share no non-empty column")
    return cols


def _sample(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most ``n`` rows of ``df``, the same ones every run."""
    return df if len(df) <= n else df.sample(n=n, random_state=0)


def _frames(
    reference: pd.DataFrame, current: pd.DataFrame, cols: list[str], config: DriftConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(reference, current)`` of ``cols``, sampled to ``max_rows``; categories as objects."""
    ref = _sample(reference[cols], config.max_rows).copy()
    cur = _sample(current[cols], config.max_rows).copy()
    for c in cols:
        if config.is_categorical(c):  # one dtype per side, missing stays missing
            ref[c] = ref[c].astype("object")
            cur[c] = cur[c].astype("object")
    return ref, cur


def _datasets(ref: pd.DataFrame, cur: pd.DataFrame, config: DriftConfig) -> tuple[Any, Any]:
    """Evidently datasets ``(current, reference)`` of the sampled frames, typed by the config."""
    from evidently import DataDefinition, Dataset

    cat = [c for c in ref.columns if config.is_categorical(c)]
    num = [c for c in ref.columns if c not in cat]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    return (
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )


def category_shares(ref: pd.Series, cur: pd.Series, top: int = SHARE_ROWS) -> dict[str, list]:
    """``{category: [reference share, current share]}`` of the ``top`` largest categories (by
    the larger of the two shares), largest first: sides of any size compare as shares."""
    r = ref.dropna().astype(str).value_counts(normalize=True)
    c = cur.dropna().astype(str).value_counts(normalize=True)
    both = r.to_frame("r").join(c.to_frame("c"), how="outer").fillna(0.0)
    both = both.loc[both.max(axis=1).sort_values(ascending=False, kind="stable").index[:top]]
    return {str(k): [round(float(v.r), 4), round(float(v.c), 4)] for k, v in both.iterrows()}


def _metrics(cols: list[str], config: DriftConfig) -> list:
    """``DriftedColumnsCount`` over ``cols`` and one ``ValueDrift`` per column."""
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    methods = {c: config.method_for(c) for c in cols}
    return [
        DriftedColumnsCount(
            columns=cols,
            drift_share=config.drift_share,
            per_column_method={c: m for c, (m, _) in methods.items()},
            per_column_threshold={c: t for c, (_, t) in methods.items()},
        ),
        *[ValueDrift(column=c, method=m, threshold=t) for c, (m, t) in methods.items()],
    ]


def _read_snapshot(snapshot) -> tuple[dict[str, dict[str, Any]], float]:
    """Per-column ``{method, threshold, score, drifted}`` and the drifted share of a snapshot."""
    per_column: dict[str, dict[str, Any]] = {}
    share = None
    for result in snapshot.dict()["metrics"]:
        conf = result.get("config", {})
        if conf.get("type", "").endswith("DriftedColumnsCount"):
            share = float(result["value"]["share"])
        elif conf.get("type", "").endswith("ValueDrift"):
            score = float(result["value"])
            per_column[conf["column"]] = {
                "method": conf["method"],
                "threshold": conf["threshold"],
                "score": round(score, 6),
                "drifted": bool(score >= conf["threshold"]),
            }
    if share is None:  # pragma: no cover - Evidently always returns the count
        share = sum(v["drifted"] for v in per_column.values()) / len(per_column)
    return per_column, share


def run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    *,
    timestamp: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
):
    """Evidently ``Report`` of every compared column; returns ``(snapshot, per-column dict, share)``.

    Columns empty on either side are left out (nothing to compare); the share is Evidently's
    ``DriftedColumnsCount`` over the compared columns. Categorical columns also get their
    ``shares`` (:func:`category_shares`, from the same sampled rows). The snapshot is the raw
    one: :func:`finish_report` gives it its header, order and tags once the decision is known.
    """
    from evidently import Report

    cols = compared_columns(reference, current, config)
    ref, cur = _frames(reference, current, cols, config)
    cur_ds, ref_ds = _datasets(ref, cur, config)
    report = Report(_metrics(cols, config), metadata=metadata or {}, tags=[TAG])
    snapshot = report.run(cur_ds, ref_ds, timestamp=timestamp, name=name)
    per_column, share = _read_snapshot(snapshot)
    for c in per_column:
        if config.is_categorical(c):
            per_column[c]["shares"] = category_shares(ref[c], cur[c])
    return snapshot, per_column, share


def snapshot_timestamp(day: dt.date) -> dt.datetime:
    """The time a day's snapshot carries: the data day at 00:00 UTC (naive, as Evidently
    stores it), so the workspace's dashboards plot each check on its own day."""
    return dt.datetime.combine(day, dt.time())


def decision_tag(label: str) -> str:
    """The workspace tag of a decision label: ``decision:drift-triggered``, ``…:suppressed``,
    ``…:pending``, ``…:no-drift``, ``…:nothing-compared``."""
    for prefix, tag in (
        ("drift, retrain triggered", "drift-triggered"),
        ("drift, suppressed", "suppressed"),
        ("drift, superseded", "suppressed"),
        ("drift, trigger pending", "pending"),
        ("no drift", "no-drift"),
    ):
        if label.startswith(prefix):
            return f"decision:{tag}"
    return "decision:nothing-compared"


def _ordered_columns(columns: dict[str, dict[str, Any]]) -> list[str]:
    """Column names, drifted first, then by score (highest first), then by name."""
    return sorted(columns, key=lambda c: (not columns[c]["drifted"], -columns[c]["score"], c))


def _header_widgets(summary: dict[str, Any]) -> list:
    """The report's opening widgets: the day, the reference window and volumes, the decision
    with its reason, every column (drifted first) and the category shares of drifted ones."""
    from evidently.legacy.renderers.html_widgets import CounterData, counter, table_data

    columns = summary.get("columns") or {}
    order = _ordered_columns(columns)
    ref = summary.get("reference_window") or ["?", "?"]
    days = (dt.date.fromisoformat(ref[1][:10]) - dt.date.fromisoformat(ref[0][:10])).days + 1
    drifted = [c for c in order if columns[c]["drifted"]]
    widgets = [
        counter(
            title=f"Drift check of {summary['date']}",
            counters=[
                CounterData(
                    label=str(summary.get("reason") or ""),
                    value=str(summary.get("decision") or ""),
                ),
                CounterData(
                    label=f"drifted columns ({len(drifted)} of {len(columns)})",
                    value=", ".join(drifted) or "none",
                ),
                CounterData(
                    label=f"reference {ref[0][:10]} … {ref[1][:10]}: "
                    f"{summary.get('reference_rows', 0)} rows; current {summary['date']}: "
                    f"{summary.get('current_rows', 0)} rows",
                    value=f"{days} days vs 1",
                ),
            ],
        ),
        table_data(
            title="Columns, drifted first (the per-column sections below follow this order)",
            column_names=["column", "drifted", "score", "threshold", "method"],
            data=[
                [c, "yes" if columns[c]["drifted"] else "no", columns[c]["score"]]
                + [columns[c]["threshold"], columns[c]["method"]]
                for c in order
            ],
        ),
    ]
    shares = [
        [c, cat, f"{r:.1%}", f"{k:.1%}"]
        for c in drifted
        for cat, (r, k) in (columns[c].get("shares") or {}).items()
    ]
    if shares:
        widgets.append(
            table_data(
                title=f"Category shares of the drifted columns (reference: {days} days, current: "
                "1 day; the distribution plots below show percent, 'abs' switches to counts)",
                column_names=["column", "category", "reference share", "current share"],
                data=shares,
            )
        )
    for i, w in enumerate(widgets):
        w.id = f"{HEADER_ID}{i}"
    return widgets


def _as_percent(widget) -> None:
    """Show a distribution plot's percent traces (Evidently opens on counts; its ``perc``
    button's settings are applied): 14 reference days and 1 current day compare as shares."""
    for tab in widget.tabs:
        _as_percent(tab.widget)
    for child in widget.widgets:
        _as_percent(child)
    params = widget.params if isinstance(widget.params, dict) else {}
    layout = params.get("layout") or {}
    for menu in layout.get("updatemenus") or []:
        buttons = {b.get("label"): b for b in menu.get("buttons", [])}
        if "perc" not in buttons or "abs" not in buttons:
            continue
        visible, axis = buttons["perc"]["args"]
        for trace, shown in zip(params.get("data") or [], visible["visible"], strict=False):
            trace["visible"] = shown
        layout["yaxis"] = {**(layout.get("yaxis") or {}), "title": axis["yaxis"]["title"]}


def finish_report(snapshot, summary: dict[str, Any]):
    """The snapshot as kept: header first (:func:`_header_widgets`), the per-column sections
    drifted first, distributions as percent, tagged ``drift`` + :func:`decision_tag` with
    metadata ``date``, ``reference_window``, ``decision``, timestamp the data day.

    Works on a finished snapshot too (the header is replaced): re-run when the label changes.
    """
    from evidently.core.report import Snapshot

    model = snapshot.to_snapshot_model()
    columns = summary.get("columns") or {}
    fingerprint_column = {
        fp: m.get("config", {}).get("column")
        for fp, m in zip(model.top_level_metrics, snapshot.dict()["metrics"], strict=True)
    }
    rank = {c: i for i, c in enumerate(_ordered_columns(columns))}

    def position(widget) -> int:
        col = fingerprint_column.get((widget.linked_metrics or [None])[0])
        return -1 if col is None else rank.get(col, len(rank))

    body = [w for w in model.widgets if not str(w.id).startswith(HEADER_ID)]
    for w in body:
        _as_percent(w)
    model.widgets = _header_widgets(summary) + sorted(body, key=position)  # stable
    ref = summary.get("reference_window") or []
    decision = str(summary.get("decision") or "")
    model.tags = [TAG, decision_tag(decision)]
    model.metadata = {
        **(model.metadata or {}),
        "date": summary["date"],
        "reference_window": "..".join(r[:10] for r in ref),
        "decision": decision,
    }
    model.timestamp = snapshot_timestamp(dt.date.fromisoformat(summary["date"]))
    return Snapshot.load_model(model)


def report_html(snapshot) -> bytes:
    """The snapshot as a standalone HTML page (UTF-8).

    Evidently writes the report's data (column names, categories, the header) as JSON into a
    ``<script>`` without escaping ``<``: a category ``</script>…`` would end the script and run
    as markup. Every ``<`` of that data is written ``\\u003c`` (the same string to JavaScript).
    """
    html = snapshot.get_html_str(as_iframe=False)
    start = _DATA_BLOCK.search(html)
    if start is not None:  # JSON has no raw newline: the first "\n</script>" closes the data
        end = html.index("\n</script>", start.end())
        html = html[: start.end()] + html[start.end() : end].replace("<", "\\u003c") + html[end:]
    return html.encode("utf-8")


def _workspace(settings: Settings | None):
    """The Evidently workspace and its project :data:`PROJECT` (created with its dashboard)."""
    from evidently.ui.workspace import Workspace

    s = settings or get_settings()
    s.evidently_workspace.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(s.evidently_workspace))
    projects = ws.search_project(PROJECT)
    if projects:
        project = projects[0]
    else:
        project = ws.create_project(PROJECT, description="Flywheel drift reports (one per day)")
        project.save()
    add_panels(project)
    return ws, project


def add_panels(project) -> None:
    """The project's dashboard (tab :data:`DASHBOARD_TAB`): the drifted share and count over
    time, and every column's drift score over time. Added once: panels already there by title
    are left alone."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    def metric(name: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(metric=name, metric_labels=labels, legend=legend, tags=[TAG])

    panels = [
        line_plot_panel(
            title=SHARE_PANEL,
            description="share of the compared columns that drifted, per data day",
            values=[metric("DriftedColumnsCount", "share drifted", value_type="share")],
            size="half",
        ),
        line_plot_panel(
            title="Drifted columns",
            description="how many compared columns drifted, per data day",
            values=[metric("DriftedColumnsCount", "drifted columns", value_type="count")],
            size="half",
        ),
        line_plot_panel(
            title=SCORE_PANEL,
            description="each column's drift score (normed Wasserstein / Jensen-Shannon)",
            values=[metric("ValueDrift", "{{column}}")],
        ),
    ]
    have = {p.title for p in project.dashboard.model().panels}
    for panel in panels:
        if panel.title not in have:
            project.dashboard.add_panel(panel, tab=DASHBOARD_TAB)


def add_to_workspace(snapshot, day: dt.date, settings: Settings | None = None) -> str:
    """Add the snapshot to project ``flywheel``; an earlier run of the same day is replaced.

    ``day`` is the snapshot's day (its name, ``drift D``, is what identifies an earlier run).
    """
    ws, project = _workspace(settings)
    name = snapshot.get_name()
    for run_id in ws.list_runs(project.id):
        old = ws.get_run(project.id, run_id)
        if old is not None and old.name == name:
            ws.delete_run(project.id, run_id)
    ref = ws.add_run(project.id, snapshot, include_data=False)
    return str(ref.id)


def relabel_run(run_id: str, summary: dict[str, Any], settings: Settings | None = None):
    """Re-finish workspace run ``run_id`` for a summary whose decision changed (the trigger was
    emitted, the day was superseded): its header, tags and metadata follow, its id stays.
    Returns the updated snapshot, or None when the run is gone."""
    from evidently.core.report import Snapshot

    ws, project = _workspace(settings)
    model = ws.get_run(project.id, run_id)
    if model is None:
        return None
    snapshot = finish_report(Snapshot.load_model(model), summary)
    ws.state.write_snapshot(project.id, run_id, snapshot.to_snapshot_model())
    return snapshot
