"""The serving API end to end: a real MLflow registry (SQLite in tmp) holding tiny pyfunc models
with the recommender contract, a local lake with validated data, FastAPI's TestClient -- and one
run over real HTTP (uvicorn on a free port) whose impressions and feedback then pass the ingest
gate."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from core.errors import ConfigError
from core.lake import get_lake
from core.privacy import pseudonymise
from core.settings import get_settings
from serving.app import Service, create_app
from tests.fixtures.lake import write_rows
from tests.fixtures.models import register_toy

D0 = dt.date(2026, 1, 1)
ITEMS = {f"i{n:02d}": "books" for n in range(20)}
SCORES_V1 = {item: 100.0 - n for n, item in enumerate(ITEMS)}  # i00 best
SCORES_V2 = {item: float(n) for n, item in enumerate(ITEMS)}  # i19 best
USERS = {"alice": "FR", "bob": "FR", "carol": "US", "dave": "FR"}
IN_MODEL = ["alice", "bob", "carol"]  # dave is validated but unknown to the model


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A module-wide MLflow registry with champion v1 of ``flywheel-recommender``."""
    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLYWHEEL_HOME", str(root / "home"))
        mp.setenv("FLYWHEEL_MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.setenv("FLYWHEEL_SERVE_MODEL_POLL_S", "0.2")
        mp.delenv("FLYWHEEL_LAKE_URI", raising=False)
        known = [pseudonymise(u) for u in IN_MODEL]
        version = register_toy(SCORES_V1, known)
        yield {"root": root, "version": version, "known": known}


@pytest.fixture
def env(registry, tmp_path, monkeypatch):
    """A fresh lake with one validated day: catalog, users, alice bought i00, popularity."""
    monkeypatch.setenv("FLYWHEEL_LAKE_URI", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))  # its own spool and model cache
    lake = get_lake()
    events = [("alice", "i00", "purchase"), ("bob", "i05", "purchase"), ("bob", "i05", "click")]
    events += [("carol", "i07", "click")] * 3 + [("carol", "i08", "purchase")]
    write_rows(lake, D0, items=ITEMS, users=USERS, events=events)
    return lake


def _app(**kwargs):
    return create_app(
        service=Service(get_settings(), features=kwargs.pop("features", None), **kwargs)
    )


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def serving(**kwargs):
    """A TestClient on a started app whose champion has loaded (models load in the background)."""
    app = _app(**kwargs)
    with TestClient(app) as client:
        svc = app.state.service
        wait_for(lambda: svc.champion.current is not None, "the champion to load")
        yield client


def _items(resp) -> list[str]:
    return [i["item_id"] for i in resp.json()["items"]]


def test_recommendations_exclude_purchases_and_fall_back_for_unknown_users(env, registry):
    with serving() as client:
        r = client.get("/recommendations/alice", params={"k": 5})
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {
            "request_id",
            "user_id",
            "items",
            "model_version",
            "variant",
            "fallback",
        }
        assert body["variant"] == "champion" and body["fallback"] is None
        assert body["model_version"] == registry["version"] and body["user_id"] == "alice"
        assert _items(r) == ["i01", "i02", "i03", "i04", "i05"]  # i00 bought: excluded
        assert [i["score"] for i in body["items"]] == [99.0, 98.0, 97.0, 96.0, 95.0]
        assert "i05" not in _items(client.get("/recommendations/bob?k=10"))  # bob bought i05
        assert len(_items(client.get("/recommendations/carol?k=100"))) == 19  # catalog minus i08

        dave = client.get("/recommendations/dave?k=3").json()  # FR, not in the model
        assert dave["variant"] == "fallback" and dave["fallback"] == "popular_country"
        assert dave["model_version"] == "popularity"
        assert [i["item_id"] for i in dave["items"]][0] in {"i00", "i05"}  # French favourites
        zed = client.get("/recommendations/zed-42?k=3").json()  # nobody knows zed
        assert zed["fallback"] == "popular_overall" and len(zed["items"]) == 3
        assert zed["items"][0]["item_id"] in {"i07", "i05", "i08"}


