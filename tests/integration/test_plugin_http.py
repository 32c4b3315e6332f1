"""The Flywheel UI plugin over real HTTP: a real ``airflow api-server`` with SimpleAuthManager.

Without a token → 401, with a forged one → 403, with one from ``POST /auth/token`` → the page
and the Evidently report; report paths that try to leave the report folders → 404. A day the
real gate sets a file aside, a hostile raw ``validation_report.html``: the page links the
pipeline's own report, the hostile file is only a download, and every ``/files/`` answer is
sandboxed and not sniffed. Then the page is rendered in headless Chromium (Debian's
``chromium``; the test installs nothing) with the ``_token`` cookie the Airflow UI sets, and the
test reads what a person would see in each section (drift, data quality, leaderboard, A/B) and
uses the "failures only" filter; ``FLYWHEEL_SCREENSHOTS=docs/img`` keeps one PNG per section.

The harness (:class:`AirflowProcesses`, :func:`chromium_render`) is reused by the loop test.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from core.lake import parquet_bytes
from core.names import CHAMPION

pytestmark = pytest.mark.slow

PASSWORD = "flywheel-test-password"


def free_port_block(n: int = 3) -> int:
    """A port p with p … p+n-1 free (the API server and the log servers next to it)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + n > 65535:
            continue
        ok = True
        for p in range(port, port + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no block of free ports")


class AirflowProcesses:
    """An embedded Airflow (SQLite, LocalExecutor) in its own FLYWHEEL_HOME, on free ports."""

    def __init__(self, home: Path, extra_env: dict[str, str] | None = None):
        from core.settings import Settings
        from flywheel.airflow_env import airflow_env

        self.port = free_port_block(3)
        self.settings = Settings(home=home, airflow_port=self.port)
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        base["FLYWHEEL_HOME"] = str(home)
        self.env = airflow_env(self.settings, base)
        self.env.update(
            {
                "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
                "simple_auth_manager.SimpleAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__API_AUTH__JWT_SECRET": "flywheel-test-jwt-secret",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                **(extra_env or {}),
            }
        )
        self.home = home
        self.url = self.settings.airflow_url
        self.logs = home / "process-logs"
        self.procs: dict[str, subprocess.Popen] = {}

    def airflow(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        from flywheel.airflow_env import airflow_executable

        out = subprocess.run(
            [airflow_executable(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {out.stderr[-3000:]}")
        return out.stdout

    def prepare(self) -> None:
        self.settings.airflow_home.mkdir(parents=True, exist_ok=True)
        passwords = Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        passwords.write_text(json.dumps({"admin": PASSWORD}))
        self.airflow("db", "migrate")

    def start(self, component: str, *args: str) -> None:
        from flywheel.airflow_env import airflow_executable

        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{component}.log", "w")  # noqa: SIM115 - closed with the process
        self.procs[component] = subprocess.Popen(
            [airflow_executable(), component, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_api(self) -> None:
        self.start("api-server", "--port", str(self.port))
        self.wait_http(f"{self.url}/api/v2/monitor/health", timeout=180)

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {self.tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=5).status_code < 500:
                    return
            time.sleep(1)
        raise TimeoutError(f"{url} not up after {timeout}s: {self.tail('api-server')}")

    def tail(self, component: str, n: int = 3000) -> str:
        path = self.logs / f"{component}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def token(self) -> str:
        r = httpx.post(
            f"{self.url}/auth/token", json={"username": "admin", "password": PASSWORD}, timeout=30
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def stop(self) -> None:
        for proc in self.procs.values():  # each component leads its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()


def chromium_render(url: str, cookies: dict[str, str], screenshot: Path) -> str:
    """Open ``url`` in headless Chromium with ``cookies``; return the page's visible text.

    Chromium's DevTools protocol (over its local websocket) sets the cookie, navigates and
    captures a PNG, so the page is the one a signed-in person gets, not a saved file.
    """
    return chromium_page(url, cookies, screenshot)[0]


def chromium_page(
    url: str,
    cookies: dict[str, str],
    screenshot: Path,
    probes: dict[str, str] | None = None,
    sections: dict[str, Path] | None = None,
) -> tuple[str, dict[str, object]]:
    """:func:`chromium_render`, and then: each of ``probes`` (JavaScript expressions, run in
    order in the page, e.g. a click) evaluated to its value; each of ``sections`` (element id →
    PNG path) captured on its own, clipped to the element."""
    from urllib.parse import urlparse

    from websockets.sync.client import connect

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed (apt-get install -y chromium; `make system-deps`)"
    profile = Path(tempfile.mkdtemp(prefix="flywheel-chromium-"))
    proc = subprocess.Popen(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
            "--window-size=1400,1800",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, "chromium did not start"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            seq = 0

            def call(method: str, **params):
                nonlocal seq
                seq += 1
                ws.send(json.dumps({"id": seq, "method": method, "params": params}))
                while True:
                    msg = json.loads(ws.recv(timeout=60))
                    if msg.get("id") == seq:
                        assert "error" not in msg, msg
                        return msg["result"]

            host = urlparse(url).hostname
            call("Network.enable")
            for name, value in cookies.items():
                assert call("Network.setCookie", name=name, value=value, domain=host, path="/")[
                    "success"
                ]
            call("Page.navigate", url=url)
            deadline = time.monotonic() + 60
            while True:
                state = call(
                    "Runtime.evaluate", expression="document.readyState", returnByValue=True
                )
                if state["result"]["value"] == "complete":
                    break
                assert time.monotonic() < deadline, "page did not finish loading"
                time.sleep(0.2)
            text = call(
                "Runtime.evaluate", expression="document.body.innerText", returnByValue=True
            )
            shot = call("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            for element_id, path in (sections or {}).items():
                box = call(
                    "Runtime.evaluate",
                    expression=f"(() => {{ const e = document.getElementById({element_id!r}), "
                    "r = e.getBoundingClientRect(); return [r.left + window.scrollX, r.top + "
                    "window.scrollY, Math.max(r.width, e.scrollWidth), r.height]; })()",
                    returnByValue=True,
                )["result"]["value"]
                x, y, w, h = box
                clip = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
                part = call(
                    "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
                )
                path.write_bytes(base64.b64decode(part["data"]))
            values = {
                name: call("Runtime.evaluate", expression=js, returnByValue=True)["result"].get(
                    "value"
                )
                for name, js in (probes or {}).items()
            }
            return text["result"]["value"], values
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


# --- the plugin test ---------------------------------------------------------------------------

DAY = dt.date(2026, 1, 9)
NOTHING_DAY = dt.date(2026, 1, 6)  # a drift check with nothing to compare
SUPPRESSED_DAY = dt.date(2026, 1, 7)  # drift, held back by the cooldown
QUARANTINED_CSV = "quarantine/events/dt=2026-01-08/events-0001.csv"
#: Two rules with the same GX expectation on the same column (and the same message).
TWO_RULES_ONE_COLUMN = [
    {
        "expectation": "expect_column_values_to_be_between",
        "rule": rule,
        "column": "event_ts",
        "message": "2 rows out of range",
        "examples": examples,
        "files": ["events-0001.csv"],
    }
    for rule, examples in (
        ("event_ts inside the data interval", ["2026-01-03T10:00:00"]),
        ("event_ts not in the future", ["2031-05-05T00:00:00"]),
    )
]
AB_DAY = dt.date(2026, 1, 10)
#: (variant, model version, impressions, clicked impressions) served on ``AB_DAY``.
AB_TRAFFIC = (("champion", "2", 40, 10), ("challenger", "3", 10, 4))
SCREENSHOTS = os.environ.get("FLYWHEEL_SCREENSHOTS")  # e.g. docs/img: keep the page's PNGs


def _write_result(lake, day: str, table: str, failed: list[dict]) -> None:
    lake.write_text(
        f"quality/results/dt={day}/{table}.json",
        json.dumps(
            {
                "date": day,
                "table": table,
                "success": not failed,
                "rows": 1300,
                "validation_id": f"v-{table}-{day}",
                "report_uri": None,
                "failed_expectations": failed,
            }
        ),
    )


def _seed_ab(lake, home: Path) -> None:
    """Impressions of both arms on ``AB_DAY`` (``AB_TRAFFIC``) and clicks on some, written by
    serving's own feedback log."""
    from serving.feedback import FeedbackLog, Impression

    log = FeedbackLog(lake, flush_rows=10_000, spool_dir=home / "spool")
    at = dt.datetime.combine(AB_DAY, dt.time(12), tzinfo=dt.UTC)
    for variant, version, shown, clicked in AB_TRAFFIC:
        for n in range(shown):
            rid = f"{variant}-{n}"
            log.record_impression(
                Impression(rid, f"u{n}", ("i1", "i2"), (0.9, 0.5), version, variant, at)
            )
            if n < clicked:
                log.record_feedback(rid, "i1", "click", now=at)
    log.flush()


def _seed_lake(home: Path) -> None:
    """Drift summaries (one with its real Evidently report and an emitted trigger, one without
    drift, one day where nothing was compared), quality results (a failure with two rules on
    one column and its quarantined file, passes before and after it), served impressions."""
    import numpy as np
    import pandas as pd

    from core.lake import Lake
    from core.settings import Settings
    from monitoring.config import DriftConfig
    from monitoring.decision import DriftResult
    from monitoring.monitor import store
    from monitoring.report import run_report

    lake = Lake.from_uri((home / "lake").as_uri())
    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {"user_views_1d": rng.poisson(3, 400), "item_category": rng.choice(["books", "toys"], 400)}
    )
    cur = pd.DataFrame(
        {"user_views_1d": rng.poisson(6, 400), "item_category": rng.choice(["garden"], 400)}
    )
    snapshot, columns, share = run_report(ref, cur, DriftConfig(), name=f"drift {DAY}")
    result = DriftResult(
        date=DAY.isoformat(),
        drift_detected=True,
        candidate=True,
        drift_share=share,
        drifted_columns=sorted(c for c, v in columns.items() if v["drifted"]),
        quality_drop=None,
        reason="drift: test world",
        columns=columns,
        trigger={"run_id": "asset_triggered__test", "at": None},  # its drift event went out
        reference_window=[str(DAY - dt.timedelta(days=14)), str(DAY - dt.timedelta(days=1))],
        reference_rows=14 * 400,
        current_rows=400,
    )
    store(lake, DAY, result, snapshot, settings=Settings(home=home))
    store(  # drift seen, no event emitted: the page must not say "retrain"
        lake,
        SUPPRESSED_DAY,
        DriftResult(
            date=SUPPRESSED_DAY.isoformat(),
            drift_detected=False,
            candidate=True,
            suppressed_by="cooldown: last trigger on 2026-01-05, 3 days must pass",
            drift_share=0.5,
            drifted_columns=["item_category"],
            quality_drop=None,
            reason="drift: share 0.50 >= 0.3",
        ),
        None,
    )
    store(
        lake,
        NOTHING_DAY,
        DriftResult.no_decision(NOTHING_DAY, "too little traffic on 2026-01-06: 3 active rows"),
        None,
    )
    store(
        lake,
        DAY - dt.timedelta(days=1),
        DriftResult(
            date=(DAY - dt.timedelta(days=1)).isoformat(),
            drift_detected=False,
            drift_share=0.0,
            drifted_columns=[],
            quality_drop=None,
            reason="no drift: share 0.00 < 0.1",
        ),
        None,
    )
    lake.write_text(
        "quality/reports/dt=2026-01-08/events.html", "<html><body>GX failures</body></html>"
    )
    lake.write_bytes(QUARANTINED_CSV, b"event_id,event_type\ne1,teleport\n")
    _write_result(lake, "2026-01-10", "events", [])  # a newer day that passed
    for table, ok in (("events", False), ("users", True)):
        lake.write_text(
            f"quality/results/dt=2026-01-08/{table}.json",
            json.dumps(
                {
                    "date": "2026-01-08",
                    "table": table,
                    "success": ok,
                    "rows": 1200,
                    "validation_id": f"v-{table}",
                    "report_uri": lake.url("quality/reports/dt=2026-01-08/events.html")
                    if not ok
                    else None,
                    "failed_expectations": [] if ok else TWO_RULES_ONE_COLUMN,
                    "quarantined": [] if ok else [QUARANTINED_CSV],
                }
            ),
        )
    (home / "secret.txt").write_text("top secret")
    _seed_hostile_quarantine(lake)
    _seed_ab(lake, home)


QDAY = dt.date(2026, 1, 7)  # a day the real gate fails, a hostile raw file among its events
HOSTILE = b"<html><body><script>fetch('/api/v2/variables',{method:'POST'})</script></body></html>"
HOSTILE_KEY = f"quarantine/events/dt={QDAY}/validation_report.html"


def _seed_hostile_quarantine(lake) -> None:
    """``QDAY`` simulated and ingested for real, with an attacker's ``validation_report.html``
    placed in ``raw/events/dt=QDAY/``: the gate fails that file and quarantines it (the day's
    good events are published without it)."""
    from ingestion.pipeline import ingest_day
    from simulation.simulator import simulate

    simulate(lake, days=1, users=40, items=15, seed=7, start=QDAY)
    lake.write_bytes(f"raw/events/dt={QDAY}/validation_report.html", HOSTILE)
    _break_one_rating(lake, f"raw/events/dt={QDAY}/part-00000.parquet")
    summary = ingest_day(QDAY, lake=lake, now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    assert summary["files_quarantined"] == 1


def _break_one_rating(lake, key: str) -> str:
    """Make the first event of a raw batch a rating of 9 stars (one bad row, set aside by the
    gate); returns its raw user id."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = lake.read_parquet(key)
    first = pa.array([True] + [False] * (table.num_rows - 1))
    for name, value in (("event_type", "rating"), ("value", 9.0)):
        col = table.column(name)
        table = table.set_column(
            table.schema.get_field_index(name),
            name,
            pc.if_else(first, pa.scalar(value, col.type), col),
        )
    lake.write_bytes(key, parquet_bytes(table))
    return table.column("user_id")[0].as_py()


#: (trigger tag, end day, NDCG@10, champion's NDCG@10 on the same holdout, decision) of v1..v3,
#: tagged and logged as ``training.pipeline`` does. v3 scores below v2 on its own holdout, and
#: below the champion on that holdout: the leaderboard must not rank them across holdouts.
VERSIONS = (
    ("manual", "2026-01-07", 0.21, None, "promoted"),
    (
        'asset: flywheel://drift {"date": "2026-01-08", "drift_share": 0.5}',
        "2026-01-08",
        0.34,
        0.30,
        "promoted",
    ),
    (
        'asset: flywheel://features {"date": "2026-01-09", "days": ["2026-01-09"]}',
        "2026-01-09",
        0.25,
        0.27,
        "rejected",
    ),
)


def _register_models(home: Path) -> list[str]:
    """v1..v3 (``VERSIONS``), v2 champion, v3 challenger; returns their MLflow run ids."""
    from core.names import CHALLENGER
    from core.settings import Settings
    from training.registry import configure_mlflow, decide, experiment_id, model_name

    s = Settings(home=home)
    client = configure_mlflow(s)
    name = model_name(s)
    client.create_registered_model(name)
    runs = []
    for n, (trigger, end, ndcg, champion, decision) in enumerate(VERSIONS, start=1):
        airflow_run = f"asset_triggered__{end}T06:00:00+00:00"
        baseline = 0.18 + n / 100
        verdict = decide(  # the gate's own words for the reason
            {"ndcg_at_10": ndcg, "recall_at_20": ndcg + 0.1},
            {"ndcg_at_10": champion, "recall_at_20": champion + 0.1} if champion else None,
            {"ndcg_at_10": baseline},
            margin=0.005,
            recall_tolerance=0.02,
            baseline_name="recent_popularity",
        )
        assert verdict.promote == (decision == "promoted")
        run = client.create_run(
            experiment_id(client, s),
            tags={
                "data_window_start": "2026-01-01",
                "data_window_end": end,
                "holdout_start": end,
                "trigger": trigger,
                "run_key": f"train_recommender/{airflow_run}",
                "airflow_dag_run": airflow_run,
                "champion_evaluation": f"champion v{n - 1}" if champion else "no champion yet",
                "strongest_baseline": "recent_popularity",
                "promotion_decision": decision,
                "promotion_reason": verdict.reason,
            },
        )
        metrics = {
            "holdout_ndcg_at_10": ndcg,
            "holdout_ndcg_at_10_lo": ndcg - 0.015,
            "holdout_ndcg_at_10_hi": ndcg + 0.015,
            "holdout_recall_at_20": ndcg + 0.1,
            "holdout_users": 180.0 + n,
            "strongest_baseline_ndcg_at_10": baseline,
        }
        if champion is not None:
            metrics["champion_ndcg_at_10"] = champion
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
        runs.append(run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION, "2")
    client.set_registered_model_alias(name, CHALLENGER, "3")
    return runs


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("plugin") / "fw"
    af = AirflowProcesses(home, {"FLYWHEEL_AB_CHALLENGER_SHARE": "0.2"})
    _seed_lake(home)
    af.runs = _register_models(home)
    af.prepare()
    af.start_api()
    try:
        yield af
    finally:
        af.stop()


def test_plugin_is_registered_with_a_nav_entry(airflow_ui):
    r = httpx.get(
        f"{airflow_ui.url}/api/v2/plugins",
        headers={"Authorization": f"Bearer {airflow_ui.token()}"},
        timeout=30,
    )
    (plugin,) = [p for p in r.json()["plugins"] if p["name"] == "flywheel"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/flywheel"
    assert plugin["external_views"][0]["href"] == "/flywheel/"


@pytest.mark.parametrize(
    "path", ["/flywheel/", "/flywheel/api/drift", "/flywheel/files/reports/x.html"]
)
def test_no_token_is_401_and_forged_token_is_403(airflow_ui, path):
    refused = httpx.get(airflow_ui.url + path, timeout=30)
    assert refused.status_code == 401
    if "/files/" in path:  # refusals of files are sandboxed and not sniffed as well
        assert refused.headers["content-security-policy"] == "sandbox"
        assert refused.headers["x-content-type-options"] == "nosniff"
    forged = {"Authorization": "Bearer eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"}
    assert httpx.get(airflow_ui.url + path, headers=forged, timeout=30).status_code == 403
    assert (
        httpx.get(airflow_ui.url + path, cookies={"_token": "junk"}, timeout=30).status_code == 403
    )


def test_page_and_report_with_a_token(airflow_ui):
    auth = {"Authorization": f"Bearer {airflow_ui.token()}"}
    page = httpx.get(f"{airflow_ui.url}/flywheel/", headers=auth, timeout=60)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    link = f"/flywheel/files/reports/drift/dt={DAY}/report.html"
    assert f'href="{link}"' in page.text
    report = httpx.get(airflow_ui.url + link, headers=auth, timeout=60)
    assert report.status_code == 200 and "text/html" in report.headers["content-type"]
    assert "item_category" in report.text and len(report.text) > 100_000  # Evidently's page
    drift = httpx.get(f"{airflow_ui.url}/flywheel/api/drift", headers=auth, timeout=30).json()
    assert [d["date"] for d in drift] == [
        DAY.isoformat(),
        (DAY - dt.timedelta(days=1)).isoformat(),
        SUPPRESSED_DAY.isoformat(),
        NOTHING_DAY.isoformat(),
    ]
    models = httpx.get(f"{airflow_ui.url}/flywheel/api/models", headers=auth, timeout=60).json()
    # newest first, although v2 scored best: scores on different holdouts are not ranked
    assert [(m["version"], m["champion"]) for m in models] == [
        ("3", False),
        ("2", True),
        ("1", False),
    ]
    v3 = models[0]
    assert (v3["ndcg"], v3["champion_ndcg"], v3["champion_note"]) == (0.25, 0.27, "champion v2")
    assert v3["trigger"] == "new features 01-09" and models[1]["trigger"] == "drift on 01-08"
    assert v3["mlflow_url"].endswith(
        f":{airflow_ui.settings.mlflow_port}/#/runs/{airflow_ui.runs[2]}"
    )
    run_link = "/dags/train_recommender/runs/asset_triggered__2026-01-09T06%3A00%3A00%2B00%3A00"
    assert v3["airflow_url"] == run_link and f'href="{run_link}"' in page.text
    quality = httpx.get(f"{airflow_ui.url}/flywheel/api/quality", headers=auth, timeout=30).json()
    failed = next(q for q in quality if q["table"] == "events" and q["date"] == "2026-01-08")
    assert failed["report_key"] == "quality/reports/dt=2026-01-08/events.html"
    assert f'href="/flywheel/files/{QUARANTINED_CSV}" download' in page.text
    download = httpx.get(f"{airflow_ui.url}/flywheel/files/{QUARANTINED_CSV}", headers=auth)
    assert download.status_code == 200 and b"teleport" in download.content
    assert download.headers["content-disposition"].startswith("attachment;")
    ab = httpx.get(f"{airflow_ui.url}/flywheel/api/ab", headers=auth, timeout=30).json()
    arms = {v["variant"]: v for v in ab["variants"]}
    assert (ab["start"], ab["end"], ab["challenger_share"]) == ("2026-01-10", "2026-01-10", 0.2)
    assert arms["champion"]["model_versions"] == {"2": 40} and arms["champion"]["ctr"] == 0.25
    assert (
        arms["challenger"]["alias_version"] == "3" and arms["challenger"]["observed_share"] == 0.2
    )


def test_quarantined_raw_html_is_only_a_download(airflow_ui):
    """The hostile file is in quarantine byte-identical and comes back only as an attachment;
    the page's report link for that day opens the pipeline's own report."""
    auth = {"Authorization": f"Bearer {airflow_ui.token()}"}
    lake_root = airflow_ui.home / "lake"
    assert (lake_root / HOSTILE_KEY).read_bytes() == HOSTILE
    r = httpx.get(f"{airflow_ui.url}/flywheel/files/{HOSTILE_KEY}", headers=auth, timeout=30)
    assert r.status_code == 200 and r.content == HOSTILE
    assert r.headers["content-disposition"].startswith("attachment;")
    assert 'filename="validation_report.html"' in r.headers["content-disposition"]
    assert "html" not in r.headers["content-type"]
    assert r.headers["content-security-policy"] == "sandbox"
    assert r.headers["x-content-type-options"] == "nosniff"

    quality = httpx.get(f"{airflow_ui.url}/flywheel/api/quality", headers=auth, timeout=30).json()
    row = next(q for q in quality if q["date"] == QDAY.isoformat() and q["table"] == "events")
    assert row["success"] is False
    assert row["report_key"] == f"quality/reports/dt={QDAY}/events.html"
    page = httpx.get(f"{airflow_ui.url}/flywheel/", headers=auth, timeout=60).text
    link = f"/flywheel/files/{row['report_key']}"
    assert f'href="{link}"' in page  # the day's report is the pipeline's own
    # the hostile file appears once: as what lies in quarantine, a download
    assert page.count(HOSTILE_KEY) == 1 and f'href="/flywheel/files/{HOSTILE_KEY}" download' in page
    report = httpx.get(airflow_ui.url + link, headers=auth, timeout=30)
    assert report.status_code == 200 and "text/html" in report.headers["content-type"]
    assert "content-disposition" not in report.headers
    assert "Data quality" in report.text and "FAILED" in report.text
    assert "<script" not in report.text and "validation_report.html" in report.text
    # the row the gate set aside, shown with its reason and the user as validated/ names them
    (sample,) = row["sample_rows"]
    assert sample["value"] == "9.0" and sample["reason"]
    assert sample["user_id"].startswith("p_")  # a pseudonym, never the raw id the file holds
    assert "sample rows" in page and sample["user_id"] in page
    # GX's own Data Docs page of that validation, linked from the row and served sandboxed
    docs = row["data_docs_key"]
    assert docs.startswith(f"quality/data_docs/dt={QDAY}/events/") and docs.endswith(".html")
    assert f'href="/flywheel/files/{docs}"' in page
    gx = httpx.get(f"{airflow_ui.url}/flywheel/files/{docs}", headers=auth, timeout=30)
    assert gx.status_code == 200 and "text/html" in gx.headers["content-type"]
    assert gx.headers["content-security-policy"].startswith("sandbox")
    assert "Expectation Validation Result" in gx.text and "events_data" in gx.text  # GX's page


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"/flywheel/files/{HOSTILE_KEY}", 200),
        (f"/flywheel/files/quality/reports/dt={QDAY}/events.html", 200),
        ("/flywheel/files/quality/results/dt=2026-01-08/events.json", 200),
        (f"/flywheel/files/reports/drift/dt={DAY}/report.html", 200),
        ("/flywheel/files/reports/nothing-here.html", 404),
    ],
)
def test_every_file_answer_is_sandboxed_and_not_sniffed(airflow_ui, path, code):
    auth = {"Authorization": f"Bearer {airflow_ui.token()}"}
    r = httpx.get(airflow_ui.url + path, headers=auth, timeout=60)
    assert r.status_code == code
    csp = r.headers["content-security-policy"]
    assert csp.split()[0] == "sandbox" and "allow-same-origin" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/flywheel/files/reports/%2e%2e/secret.txt",
        "/flywheel/files/reports/%2e%2e/%2e%2e/secret.txt",
        "/flywheel/files/reports/..%2f..%2fsecret.txt",
        "/flywheel/files/%2Ftmp%2Fsecret.html",
        "/flywheel/files/reports/drift/..%5C..%5Csecret.txt",
        "/flywheel/files/airflow/airflow.cfg",
        "/flywheel/files/reports/_trigger_state.json",
        "/flywheel/files/reports/drift/dt=2026-01-09/report.html%00.txt",
    ],
)
def test_report_paths_cannot_escape_the_report_folders(airflow_ui, path):
    auth = {"Authorization": f"Bearer {airflow_ui.token()}"}
    r = httpx.get(airflow_ui.url + path, headers=auth, timeout=30)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert "top secret" not in r.text and "[core]" not in r.text


def _rows(selector: str) -> str:
    """JavaScript: the visible text of each row of the table at ``selector``."""
    return f"[...document.querySelector({selector!r}).tBodies[0].rows].map(r => r.innerText)"


PROBES = {
    "drift": _rows("#drift table"),
    "quality": "[...document.getElementById('quality-table').tBodies[0].rows]"
    ".map(r => [r.className, r.innerText])",
    "models": _rows("#models table"),
    "ab": _rows("#ab table"),
    "day_wrap": "getComputedStyle(document.querySelector('#quality-table td.day')).whiteSpace",
    # the filter, as a person uses it: tick "failures only", see which rows remain
    "filtered": "(() => { document.getElementById('failures-only').click(); return "
    "[...document.getElementById('quality-table').tBodies[0].rows]"
    ".filter(r => r.offsetParent !== null).map(r => r.className); })()",
}
SECTIONS = ("drift", "quality", "models", "ab")


def test_page_in_headless_chromium(airflow_ui, tmp_path):
    """What a signed-in person sees: every section's rows as the browser renders them (one
    PNG per section, kept in ``$FLYWHEEL_SCREENSHOTS`` when set, e.g. docs/img)."""
    from serving.ab import wilson_interval

    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    text, seen = chromium_page(
        f"{airflow_ui.url}/flywheel/",
        {"_token": airflow_ui.token()},
        tmp_path / "flywheel.png",
        probes=PROBES,
        sections={s: shots / f"flywheel-{s}.png" for s in SECTIONS},
    )
    for s in SECTIONS:
        assert 5_000 < (shots / f"flywheel-{s}.png").stat().st_size < 250_000
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for heading in ("Drift reports", "Data quality", "Model leaderboard", "A/B test"):
        assert heading in lines

    # drift: the decision from the emitted trigger; a day with nothing compared says so
    drift = {row.split("\t")[0]: row for row in seen["drift"]}
    assert drift[DAY.isoformat()].startswith(f"{DAY}\tDrift, retrain triggered")
    assert "Evidently report" in drift[DAY.isoformat()] and "of a reference day" in drift[str(DAY)]
    assert "2 of 2: item_category, user_views_1d" in drift[DAY.isoformat()]
    assert "\tNo drift\t" in drift[(DAY - dt.timedelta(days=1)).isoformat()]
    held = drift[SUPPRESSED_DAY.isoformat()]
    assert "\tDrift, suppressed: cooldown: last trigger on 2026-01-05" in held
    assert "retrain" not in held and "\t50%\t" in held
    nothing = drift[NOTHING_DAY.isoformat()]
    assert "Nothing compared" in nothing and "too little traffic" in nothing
    assert "No drift" not in nothing and "%" not in nothing

    # quality: failures first; two rules on one column are two distinct lines with their
    # offending values; the quarantined file is a download; the day does not wrap
    kinds = [kind for kind, _ in seen["quality"]]
    assert kinds == sorted(kinds) and kinds[0] == "failed" and "passed" in kinds
    first = seen["quality"][0][1]
    assert first.startswith("2026-01-08\tevents\tFailed — quarantined")
    for rule, example in (
        ("event_ts inside the data interval", "2026-01-03T10:00:00"),
        ("event_ts not in the future", "2031-05-05T00:00:00"),
    ):
        line = (
            f"{rule} — expect_column_values_to_be_between on column event_ts: 2 rows out of range"
        )
        assert line in first and f"offending values: {example}" in first
    assert "events-0001.csv" in first and "Quality report" in first
    assert seen["day_wrap"] == "nowrap"
    assert seen["filtered"] == [k for k in kinds if k == "failed"]

    # leaderboard: newest first; each row its own holdout, the champion on it, the baseline
    v3, v2, v1 = seen["models"]
    assert v3.startswith("v3 challenger\t2026-01-01 …\n2026-01-09\tnew features 01-09\t")
    assert "\t2026-01-09\n183 users\t0.2500\n[0.235, 0.265]\t0.2700 v2 (Δ -0.0200)\t" in v3
    assert "\trecent_popularity 0.2100\trejected NDCG@10 0.2500 vs champion 0.2700:" in v3
    assert "MLflow run" in v3 and "Airflow run" in v3 and v3.endswith("metrics (1)")
    assert v2.startswith("v2 ★ champion\t") and "drift on 01-08" in v2 and "0.3000 v1" in v2
    assert v1.startswith("v1\t") and "\tmanual\t" in v1 and "no champion yet" in v1
    assert "holdout_recall_at_20" not in text  # the metric wall is folded away

    # A/B: per arm the version, the traffic split, CTR with its Wilson interval
    ab = {row.split("\t")[0]: row for row in seen["ab"]}
    for variant, version, shown, clicked in AB_TRAFFIC:
        lo, hi = wilson_interval(clicked, shown)
        share = shown / sum(t[2] for t in AB_TRAFFIC)
        assert ab[variant].startswith(f"{variant}\tv{version} (alias now v{version})\t{shown}\t")
        assert f"{100 * share:.1f}% / {100 * share:.1f}%" in ab[variant]
        assert f"{100 * clicked / shown:.1f}%\t[{100 * lo:.1f}%, {100 * hi:.1f}%]" in ab[variant]
    assert "Challenger share configured: 20% of users." in text

    # without the cookie a person sees Airflow's refusal, not the data
    refused = chromium_render(f"{airflow_ui.url}/flywheel/", {}, tmp_path / "refused.png")
    assert "Not authenticated" in refused and "Drift reports" not in refused
