"""Serving under real faults: nothing acknowledged is lost, nothing lands twice, recovery by itself.

* S3 (the moto server over HTTP) goes down in the middle of a feedback flush -- after a batch's
  impressions file and before its events file -- stays down while more feedback is accepted,
  while serving shuts down and while it starts again, then comes back: the next start writes
  every acknowledged row, the half-written batch under its own names again (no duplicates).
* ``flywheel serve`` (a real process) is SIGKILLed with feedback acknowledged but not flushed:
  the restarted process replays it from the spool, and it reaches the lake exactly once.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from core.errors import LakeError
from core.lake import get_lake
from core.settings import get_settings
from serving.app import Service, create_app
from serving.model import ModelFollower
from tests.fixtures.lake import write_rows
from tests.s3_server import free_port

D0 = dt.date(2026, 1, 1)
ITEMS = {f"i{n:02d}": "books" for n in range(12)}
USERS = {"alice": "FR", "bob": "FR", "carol": "US"}
EVENTS = [("alice", "i00", "purchase"), ("bob", "i03", "click"), ("carol", "i07", "click")]


class NoRegistry(ModelFollower):
    """No model registry in these tests: every user gets the popularity fallback."""

    def check(self) -> bool:
        return False


def _service() -> Service:
    followers = {
        a: NoRegistry("flywheel-recommender", a, "unused") for a in ("champion", "challenger")
    }
    return Service(get_settings(), features=None, **followers)


def _serve_and_click(client, users) -> list[str]:
    """One slate per user and a click + a rating on its first item; the acknowledged event ids."""
    acked = []
    for user in users:
        body = client.get(f"/recommendations/{user}?k=3").json()
        item = body["items"][0]["item_id"]
        for event_type, value in (("click", 1.0), ("rating", 4.0)):
            fb = {"request_id": body["request_id"], "item_id": item, "event_type": event_type}
            r = client.post("/feedback", json=fb | {"value": value})
            assert r.status_code == 202, r.text
            acked.append(r.json()["event_id"])
    return acked


def _lake_rows(lake) -> tuple[list[str], list[str]]:
    imps = lake.read_parquet("raw/impressions/").column("request_id").to_pylist()
    events = lake.read_parquet("raw/events/").column("event_id").to_pylist()
    return imps, events


def test_s3_outage_in_the_middle_of_a_feedback_flush(moto):
    lake = get_lake()
    write_rows(lake, D0, items=ITEMS, users=USERS, events=EVENTS)
    svc = _service()
    with TestClient(create_app(service=svc)) as client:
        acked = _serve_and_click(client, ["alice", "bob"])
        writes = []
        real_write = type(svc.lake).write_bytes

        def write_then_fail(key: str, data: bytes) -> None:  # S3 dies after the first file
            real_write(svc.lake, key, data)
            writes.append(key)
            moto.stop()

        svc.lake.write_bytes = write_then_fail
        with pytest.raises(LakeError, match="S3 endpoint unreachable"):
            svc.feedback.flush()
        assert [k.split("/")[1] for k in writes] == ["impressions"]  # half a batch is in S3
        svc.lake.write_bytes = lambda key, data: real_write(svc.lake, key, data)
        acked += _serve_and_click(client, ["carol", "dave"])  # accepted while S3 is down
        assert client.get("/health").json()["spool"]["write_failures"] == 1
    # the lifespan stopped with S3 down: no exception, the rows wait in the spool
    spool = get_settings().serving_dir / "spool"
    assert list(spool.glob("*.jsonl"))

    with TestClient(create_app(service=_service())) as client:  # a restart while S3 is down
        health = client.get("/health").json()  # up at once, with no lake snapshot yet
        assert health["catalog_items"] == 0 and health["spool"]["replayed_rows"] == 12

    moto.start()  # S3 is back (same state: the half batch's impressions file is there)
    svc = _service()
    with TestClient(create_app(service=svc)) as client:
        assert client.get("/health").json()["spool"]["replayed_rows"] == 12
    imps, events = _lake_rows(lake)
    assert sorted(events) == sorted(acked)  # every acknowledged event, once
    assert len(imps) == 4 and len(set(imps)) == 4  # the retried half batch did not add rows
    assert not list(spool.glob("*.jsonl"))


def _start(env: dict, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flywheel.cli", "serve", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _health(base: str, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        try:
            return httpx.get(f"{base}/health", timeout=2).json()
        except httpx.TransportError:
            assert time.monotonic() < deadline, "serving did not start"
            time.sleep(0.2)


def test_sigkilled_serving_replays_its_spool_on_restart(fw_home, tmp_path):
    lake_root = tmp_path / "lake"
    env = os.environ | {
        "FLYWHEEL_HOME": str(fw_home),
        "FLYWHEEL_LAKE_URI": lake_root.as_uri(),
        "FLYWHEEL_SERVE_FLUSH_S": "600",
        "FLYWHEEL_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nothing there
        "FLYWHEEL_SERVE_REGISTRY_TIMEOUT_S": "1",
        "FLYWHEEL_FEAST_PROJECT": "nothing_applied",
    }
    lake = get_lake(lake_root.as_uri())
    write_rows(lake, D0, items=ITEMS, users=USERS, events=EVENTS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(env, port)
    try:
        _health(base, proc)
        with httpx.Client(base_url=base, timeout=10) as http:
            acked = _serve_and_click(http, ["alice", "carol"])
            rid = http.get("/recommendations/bob?k=3").json()  # served, no feedback yet
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert lake.list("raw/") == []  # nothing was flushed: it is all in the spool

        proc = _start(env, port)
        health = _health(base, proc)
        assert health["spool"]["replayed_rows"] == 3 + len(acked)
        with httpx.Client(base_url=base, timeout=10) as http:
            # an impression served before the kill still takes feedback after the restart
            fb = {"request_id": rid["request_id"], "item_id": rid["items"][0]["item_id"]}
            r = http.post("/feedback", json=fb | {"event_type": "purchase"})
            assert r.status_code == 202, r.text
            acked.append(r.json()["event_id"])
        proc.send_signal(signal.SIGTERM)  # a clean stop flushes the rest
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    finally:
        if proc.poll() is None:
            proc.kill()
    imps, events = _lake_rows(lake)
    assert sorted(events) == sorted(acked) and len(imps) == 3
    assert not list((fw_home / "serving" / "spool").glob("*.jsonl"))
