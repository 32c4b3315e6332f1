"""The loop under a real scheduler: features → drift → Asset → retraining, no dag.test.

``airflow scheduler``, ``dag-processor`` and ``api-server`` run as processes (SQLite,
LocalExecutor) on free ports in a fresh FLYWHEEL_HOME. A tiny catalog_shift world: days 0–7
are the history (validated and featurised with the library, to keep the test short), the first
champion is trained by a ``train_recommender`` run triggered over the REST API; then the shift
day's features are built by a ``build_features`` run, whose ``flywheel://features`` event starts
``monitor_drift`` (and a routine training); ``monitor_drift`` must decide drift and emit
``flywheel://drift``, which must start an asset-triggered ``train_recommender`` run whose MLflow
run records the drift event as its trigger and carries a promotion decision.
"""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest

from core.names import CHAMPION, DRIFT_DAG, DRIFT_URI, FEATURES_DAG, POOLS, TRAIN_DAG
from tests.integration.airflow_api import read_asset_events
from tests.integration.test_plugin_http import AirflowProcesses
from tests.unit.test_drift_detection import validate_raw

pytestmark = pytest.mark.slow

START = dt.date(2026, 1, 1)
SHIFT = 8


def _day(k: int) -> dt.date:
    return START + dt.timedelta(days=k)


