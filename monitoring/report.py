"""The Evidently report of a drift check and the Evidently workspace it is kept in.

Everything is computed with Evidently 0.7's ``Report`` (``ValueDrift`` per column,
``DriftedColumnsCount`` for the share), with the method and threshold of each column from
:class:`monitoring.config.DriftConfig`. The snapshot goes to the Evidently workspace (project
:data:`PROJECT`, one run per day) and its HTML to the lake (see :mod:`monitoring.monitor`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from core.settings import Settings, get_settings
from monitoring import DriftError
from monitoring.config import DriftConfig

if TYPE_CHECKING:
    import pandas as pd

#: The Evidently workspace project that holds one drift run per day.
PROJECT = "flywheel"


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


def _datasets(
    reference: pd.DataFrame, current: pd.DataFrame, cols: list[str], config: DriftConfig
) -> tuple[Any, Any]:
    """Evidently datasets ``(current, reference)`` of ``cols``, typed by the config, sampled."""
    from evidently import DataDefinition, Dataset

    cat = [c for c in cols if config.is_categorical(c)]
    num = [c for c in cols if c not in cat]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    ref = _sample(reference[cols], config.max_rows)
    cur = _sample(current[cols], config.max_rows)
    for c in cat:  # one dtype per side, missing stays missing
        ref[c] = ref[c].astype("object")
        cur[c] = cur[c].astype("object")
    return (
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )


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
    ``DriftedColumnsCount`` over the compared columns.
    """
    from evidently import Report

    cols = compared_columns(reference, current, config)
    cur, ref = _datasets(reference, current, cols, config)
    report = Report(_metrics(cols, config), metadata=metadata or {}, tags=["drift"])
    snapshot = report.run(cur, ref, timestamp=timestamp, name=name)
    per_column, share = _read_snapshot(snapshot)
    return snapshot, per_column, share


def report_html(snapshot) -> bytes:
    """The snapshot as a standalone HTML page (UTF-8)."""
    return snapshot.get_html_str(as_iframe=False).encode("utf-8")


def add_to_workspace(snapshot, day: dt.date, settings: Settings | None = None) -> str:
    """Add the snapshot to project ``flywheel``; an earlier run of the same day is replaced.

    ``day`` is the snapshot's day (its name, ``drift D``, is what identifies an earlier run).
    """
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
    name = snapshot.get_name()
    for run_id in ws.list_runs(project.id):
        old = ws.get_run(project.id, run_id)
        if old is not None and old.name == name:
            ws.delete_run(project.id, run_id)
    ref = ws.add_run(project.id, snapshot, include_data=False)
    return str(ref.id)
