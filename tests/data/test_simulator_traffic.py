"""Simulated users against a serving API: a tiny stand-in app (in-process and over real HTTP on
loopback) and the real Flywheel service, whose feedback lands back in the lake."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from core.lake import RAW, Lake
from core.names import ALIASES
from simulation.config import SIM
from simulation.simulator import SimulatorError, load_truth, simulate
from simulation.traffic import check_loopback, play
from tests.fixtures.lake import publish_raw

D0 = dt.date(2026, 1, 1)
DAYS = 4


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    lake = Lake.from_uri(str(tmp_path_factory.mktemp("sim-traffic") / "lake"))
    simulate(lake, days=DAYS, users=300, items=120, seed=2, start=D0, scenario="taste_shift")
    return lake


def stand_in(lake: Lake, policy: str) -> tuple[FastAPI, list[dict]]:
    """A tiny service with the real API's shape: ``oracle`` serves true tastes, ``worst`` the opposite."""
    truth = load_truth(lake)
    items = truth.items.column("item_id").to_pylist()
    app, feedback, served = FastAPI(), [], {}

    @app.get("/recommendations/{user_id}")
    def recommend(user_id: str, k: int = 10):
        if user_id not in truth.user_pos:
            raise HTTPException(404, "unknown user")
        rel = truth.click_probability([user_id], items)[0]
        order = np.argsort(-rel if policy == "oracle" else rel)[:k]
        rid = f"r{len(served)}"
        served[rid] = [items[i] for i in order]
        slate = [{"item_id": items[i], "score": float(rel[i])} for i in order]
        return {"request_id": rid, "user_id": user_id, "items": slate, "model_version": "1",
                "variant": policy, "fallback": None}  # fmt: skip

    @app.post("/feedback", status_code=202)
    def post_feedback(body: dict):
        assert body["item_id"] in served[body["request_id"]]
        feedback.append(body)
        return {"status": "accepted"}

    return app, feedback


def test_users_answer_by_their_true_tastes(lake):
    runs = {}
    for policy in ("oracle", "worst"):
        app, feedback = stand_in(lake, policy)
        with TestClient(app) as client:
            runs[policy] = (
                play("http://sim", 2, lake=lake, seed=1, client=client, max_requests=50),
                feedback,
            )
    good, feedback = runs["oracle"]
    bad, _ = runs["worst"]
    assert good.requests == 50 and good.errors == 0 and good.variants == {"oracle": 50}
    assert good.days == ["2026-01-05", "2026-01-06"]  # the days after the offline simulation
    assert (
        good.clicks_per_slate > 3 * bad.clicks_per_slate
        and good.feedback["purchase"] > bad.feedback["purchase"]
    )
    assert good.served_relevance == pytest.approx(good.oracle_relevance, rel=1e-6)
    # each figure is read against the model that answered (here every slate is version 1)
    assert good.model_versions == {"1": 50}
    assert good.relevance_by_version["1"] == pytest.approx(good.served_relevance)
    assert bad.served_relevance < 0.3 * bad.oracle_relevance
    kinds = {f["event_type"] for f in feedback}
    assert kinds == {"click", "add_to_cart", "purchase", "rating"}
    assert sum(good.feedback.values()) == len(feedback)
    ratings = [f["value"] for f in feedback if f["event_type"] == "rating"]
    assert all(r in (1.0, 2.0, 3.0, 4.0, 5.0) for r in ratings)
    assert all(f["value"] == 1.0 for f in feedback if f["event_type"] != "rating")


def test_traffic_is_bounded_and_loopback_only(lake):
    app, _ = stand_in(lake, "oracle")
    with TestClient(app) as client:
        t = play("http://sim", 1, lake=lake, client=client, time_limit_s=0.0)
    assert t.requests == 0 and "time limit" in t.stopped
    assert check_loopback("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert check_loopback("http://localhost:1") == "http://localhost:1"
    for url in ("http://10.0.0.5:8000", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:8000"):
        with pytest.raises(SimulatorError, match="--serve-url"):
            play(url, 1, lake=lake)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_plays_users_over_real_http(lake):
    import uvicorn

    app, feedback = stand_in(lake, "oracle")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        env = os.environ | {"FLYWHEEL_LAKE_URI": lake.uri}
        cmd = [sys.executable, "-m", "flywheel.cli", "simulate", "--serve-url", f"http://127.0.0.1:{port}",
               "--days", "1", "--max-requests", "20"]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert r.returncode == 0, r.stderr
    assert (
        r.stdout.startswith(f"20 requests over 1 day(s) to http://127.0.0.1:{port}: ")
        and " clicks per slate, " in r.stdout
    )
    assert len(feedback) > 0


def test_real_service_records_the_simulated_feedback(lake, tmp_path, monkeypatch):
    """The real serving app (popularity fallback, no model yet): feedback lands as raw events."""
    from core.settings import get_settings
    from serving.app import Service, create_app
    from serving.model import ModelFollower

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    served = Lake.from_uri(str(tmp_path / "served"))
    for key in lake.list(SIM):
        served.write_bytes(key, lake.read_bytes(key))
    # validated = the raw days, user ids pseudonymised (as ingestion does)
    publish_raw(lake, [D0 + dt.timedelta(days=k) for k in range(DAYS)], into=served)

    class NoModelYet(ModelFollower):  # a registry without a champion, without starting MLflow
        def check(self) -> bool:
            return False

    followers = {a: NoModelYet("flywheel-recommender", a, "unused") for a in ALIASES}
    svc = Service(get_settings(), lake=served, features=None, **followers)
    with TestClient(create_app(service=svc)) as client:
        t = play("http://serve", 1, lake=served, seed=3, client=client, max_requests=40)
    assert t.requests == 40 and t.errors == 0 and t.feedback_errors == 0
    assert t.fallbacks == 40 and t.unknown_items == 0
    assert sum(t.feedback.values()) > 0
    raw = [k for k in served.list(f"{RAW}/") if k.endswith(".parquet")]
    assert raw, "the service wrote no feedback back to the lake"