def test_feature_store_decides_who_is_known(env):
    seen = {}

    def features(pseudo):
        if pseudo == pseudonymise("bob"):
            return None  # the online store has no row for bob
        if pseudo == pseudonymise("carol"):
            raise ConnectionError("redis down")  # unreachable: judged by validated data
        seen[pseudo] = True
        return {"user_clicks_28d": 3.0}

    with serving(features=features) as client:
        assert client.get("/recommendations/bob").json()["fallback"] == "popular_country"
        assert client.get("/recommendations/alice").json()["variant"] == "champion"
        assert pseudonymise("alice") in seen
        assert client.get("/recommendations/carol").json()["variant"] == "champion"
        assert client.get("/recommendations/zed").json()["fallback"] == "popular_overall"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/recommendations/alice?k=0", 422, "greater than or equal to 1"),
        ("/recommendations/alice?k=101", 422, "less than or equal to 100"),
        ("/recommendations/alice?k=ten", 422, "valid integer"),
        ("/recommendations/bad%20id", 400, "malformed user_id"),
        ("/recommendations/" + "x" * 200, 400, "malformed user_id"),
        ("/recommendations/%3Cscript%3E", 400, "malformed user_id"),
        ("/recommendations/", 400, "user_id is empty"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(env, path, status, message):
    with serving() as client:
        r = client.get(path)
        assert r.status_code == status
        assert message in json.dumps(r.json())


def test_feedback_is_checked_and_purchases_are_excluded_at_once(env):
    with serving() as client:
        rec = client.get("/recommendations/carol?k=3").json()
        rid, first = rec["request_id"], rec["items"][0]["item_id"]
        ok = {"request_id": rid, "item_id": first, "event_type": "click", "value": 1.0}
        r = client.post("/feedback", json=ok)
        assert r.status_code == 202 and r.json()["event_id"] == f"fb:{rid}:0"
        assert client.post("/feedback", json={**ok, "request_id": "nope"}).status_code == 404
        r = client.post("/feedback", json={**ok, "item_id": "i19"})
        assert r.status_code == 422 and "not in that impression" in r.json()["detail"]
        r = client.post("/feedback", json={**ok, "event_type": "rating", "value": 9})
        assert r.status_code == 422 and "from 0.5 to 5" in r.json()["detail"]
        assert client.post("/feedback", json={**ok, "event_type": "view"}).status_code == 422
        assert client.post("/feedback", json={"request_id": rid}).status_code == 422
        r = client.post("/feedback", json={**ok, "event_type": "purchase"})
        assert r.status_code == 202
        again = client.get("/recommendations/carol?k=3").json()
        assert first not in [i["item_id"] for i in again["items"]]

        health = client.get("/health").json()
        assert health["status"] == "ok" and health["champion"] is not None
        assert health["buffered_rows"] == 4  # 2 impressions + click + purchase
        metrics = client.get("/metrics").text
        assert (
            'flywheel_requests_total{method="GET",route="/recommendations/{user_id}",status="200"} 2.0'
            in metrics
        )
        assert (
            'flywheel_request_latency_seconds_bucket{le="0.05",route="/recommendations/{user_id}"}'
            in metrics
        )
        assert 'flywheel_feedback_total{event_type="purchase"} 1.0' in metrics
        assert 'flywheel_model_version{alias="champion"}' in metrics
        assert "flywheel_fallbacks_total" in metrics or "flywheel_fallbacks_created" in metrics


def test_simulated_clock_sets_the_partition(env, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_SERVE_SIMULATED_CLOCK", "true")
    with serving() as client:
        at = "2026-02-03T10:00:00Z"
        rec = client.get(f"/recommendations/alice?k=2&at={at}").json()
        fb = {"request_id": rec["request_id"], "item_id": rec["items"][0]["item_id"]}
        r = client.post(
            "/feedback", json={**fb, "event_type": "click", "event_ts": "2026-02-03T10:00:05Z"}
        )
        assert r.status_code == 202
        r = client.post(
            "/feedback", json={**fb, "event_type": "click", "event_ts": "2999-01-01T00:00:00Z"}
        )
        assert r.status_code == 422 and "in the future" in r.json()["detail"]
        r = client.get("/recommendations/alice?at=2026-02-03T10:00:00")
        assert r.status_code == 422 and "time zone" in r.json()["detail"]
    assert env.partitions("raw", "impressions") == [dt.date(2026, 2, 3)]
    assert env.partitions("raw", "events") == [dt.date(2026, 2, 3)]
    assert (
        env.read_parquet("raw/events/").column("event_ts")[0].as_py().isoformat()
        == "2026-02-03T10:00:05+00:00"
    )


def test_champion_swap_under_load_drops_nothing(env, registry, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_REGISTERED_MODEL", "swap-recommender")
    v1 = register_toy(SCORES_V1, registry["known"])
    failures: list[str] = []
    versions: dict[int, list[str]] = {0: [], 1: []}
    stop = threading.Event()

    with serving() as client:

        def hammer(n: int) -> None:
            while not stop.is_set():
                try:
                    r = client.get("/recommendations/alice?k=3")
                    if r.status_code != 200 or r.json()["variant"] != "champion":
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        versions[n].append(r.json()["model_version"])
                except Exception as exc:  # noqa: BLE001 - any failure counts
                    failures.append(repr(exc))

        threads = [threading.Thread(target=hammer, args=(n,)) for n in (0, 1)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while not all(versions.values()):  # both clients served by v1 first
            assert time.monotonic() < deadline and not failures, failures[:3]
            time.sleep(0.05)
        v2 = register_toy(SCORES_V2, registry["known"])  # moves @champion to v2
        deadline = time.monotonic() + 30
        while not any(v == v2 for vs in versions.values() for v in vs[-5:]):
            assert time.monotonic() < deadline, "the new champion was never served"
            time.sleep(0.05)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        after = client.get("/recommendations/alice?k=3").json()

    assert failures == []
    assert after["model_version"] == v2 and after["items"][0]["item_id"] == "i19"
    for vs in versions.values():
        assert vs[0] == v1 and vs[-1] == v2
        swapped = vs.index(v2)
        assert set(vs[swapped:]) == {v2}  # per client: once new, always new
    assert sum(len(vs) for vs in versions.values()) > 20


def test_ab_split_serves_the_challenger_to_a_stable_share(env, registry, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_REGISTERED_MODEL", "ab-recommender")
    monkeypatch.setenv("FLYWHEEL_AB_CHALLENGER_SHARE", "0.5")
    users = {f"user{n:03d}": "US" for n in range(60)}
    write_rows(env, D0 + dt.timedelta(days=1), users=users)
    champion = register_toy(SCORES_V1, None, aliases=("champion",))
    challenger = register_toy(SCORES_V2, None, aliases=("challenger",))
    svc = Service(get_settings(), features=None)
    with TestClient(create_app(service=svc)) as client:
        wait_for(lambda: svc.challenger.current is not None, "the challenger to load")
        wait_for(lambda: svc.champion.current is not None, "the champion to load")
        first = {u: client.get(f"/recommendations/{u}?k=2").json() for u in users}
        again = {u: client.get(f"/recommendations/{u}?k=2").json()["variant"] for u in users}
        assert {u: b["variant"] for u, b in first.items()} == again  # stable per user
        n_chal = sum(b["variant"] == "challenger" for b in first.values())
        assert 18 <= n_chal <= 42  # 60 users at 50 %: far outside this is a broken split
        for b in first.values():
            assert b["model_version"] == (challenger if b["variant"] == "challenger" else champion)
        # the A/B test ends when the challenger alias goes
        from mlflow import MlflowClient

        s = get_settings()
        MlflowClient(s.mlflow_tracking_uri).delete_registered_model_alias(
            "ab-recommender", "challenger"
        )
        svc.challenger.check()  # (the background follower may have noticed first)
        assert svc.challenger.current is None
        assert all(
            client.get(f"/recommendations/{u}").json()["variant"] == "champion" for u in users
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_real_http_then_shutdown_flush_then_ingest_gate_passes(env, registry, monkeypatch):
    import uvicorn

    monkeypatch.setenv("FLYWHEEL_SERVE_FLUSH_S", "600")  # only the shutdown flush writes here

    from ingestion.pipeline import ingest_day
    from serving.ab import ab_report

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    served = []
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/health").json()["status"] == "ok"
        wait_for(lambda: http.get("/health").json()["champion"] is not None, "the champion")
        for user in ("alice", "bob", "dave", "newcomer"):
            body = http.get(f"/recommendations/{user}", params={"k": 4}).json()
            served.append(body)
            item = body["items"][0]["item_id"]
            for event_type, value in (("click", 1.0), ("rating", 4.0)):
                r = http.post(
                    "/feedback",
                    json={
                        "request_id": body["request_id"],
                        "item_id": item,
                        "event_type": event_type,
                        "value": value,
                    },
                )
                assert r.status_code == 202, r.text
        assert "flywheel_requests_total" in http.get("/metrics").text
    assert env.list("raw/impressions/") == []  # still buffered (flush interval 600 s)
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()

    imps = env.read_parquet("raw/impressions/")
    assert sorted(imps.column("request_id").to_pylist()) == sorted(b["request_id"] for b in served)
    events = env.read_parquet("raw/events/")
    assert events.num_rows == 8
    assert set(events.column("user_id").to_pylist()) == {"alice", "bob", "dave", "newcomer"}

    today = dt.datetime.now(dt.UTC).date()
    summary = ingest_day(today, env)  # the gate: contract, items known, ids unseen
    assert summary["rows"] == 8
    validated = env.read_parquet(f"validated/events/dt={today.isoformat()}/")
    assert pseudonymise("alice") in validated.column("user_id").to_pylist()
    assert "alice" not in validated.column("user_id").to_pylist()

    report = ab_report(env)
    rows = {r["variant"]: r for r in report["variants"]}
    assert rows["champion"]["impressions"] == 2 and rows["champion"]["ctr"] == 1.0
    assert rows["fallback"]["impressions"] == 2


def test_online_features_decide_model_or_fallback(registry, tmp_path, monkeypatch):
    """With the real online store (Feast embedded: SQLite): users with materialised features
    are served by the model, users without them get the fallback -- and a request naming a
    materialised pseudonym is hashed like any raw id, so it reaches nobody's features."""
    from features.columns import USER_FEATURES
    from features.store import apply_if_changed, compute_day, get_store, materialize_day
    from serving.app import feast_user_features
    from tests.fixtures.lake import item_id, user_id, write_validated

    monkeypatch.setenv("FLYWHEEL_LAKE_URI", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))  # its own Feast registry
    monkeypatch.setenv("FLYWHEEL_FEAST_PROJECT", "serving_test")
    monkeypatch.setenv("FLYWHEEL_REGISTERED_MODEL", "features-recommender")
    lake = get_lake()
    days = write_validated(lake, dt.date(2026, 1, 1), 2, n_users=30, n_items=15, events_per_day=400)
    walt_day = days[-1] + dt.timedelta(days=1)  # a user ingested from the raw id "walt"
    walt_events = [("walt", item_id(1), "click"), ("walt", item_id(2), "purchase")]
    write_rows(lake, walt_day, users={"walt": "DE"}, events=walt_events)
    compute_day(walt_day)
    store = get_store()
    apply_if_changed(store)
    materialize_day(walt_day, store)
    items = [item_id(i) for i in range(15)]
    version = register_toy({item: 15.0 - n for n, item in enumerate(items)}, None)

    lookup = feast_user_features(get_settings())
    feats = lookup(pseudonymise("walt"))
    assert feats is not None and set(USER_FEATURES) <= set(feats)
    assert lookup(user_id(3)) is not None  # materialised under its pseudonym
    assert lookup("p_" + "0" * 23 + "x") is None  # never materialised

    svc = Service(get_settings())  # features="feast": the store of the active profile
    with TestClient(create_app(service=svc)) as client:
        wait_for(lambda: svc.champion.current is not None, "the champion to load")
        wait_for(lambda: client.get("/health").json()["features"] is True, "the online store")
        known = client.get("/recommendations/walt?k=5").json()
        assert known["variant"] == "champion" and known["model_version"] == version
        assert len(known["items"]) == 5
        stranger = client.get("/recommendations/stranger-1?k=5").json()
        assert stranger["variant"] == "fallback" and stranger["fallback"] == "popular_overall"
        # knowing user 3's pseudonym is not being user 3: it is hashed like any raw id
        posing = client.get(f"/recommendations/{user_id(3)}?k=5").json()
        assert posing["variant"] == "fallback" and posing["fallback"] == "popular_overall"


def test_a_pseudonym_in_a_request_is_hashed_like_any_raw_id(env):
    """Knowing alice's pseudonym neither reads her recommendations nor buys in her name."""
    alias = pseudonymise("alice")
    with serving() as client:
        posing = client.get(f"/recommendations/{alias}?k=3").json()
        assert posing["variant"] == "fallback" and posing["fallback"] == "popular_overall"
        bought = next(i["item_id"] for i in posing["items"] if i["item_id"] != "i00")
        fb = {"request_id": posing["request_id"], "item_id": bought, "event_type": "purchase"}
        assert client.post("/feedback", json=fb).status_code == 202
        alice = client.get("/recommendations/alice?k=19").json()
        assert alice["variant"] == "champion" and bought in _items_of(alice)  # not hers
    events = env.read_parquet("raw/events/")
    assert events.column("user_id").to_pylist() == [alias]  # raw, as sent
    from core.privacy import pseudonymise_array

    assert pseudonymise_array(events.column("user_id")).to_pylist() != [alias]  # the gate's hash


def _items_of(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_feedback_is_bounded_per_impression_and_in_time(env, monkeypatch):
    with serving() as client:
        rec = client.get("/recommendations/carol?k=3").json()
        fb = {"request_id": rec["request_id"], "item_id": rec["items"][0]["item_id"]}
        answers = [
            client.post("/feedback", json={**fb, "event_type": "purchase"}) for _ in range(3)
        ]
        assert [r.status_code for r in answers] == [202, 200, 200]
        assert {r.json()["event_id"] for r in answers} == {answers[0].json()["event_id"]}
        assert answers[1].json()["status"] == "duplicate"
        client.post("/feedback", json={**fb, "event_type": "rating", "value": 5})
        r = client.post("/feedback", json={**fb, "event_type": "rating", "value": 1})
        assert r.status_code == 409 and "one rating per item" in r.json()["detail"]
        # without the simulated clock, client-set times are refused
        r = client.post(
            "/feedback", json={**fb, "event_type": "click", "event_ts": "1970-01-01T00:00:00Z"}
        )
        assert r.status_code == 422 and "SIMULATED_CLOCK is off" in r.json()["detail"]
        r = client.get("/recommendations/carol?at=1970-01-01T00:00:00Z")
        assert r.status_code == 422 and "SIMULATED_CLOCK is off" in r.json()["detail"]
    purchases = [
        e for e in env.read_parquet("raw/events/").to_pylist() if e["event_type"] == "purchase"
    ]
    assert len(purchases) == 1
    assert env.partitions("raw", "events") == [dt.datetime.now(dt.UTC).date()]

    monkeypatch.setenv("FLYWHEEL_SERVE_SIMULATED_CLOCK", "true")
    monkeypatch.setenv("FLYWHEEL_SERVE_FEEDBACK_WINDOW_S", "60")
    with serving() as client:
        rec = client.get("/recommendations/carol?k=3&at=2026-02-03T10:00:00Z").json()
        fb = {"request_id": rec["request_id"], "item_id": rec["items"][0]["item_id"]}
        for when, status in [
            ("1970-01-01T00:00:00Z", "before the impression was served"),
            ("2026-02-03T10:01:01Z", "accepted up to 60 s after serving"),
        ]:
            r = client.post("/feedback", json={**fb, "event_type": "click", "event_ts": when})
            assert r.status_code == 422 and status in r.json()["detail"]
    monkeypatch.setenv("FLYWHEEL_PROFILE", "production")
    with pytest.raises(ConfigError, match="refused in the production profile"):
        Service(get_settings(), features=None).start()


def test_big_bodies_get_413_and_422_never_echoes_the_input(env, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_SERVE_MAX_BODY_BYTES", "4096")
    big = "x" * 5000
    with serving() as client:
        r = client.post(
            "/feedback", json={"request_id": big, "item_id": "i1", "event_type": "click"}
        )
        assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"x" * 1000

        r = client.post("/feedback", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        marker = "SECRET-INPUT-" + "y" * 900  # under the limit, over the fields' lengths
        bad = {"request_id": marker, "item_id": marker, "event_type": marker, "value": marker}
        r = client.post("/feedback", json=bad)
        assert r.status_code == 422
        assert "SECRET-INPUT" not in r.text and len(r.text) < 2000
        fields = {e["loc"][-1] for e in r.json()["detail"]}
        assert {"request_id", "item_id", "event_type", "value"} <= fields
        r = client.post(
            "/feedback",
            content=b"{" + marker.encode(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422 and "SECRET-INPUT" not in r.text
        r = client.get(f"/recommendations/{'<b>' * 10}")
        assert r.status_code == 400 and "<b>" not in r.text
        assert client.get("/health").status_code == 200


def _blackhole() -> socket.socket:
    """A port that accepts connections and never answers (an MLflow that hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def test_mlflow_down_serving_starts_from_the_cached_champion_and_redacts(
    env, registry, monkeypatch, caplog
):
    with serving() as client:  # MLflow up: the champion is loaded and cached under FLYWHEEL_HOME
        assert client.get("/health").json()["models"]["champion"]["source"] == "registry"

    hole = _blackhole()
    port = hole.getsockname()[1]
    monkeypatch.setenv(
        "FLYWHEEL_MLFLOW_TRACKING_URI", f"http://flywheel:s3cr3t-pw@127.0.0.1:{port}"
    )
    monkeypatch.setenv("FLYWHEEL_SERVE_REGISTRY_TIMEOUT_S", "0.5")
    monkeypatch.setenv("FLYWHEEL_SERVE_MODEL_POLL_S", "60")
    svc = Service(get_settings(), features=None)
    try:
        t0 = time.monotonic()
        with TestClient(create_app(service=svc)) as client:
            health = client.get("/health").json()
            assert time.monotonic() - t0 < 10  # not MLflow's minutes of retries
            assert health["champion"] == registry["version"]
            assert health["models"]["champion"]["source"] == "cache"
            body = client.get("/recommendations/alice?k=2").json()
            assert body["variant"] == "champion" and _items_of(body) == ["i01", "i02"]
            wait_for(lambda: svc.champion.last_error is not None, "the lookup to time out")
            text = client.get("/health").text
            assert "no answer within 0.5 s" in text and "http://***@127.0.0.1" in text
            assert "s3cr3t-pw" not in text
    finally:
        hole.close()
    assert "s3cr3t-pw" not in caplog.text
