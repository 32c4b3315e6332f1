"""The daily drift check end to end (without Airflow) and the monitor_drift DAG under dag.test.

One small catalog_shift world (shift on day 8) is built once; each test works on its own copy
of the lake, so the reports and trigger state of one test never leak into another.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pandas as pd
import pendulum
import pytest

from core.lake import RAW, Lake, get_lake, partition_prefix
from core.names import CHAMPION, DRIFT_DAG
from monitoring.config import DriftConfig
from monitoring.decision import DriftResult, apply_cooldown, decision_label
from monitoring.frames import slate_rows
from monitoring.monitor import (
    STATE_KEY,
    last_trigger,
    mark_emitted,
    monitor_day,
    read_summary,
    record_trigger,
)
from monitoring.report import PROJECT
from simulation.simulator import simulate
from tests.unit.test_drift_detection import validate_raw

START = dt.date(2026, 1, 1)
DAYS = 10
ONSET = 8
WINDOW = (START, START + dt.timedelta(days=6))


def _day(k: int) -> dt.date:
    return START + dt.timedelta(days=k)


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory):
    from features.compute import compute_features

    root = tmp_path_factory.mktemp("drift-monitor") / "lake"
    lake = Lake.from_uri(root.as_uri())
    simulate(
        lake, days=DAYS, users=400, items=120, scenario="catalog_shift", shift_day=ONSET, seed=3
    )
    for k in range(DAYS):
        validate_raw(lake, _day(k))
    for k in range(DAYS):
        compute_features(lake, _day(k))
    return root


@pytest.fixture
def home_lake(built_lake, fw_home) -> Lake:
    """A fresh FLYWHEEL_HOME whose lake is a copy of the built one."""
    shutil.copytree(built_lake, fw_home / "lake")
    return get_lake()


def test_drift_day_writes_report_summary_and_workspace_run(home_lake, fw_home):
    from evidently.ui.workspace import Workspace

    summary = monitor_day(_day(ONSET), reference_window=WINDOW)
    assert summary["drift_detected"] is True
    assert summary["drift_share"] >= DriftConfig().drift_share
    assert "item_category" in summary["drifted_columns"]
    assert summary["reason"].startswith("drift:")
    assert summary["quality_drop"] is None  # no serving data in this lake
    prefix = partition_prefix("reports", "drift", _day(ONSET))
    assert summary["report_uri"] == home_lake.url(prefix + "report.html")
    html = home_lake.read_text(prefix + "report.html")
    assert "<html" in html.lower() and "item_category" in html
    stored = json.loads(home_lake.read_text(prefix + "summary.json"))
    for key in ("drift_detected", "drift_share", "drifted_columns", "quality_drop", "reason"):
        assert stored[key] == summary[key]
    # decided, not yet emitted: the label says so, and no trigger is logged until it goes out
    assert summary["decision"] == "drift, trigger pending" and summary["trigger"] is None
    assert not home_lake.exists(STATE_KEY)
    entry = mark_emitted(home_lake, _day(ONSET).isoformat(), "run-a")
    assert json.loads(home_lake.read_text(STATE_KEY))["last_trigger"] == _day(ONSET).isoformat()
    stored = read_summary(home_lake, _day(ONSET))
    assert (
        stored["trigger"] == entry and stored["decision"] == "drift, retrain triggered (run run-a)"
    )

    ws = Workspace(str(fw_home / "evidently"))
    (project,) = ws.search_project(PROJECT)
    assert len(ws.list_runs(project.id)) == 1
    # the workspace run: the data day as its time, tagged with the decision, which followed the
    # emission (checked: pending; emitted: triggered), and so did the report's header
    run = ws.get_run(project.id, summary["snapshot_id"])
    assert run.timestamp == dt.datetime.combine(_day(ONSET), dt.time())
    assert run.tags == ["drift", "decision:drift-triggered"]
    assert run.metadata["decision"] == stored["decision"]
    assert run.metadata["reference_window"] == f"{WINDOW[0]}..{WINDOW[1]}"
    html = home_lake.read_text(prefix + "report.html")
    assert "retrain triggered (run run-a)" in html and "trigger pending" not in html
    # re-running the day replaces its report and its workspace run, never duplicates them
    again = monitor_day(_day(ONSET), reference_window=WINDOW)
    assert again["drifted_columns"] == summary["drifted_columns"]
    # ... and never makes the day trigger a second time; its label still says what went out
    assert again["drift_detected"] is False and "already triggered" in again["suppressed_by"]
    assert again["trigger"] == entry and again["decision"].startswith("drift, retrain triggered")
    assert len(ws.list_runs(project.id)) == 1
    assert home_lake.list(prefix) == [prefix + "report.html", prefix + "summary.json"]


def test_stable_day_is_no_drift_and_says_why(home_lake):
    summary = monitor_day(_day(7), reference_window=WINDOW)
    assert summary["drift_detected"] is False
    assert summary["reason"].startswith("no drift: share")
    assert not home_lake.exists(STATE_KEY)


def test_no_champion_means_no_decision(home_lake):
    summary = monitor_day(_day(ONSET))  # reference from MLflow: nothing registered yet
    assert summary["drift_detected"] is False and summary["drift_share"] is None
    assert "no champion" in summary["reason"]
    assert summary["decision"] == f"nothing compared: {summary['reason']}"
    assert read_summary(home_lake, _day(ONSET))["reason"] == summary["reason"]


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"config": DriftConfig(min_rows=10**9)}, "too little traffic on 2026-01-08"),
        (
            {"config": DriftConfig(numeric=("no_such_column",), categorical=())},
            "no column to compare",
        ),
        (
            {"reference_window": (dt.date(2025, 11, 1), dt.date(2025, 11, 14))},
            "no reference: drift check needs features for 2025-11-01",
        ),
    ],
)
def test_days_with_nothing_compared_say_so(home_lake, kwargs, why):
    """A day without a comparison is stored with its reason, never as a green "no drift"."""
    kwargs = {"reference_window": WINDOW, **kwargs}
    summary = monitor_day(_day(7), **kwargs)
    assert summary["decision"].startswith(f"nothing compared: {why}"), summary["decision"]
    assert summary["drift_share"] is None and summary["drift_detected"] is False
    assert summary["reason"].startswith(why)
    prefix = partition_prefix("reports", "drift", _day(7))
    assert home_lake.list(prefix) == [prefix + "summary.json"]  # no report of nothing
    assert read_summary(home_lake, _day(7))["decision"] == summary["decision"]


def _candidate(day: dt.date) -> DriftResult:
    return DriftResult(
        date=day.isoformat(),
        drift_detected=True,
        candidate=True,
        drift_share=0.5,
        drifted_columns=["item_category"],
        quality_drop=None,
        reason="drift: test",
    )


def test_cooldown_after_trigger_and_while_training(lake):
    config = DriftConfig(cooldown_days=3)
    d0 = dt.date(2026, 1, 10)
    first = apply_cooldown(_candidate(d0), config, last_trigger(lake))
    assert first.drift_detected and first.suppressed_by is None
    record_trigger(lake, first)
    for k, expected in ((1, False), (2, False), (3, True)):
        r = apply_cooldown(_candidate(d0 + dt.timedelta(days=k)), config, last_trigger(lake))
        assert r.drift_detected is expected, (k, r.reason)
        if not expected:
            assert "cooldown" in r.reason and r.candidate
    busy = apply_cooldown(
        _candidate(d0 + dt.timedelta(days=5)), config, last_trigger(lake), trainings_in_flight=1
    )
    assert not busy.drift_detected and "queued" in busy.suppressed_by
    # re-running the trigger day never triggers it again (one event per day) ...
    again = apply_cooldown(_candidate(d0), config, last_trigger(lake))
    assert not again.drift_detected and "already triggered" in again.suppressed_by
    # ... nor does a day older than one that triggered
    older = apply_cooldown(_candidate(d0 - dt.timedelta(days=5)), config, last_trigger(lake))
    assert not older.drift_detected and "later day (2026-01-10)" in older.suppressed_by
    # a trigger pending earlier in the same run counts like an emitted one
    pending = apply_cooldown(
        _candidate(d0 + dt.timedelta(days=4)), config, ["2026-01-10", "2026-01-13"]
    )
    assert not pending.drift_detected and "last trigger on 2026-01-13" in pending.suppressed_by
    labels = {
        "trigger": decision_label({**first.summary(), "trigger": {"run_id": "r1"}}),
        "suppressed": decision_label(pending.summary()),
    }
    assert labels == {
        "trigger": "drift, retrain triggered (run r1)",
        "suppressed": "drift, suppressed: cooldown: last trigger on 2026-01-13, 3 days must pass",
    }


def _impressions(lake: Lake, day: dt.date, users, items, clicked_share: float) -> None:
    import pyarrow as pa

    rows, events = [], []
    for n, user in enumerate(users):
        rid = f"r{day:%m%d}{n:04d}"
        shown = items[n % 5 : n % 5 + 5]
        rows.append(
            {
                "request_id": rid,
                "user_id": user,
                "item_ids": json.dumps(shown),
                "scores": json.dumps([1.0] * len(shown)),
                "model_version": "1",
                "variant": CHAMPION,
                "served_ts": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12),
            }
        )
        if n < clicked_share * len(users):
            events.append(
                {
                    "event_id": f"fb:{rid}:0",
                    "user_id": user,
                    "item_id": shown[1],
                    "event_type": "click",
                    "value": 1.0,
                    "event_ts": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=13),
                }
            )
    lake.write_parquet(
        partition_prefix(RAW, "impressions", day) + "serving-0.parquet",
        pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False),
    )
    lake.write_parquet(
        partition_prefix(RAW, "events", day) + "feedback-0.parquet",
        pa.Table.from_pandas(pd.DataFrame(events), preserve_index=False),
    )


def test_quality_and_prediction_drift_from_served_slates(home_lake):
    items = sorted(pd.read_parquet(home_lake.path("features/item_stats/dt=2026-01-07"))["item_id"])[
        :10
    ]
    users = [f"served-{n}" for n in range(60)]  # not simulator users: only feedback clicks
    _impressions(home_lake, _day(6), users, items, clicked_share=0.5)
    _impressions(home_lake, _day(7), users, items, clicked_share=0.2)
    slates = slate_rows(home_lake, [_day(7)])
    assert len(slates) == 60 * 5 and slates["clicked"].sum() == 12
    assert slates.loc[slates["clicked"], "rank"].eq(2).all()

    summary = monitor_day(_day(7), reference_window=WINDOW)
    assert summary["quality"]["reference_slate_ctr"] == pytest.approx(0.5)
    assert summary["quality"]["current_slate_ctr"] == pytest.approx(0.2)
    assert summary["quality_drop"] == pytest.approx(0.6)
    assert summary["drift_detected"] is True and "slate CTR dropped 60%" in summary["reason"]
    assert set(summary["prediction_drift"]) == {"rec_category", "rec_popularity"}


def _register_champion(window: tuple[dt.date, dt.date]) -> str:
    from training.registry import configure_mlflow, experiment_id, model_name

    client = configure_mlflow()
    run = client.create_run(
        experiment_id(client),
        tags={
            "data_window_start": window[0].isoformat(),
            "data_window_end": window[1].isoformat(),
        },
    )
    client.log_metric(run.info.run_id, "holdout_ndcg_at_10", 0.3)
    client.set_terminated(run.info.run_id)
    name = model_name()
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION, mv.version)
    return str(mv.version)


def test_dag_emits_drift_asset_with_summary(airflow_db, home_lake):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from core.assets import DRIFT

    version = _register_champion(WINDOW)
    dag = DagBag().get_dag(DRIFT_DAG)

    def drift_events(session):
        return session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == DRIFT.name)  # its URI is stored normalised (trailing /)
        ).all()

    with create_session() as session:
        before = max((e.id for e in drift_events(session)), default=0)
    run = dag.test(
        logical_date=pendulum.datetime(2026, 1, 9, tz="UTC"),
        run_conf={"day": _day(ONSET).isoformat()},
    )
    assert run.state == "success"
    with create_session() as session:
        extras = [dict(e.extra) for e in drift_events(session) if e.id > before]
    assert len(extras) == 1
    assert extras[0]["date"] == _day(ONSET).isoformat() and extras[0]["drift_detected"] is True
    assert extras[0]["champion_version"] == version
    assert "item_category" in extras[0]["drifted_columns"]
    assert read_summary(home_lake, _day(ONSET))["report_uri"] == extras[0]["report_uri"]