class Api:
    def __init__(self, af: AirflowProcesses):
        self.af = af
        self.client = httpx.Client(base_url=f"{af.url}/api/v2", timeout=60)
        self.client.headers["Authorization"] = f"Bearer {af.token()}"

    def get(self, path: str, **params):
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        self.client.patch(f"/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict) -> str:
        r = self.client.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        r.raise_for_status()
        return r.json()["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", order_by="run_after")["dag_runs"]

    def wait(self, what: str, predicate, timeout: float, poll: float = 3.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.af.procs.items():
                assert proc.poll() is None, f"{name} exited: {self.af.tail(name)}"
            value = predicate()
            if value:
                return value
            time.sleep(poll)
        raise AssertionError(
            f"timed out waiting for {what}; scheduler log: {self.af.tail('scheduler')}"
        )

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: t["state"] for t in tis}


def _finished(api: Api, dag_id: str, run_id: str):
    state = api.run_state(dag_id, run_id)
    if state == "failed":
        raise AssertionError(f"{dag_id} {run_id} failed: {api.task_states(dag_id, run_id)}")
    return state == "success"


def test_drift_triggers_retraining_under_the_scheduler(tmp_path, monkeypatch):
    from core.lake import get_lake
    from features.compute import compute_features
    from features.store import apply_if_changed
    from simulation.simulator import simulate

    home = tmp_path / "fw"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    lake = get_lake()
    simulate(lake, days=SHIFT + 1, users=300, items=100, scenario="catalog_shift", shift_day=SHIFT)
    for k in range(SHIFT + 1):
        validate_raw(lake, _day(k))  # the ingest gate's output (the gate has its own tests)
    for k in range(SHIFT):
        compute_features(lake, _day(k))
    apply_if_changed()

    af = AirflowProcesses(home, {"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"})
    af.prepare()
    for pool, (slots, description) in POOLS.items():
        af.airflow("pools", "set", pool, str(slots), description)
    try:
        af.start_api()
        af.start("dag-processor")
        af.start("scheduler")
        api = Api(af)
        loop = (FEATURES_DAG, DRIFT_DAG, TRAIN_DAG)
        api.wait(
            "the DAGs to be parsed",
            lambda: all(api.client.get(f"/dags/{d}").status_code == 200 for d in loop),
            timeout=180,
        )
        for dag_id in loop:
            api.unpause(dag_id)

        # the first champion, trained on the history (small and quick)
        small = {"epochs": 1, "embedding_dim": 8, "window_days": 6}
        first = api.trigger(TRAIN_DAG, {"end_day": _day(SHIFT - 1).isoformat(), **small})
        api.wait("the first training", lambda: _finished(api, TRAIN_DAG, first), 900)
        _ensure_champion(home)

        # the shift day's features → monitor_drift → drift → retraining. train_recommender is
        # paused while the features land, so the routine features-triggered training does not
        # run first (it would double the test's time); unpaused before the drift is decided.
        api.unpause(TRAIN_DAG, paused=True)
        feats = api.trigger(FEATURES_DAG, {"day": _day(SHIFT).isoformat()})
        api.wait(FEATURES_DAG, lambda: _finished(api, FEATURES_DAG, feats), 600)
        api.unpause(TRAIN_DAG)

        def monitor_done():
            runs = [r for r in api.runs(DRIFT_DAG) if r["run_type"] == "asset_triggered"]
            return runs and _finished(api, DRIFT_DAG, runs[-1]["dag_run_id"]) and runs[-1]

        monitor = api.wait(DRIFT_DAG, monitor_done, 600)
        states = api.task_states(DRIFT_DAG, monitor["dag_run_id"])
        assert states["emit_drift"] == "success", states

        drift_asset = _asset_id(api, DRIFT_URI)
        events = read_asset_events(lambda: api.get("/assets/events", asset_id=drift_asset))
        (drift,) = events["asset_events"]
        assert drift["extra"]["drift_detected"] is True
        assert drift["extra"]["date"] == _day(SHIFT).isoformat()
        assert "item_category" in drift["extra"]["drifted_columns"]

        def drift_training():
            for r in api.runs(TRAIN_DAG):
                if r["run_type"] != "asset_triggered":
                    continue
                path = f"/dags/{TRAIN_DAG}/dagRuns/{r['dag_run_id']}/upstreamAssetEvents"
                evs = read_asset_events(lambda path=path: api.get(path))["asset_events"]
                if any(e.get("id") == drift["id"] for e in evs):
                    return r
            return None

        retrain = api.wait("a drift-triggered train_recommender run", drift_training, 900)
        api.wait(
            "the retraining",
            lambda: _finished(api, TRAIN_DAG, retrain["dag_run_id"]),
            1200,
        )
        decision = _mlflow_decision(home, retrain["dag_run_id"])
        assert DRIFT_URI in decision["trigger"]
        assert decision["promotion_decision"]
        _review_in_the_browser(af, tmp_path)
    finally:
        af.stop()


def _review_in_the_browser(af: AirflowProcesses, tmp_path) -> None:
    """The Flywheel pages after this loop, as a person opens them in Chromium: the shift day's
    drift that retrained, and the drift-triggered version on the leaderboard beside the first."""
    from tests.integration.test_plugin_http import PROBES, chromium_page

    _, seen = chromium_page(
        f"{af.url}/flywheel/",
        {"_token": af.token()},
        tmp_path / "loop.png",
        probes={k: PROBES[k] for k in ("drift", "models")},
    )
    shift = _day(SHIFT).isoformat()
    drift = {row.split("\t")[0]: row for row in seen["drift"]}
    assert drift[shift].startswith(f"{shift}\tDrift, retrain triggered"), drift
    assert "Evidently report" in drift[shift]
    models = seen["models"]
    assert any(f"drift on {shift[5:]}" in row for row in models), models
    assert models[-1].startswith("v1") and "\tmanual\t" in models[-1], models


def _asset_id(api: Api, uri: str) -> int:
    assets = api.get("/assets", uri_pattern=uri)["assets"]
    return next(a["id"] for a in assets if a["uri"].rstrip("/") == uri)


def _ensure_champion(home) -> None:
    """A one-epoch model may not beat popularity: then a person promotes it (as in the demo)."""
    from core.settings import Settings
    from training.registry import configure_mlflow, current_champion, model_name

    s = Settings(home=home)
    client = configure_mlflow(s)
    if current_champion(client, model_name(s)) is None:
        (mv,) = client.search_model_versions(f"name='{model_name(s)}'")
        client.set_registered_model_alias(model_name(s), CHAMPION, mv.version)


def _mlflow_decision(home, dag_run_id: str) -> dict:
    """Tags of the MLflow run that this Airflow run trained (trigger, promotion decision)."""
    from core.settings import Settings
    from training.registry import configure_mlflow, experiment_id

    s = Settings(home=home)
    client = configure_mlflow(s)
    runs = client.search_runs(
        [experiment_id(client, s)], filter_string=f"tags.airflow_dag_run = '{dag_run_id}'"
    )
    if not runs:
        raise LookupError(dag_run_id)
    tags = runs[0].data.tags
    return {
        "trigger": tags.get("trigger", ""),
        "promotion_decision": tags.get("promotion_decision"),
    }
