"""The ``train_recommender`` DAG: its shape, Params, trigger handling and one full ``dag.test`` run."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from tests.conftest import load_dag
from tests.dags.test_ingest_dag import _note


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("train_recommender")


def test_shape_schedule_queue_pool_and_params(dag):
    from training.config import PARAM_KEYS, TrainingConfig, config_from_params

    assert [t.task_id for t in dag.topological_sort()] == [
        "build_training_set",
        "train",
        "evaluate",
        "register",
        "promote",
    ]
    assert {a.uri.rstrip("/") for a in dag.timetable.asset_condition.objects} == {
        "flywheel://features",
        "flywheel://drift",
    }
    assert type(dag.timetable.asset_condition).__name__ == "AssetAny"
    assert dag.max_active_runs == 1 and dag.catchup is False
    train = dag.get_task("train")
    assert (train.queue, train.pool) == ("gpu", "training")
    assert all(
        t.retries >= 1 and t.retry_exponential_backoff and t.owner == "flywheel" for t in dag.tasks
    )
    assert {"evaluate", "build_training_set"} <= {
        t.task_id for t in dag.get_task("register").upstream_list
    }
    # every training Param defaults to "use the config" and names the config's value
    defaults = TrainingConfig()
    for name, key in PARAM_KEYS.items():
        param = dag.params.get_param(name)
        assert param.value is None, name
        assert f"{key} ({defaults.value(key)})" in param.description, param.description
    assert (
        defaults.train.epochs,
        defaults.train.lr,
        defaults.model.embedding_dim,
        defaults.data.window_days,
        defaults.promotion.margin,
        defaults.data.feature_source,
    ) == tuple(defaults.value(k) for k in PARAM_KEYS.values())
    # an Airflow run with the default Params trains with TrainingConfig's defaults
    params = {k: dag.params[k] for k in dag.params}
    assert config_from_params(params) == defaults


def test_trigger_summary_and_end_day():
    from training.config import config_from_params
    from training.pipeline import resolve_end_day, summarise_events

    events = {
        "flywheel://features": [
            {"extra": {"date": "2026-01-09"}, "timestamp": "2026-01-10T00:05:00+00:00"}
        ],
        "flywheel://drift": [
            {
                "extra": {"date": "2026-01-10", "drift_share": 0.6},
                "timestamp": "2026-01-11T00:10:00+00:00",
            }
        ],
    }
    trigger, flat = summarise_events(events)
    assert trigger.startswith("asset: flywheel://drift {") and '"drift_share": 0.6' in trigger
    assert resolve_end_day(None, flat, None) == dt.date(2026, 1, 10)
    # a newer featurised day than the events (events folded into a pending trigger): train on it
    assert resolve_end_day(None, flat, dt.date(2026, 1, 12)) == dt.date(2026, 1, 12)
    assert resolve_end_day(None, flat, dt.date(2026, 1, 8)) == dt.date(2026, 1, 10)
    assert resolve_end_day("2026-01-05", flat, None) == dt.date(2026, 1, 5)
    assert summarise_events({}) == ("manual", [])
    assert resolve_end_day(None, [], dt.date(2026, 1, 3)) == dt.date(2026, 1, 3)
    cfg = config_from_params(
        {
            "epochs": 3,
            "learning_rate": 0.01,
            "embedding_dim": 8,
            "window_days": 5,
            "promotion_margin": 0.02,
            "end_day": None,
        }
    )
    assert (
        cfg.train.epochs,
        cfg.train.lr,
        cfg.model.embedding_dim,
        cfg.data.window_days,
        cfg.promotion.margin,
    ) == (3, 0.01, 8, 5, 0.02)


def test_manual_run_trains_registers_and_promotes(dag, fw_home, lake, caplog):
    from airflow.models.pool import Pool

    from tests.fixtures.lake import write_simulated
    from tests.fixtures.models import seed_tracking_db
    from training.config import TrainingConfig
    from training.registry import configure_mlflow

    # the DAG's train task runs in pool "training": the demo setup creates it the same way
    Pool.create_or_update_pool(
        "training", slots=1, description="one training at a time", include_deferred=False
    )
    seed_tracking_db(fw_home)
    end = write_simulated(lake, days=8, users=300, items=120, seed=3)
    # the DAG's mechanics on a 300-user toy set: judged against the popularity baselines only
    # (the gate against implicit's models is tested in tests/model/test_training_registry.py)
    overrides = ["eval.baselines=popularity,recent_popularity"]
    conf = {
        "end_day": end.isoformat(),
        "epochs": 5,
        "window_days": 8,
        "feature_source": "contract",
        "overrides": overrides,
    }
    run = dag.test(logical_date=pendulum.datetime(2026, 1, 9, tz="UTC"), run_conf=conf)
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]

    client = configure_mlflow()
    mv = client.get_model_version_by_alias("flywheel-recommender", "champion")
    assert str(mv.version) == "1"
    tags = client.get_run(mv.run_id).data.tags
    assert tags["promotion_decision"] == "promoted" and tags["promotion_reason"].startswith(
        "no champion yet"
    )
    assert tags["trigger"] == "manual" and tags["triggering_asset_events"] == "[]"
    assert tags["data_window_end"] == end.isoformat() and tags["run_key"].startswith(
        "train_recommender/"
    )
    from training.data import train_shards

    prefix = f"training_sets/dt={end.isoformat()}/"
    shards = train_shards(prefix, lake)  # the train split, one Parquet shard per day
    assert lake.exists(prefix + "meta.json") and shards
    assert all(lake.exists(k) for k in shards)
    # the Params left empty (learning_rate, embedding_dim, promotion_margin) kept the config's
    # values: the run trained with TrainingConfig's defaults plus the conf
    expected = (
        TrainingConfig()
        .merged({"train": {"epochs": 5}, "data": {"window_days": 8, "feature_source": "contract"}})
        .with_overrides(overrides)
    )
    logged = client.get_run(mv.run_id).data.params
    assert {k: logged[k] for k in expected.flat()} == {
        k: str(v) for k, v in expected.flat().items()
    }
    assert "PROMOTED to champion" in caplog.text or "promoted" in caplog.text
    # the run's note in the Airflow UI says what happened
    note = _note(run)
    assert note.startswith(f"v1 (2026-01-01..{end.isoformat()}): promoted to champion — "), note


def test_manual_run_without_data_fails_with_the_reason(dag, fw_home, lake):
    from tests.fixtures.models import seed_tracking_db

    seed_tracking_db(fw_home)
    conf = {"end_day": "2026-03-01", "feature_source": "contract"}
    run = dag.test(logical_date=pendulum.datetime(2026, 3, 2, tz="UTC"), run_conf=conf)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["build_training_set"] == "failed", states
    ti = next(t for t in run.get_task_instances() if t.task_id == "build_training_set")
    assert ti.try_number == 1  # no retry: more tries cannot add data
    assert all(states[t] in ("upstream_failed", None) for t in states if t != "build_training_set")
    assert _note(run).startswith("window ending 2026-03-01 cannot train: ")
