"""Real data end to end: a month of MovieLens through ``flywheel import`` → ``flywheel backfill``
(Airflow, range runs) → ``build_features`` (one pass over the range) → ``train_recommender``.

The month is May 2007 of ``ml-latest-small`` (read from ``shared/``, never copied into the
repository): 1,349 ratings by 15 users on 1,007 films over 30 of its 31 days (none on the 9th),
its busiest day 878 ratings, most days a handful -- real traffic, not the simulator's. Every
day must pass the gate; the holdout is the 30th (two users), validation the 29th.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pendulum
import pytest
from typer.testing import CliRunner

from tests.conftest import load_dag

ML = Path(os.environ.get("FLYWHEEL_ML_SMALL", "/work/shared/data/ml-latest-small"))
START, END = dt.date(2007, 5, 1), dt.date(2007, 5, 31)
HOLDOUT = dt.date(2007, 5, 30)  # 36 positive ratings by 2 users; the 31st has 2 by one user
# manual runs today, about data of 2007 (a logical date before the DAGs' start_date runs nothing)
RUN_DATE = pendulum.datetime(2026, 6, 1, tz="UTC")


def _month(tmp_path: Path) -> Path:
    """The month's rows of ``ratings.csv`` as a file of the same format."""
    lo = int(dt.datetime.combine(START, dt.time(), dt.UTC).timestamp())
    hi = int(dt.datetime.combine(END + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
    lines = (ML / "ratings.csv").read_text().splitlines()
    keep = [lines[0]] + [r for r in lines[1:] if lo <= int(r.rsplit(",", 1)[1]) < hi]
    path = tmp_path / "ratings-2007-05.csv"
    path.write_text("\n".join(keep) + "\n")
    return path


@pytest.mark.slow
def test_movielens_month_import_backfill_features_train(
    airflow_db, fw_home, lake, tmp_path, monkeypatch
):
    from airflow.models.pool import Pool

    from flywheel.cli import app
    from flywheel.processes import free_port
    from tests.fixtures.models import seed_tracking_db
    from training.registry import configure_mlflow, model_name

    if not (ML / "ratings.csv").exists():
        pytest.fail(f"MovieLens latest-small not found under {ML} (set FLYWHEEL_ML_SMALL)")
    monkeypatch.setenv("FLYWHEEL_AIRFLOW_PORT", str(free_port()))
    runner = CliRunner()
    began = time.monotonic()

    def lap(step: str) -> None:  # shown with -s, and with a failure
        print(f"{step}: {time.monotonic() - began:.0f} s")

    # 1. import, as a user would: every genre, a suggested window
    res = runner.invoke(app, ["import", str(_month(tmp_path)), "--movies", str(ML / "movies.csv")])
    assert res.exit_code == 0, res.output
    assert "imported 1349 events, 1007 items (1007 with genres), 15 users" in res.output
    assert "30 days (2007-05-01 .. 2007-05-31)" in res.output
    assert "flywheel train --set data.window_days=all" in res.output
    items = lake.read_parquet("raw/items/").column("category").to_pylist()
    assert any("|" in c for c in items)  # several genres kept, not the first
    lap("import")

    # 2. backfill through Airflow (range runs): every day passes the gate
    res = runner.invoke(
        app, ["backfill", "ingest_events", "--start", f"{START}", "--end", f"{END}"]
    )
    assert res.exit_code == 0, res.output
    assert "30 of 30 days validated" in res.output, res.output
    assert len(lake.partitions("validated", "events")) == 30
    lap("backfill")

    # 3. features for the range in one build_features run (manual: day .. end)
    monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", "flywheel_realdata")
    features = load_dag("build_features")
    run = features.test(
        logical_date=RUN_DATE,
        run_conf={"day": START.isoformat(), "end": END.isoformat()},
    )
    assert run.state == "success", [(t.task_id, t.state) for t in run.get_task_instances()]
    assert len(lake.partitions("features", "item_stats")) == 30
    published = run.get_task_instance("publish").xcom_pull(task_ids="publish")
    assert published["date"] == END.isoformat()
    assert published["range"] == {"first": START.isoformat(), "last": END.isoformat(), "days": 30}
    lap("build_features")

    # 4. train_recommender on the month: a registered version with metrics and an alias
    Pool.create_or_update_pool(
        "training", slots=1, description="one training at a time", include_deferred=False
    )
    seed_tracking_db(fw_home)
    train = load_dag("train_recommender")
    conf = {"end_day": HOLDOUT.isoformat(), "window_days": 30, "epochs": 3}
    run = train.test(logical_date=RUN_DATE.add(hours=1), run_conf=conf)
    assert run.state == "success", [(t.task_id, t.state) for t in run.get_task_instances()]
    client = configure_mlflow()
    (found,) = client.search_model_versions(f"name='{model_name()}'")
    mv = client.get_model_version(model_name(), found.version)
    # the first version is promoted unless it loses to popularity; training never sets challenger
    assert "challenger" not in mv.aliases
    assert ("champion" in mv.aliases) == (mv.tags.get("promotion_decision") == "promoted"), mv
    metrics = client.get_run(mv.run_id).data.metrics
    assert metrics["holdout_users"] >= 1 and "holdout_ndcg_at_10" in metrics
    assert "popularity_ndcg_at_10" in metrics
    tags = client.get_run(mv.run_id).data.tags
    assert tags["data_window_end"] == HOLDOUT.isoformat()
    assert tags["promotion_decision"] in {"promoted", "rejected"}
    lap("train_recommender")
