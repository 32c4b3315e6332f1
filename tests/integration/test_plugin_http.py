"""The Flywheel UI plugin over real HTTP: a real ``airflow api-server`` with SimpleAuthManager.

Without a token → 401, with a forged one → 403, with one from ``POST /auth/token`` → the page
and the Evidently report; report paths that try to leave the report folders → 404. A day the
real gate quarantines, with a hostile raw ``validation_report.html`` among its files: the page
links the pipeline's own report, the hostile file is only a download, and every ``/files/``
answer is sandboxed and not sniffed. Then the page is rendered in headless Chromium (Debian's
``chromium``; the test installs nothing) with the ``_token`` cookie the Airflow UI sets, and the
test reads what a person would see.

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
            return text["result"]["value"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


# --- the plugin test ---------------------------------------------------------------------------

DAY = dt.date(2026, 1, 9)


def _seed_lake(home: Path) -> None:
    """A drift result with its real Evidently report, two quality results, a champion."""
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
    )
    store(lake, DAY, result, snapshot, settings=Settings(home=home))
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
                    "failed_expectations": []
                    if ok
                    else [
                        {
                            "expectation": "expect_column_values_to_be_in_set",
                            "column": "event_type",
                            "message": "3 rows with unknown event_type",
                            "examples": ["teleport"],
                        }
                    ],
                }
            ),
        )
    (home / "secret.txt").write_text("top secret")
    _seed_hostile_quarantine(lake)


QDAY = dt.date(2026, 1, 7)  # a day the real gate fails, a hostile raw file among its events
HOSTILE = b"<html><body><script>fetch('/api/v2/variables',{method:'POST'})</script></body></html>"
HOSTILE_KEY = f"quarantine/events/dt={QDAY}/validation_report.html"


def _seed_hostile_quarantine(lake) -> None:
    """``QDAY`` simulated and ingested for real, with an attacker's ``validation_report.html``
    placed in ``raw/events/dt=QDAY/``: the gate fails the events and quarantines them."""
    from ingestion.pipeline import ingest_day
    from simulation.simulator import simulate
    from validation.gate import GateFailure

    simulate(lake, days=1, users=40, items=15, seed=7, start=QDAY)
    lake.write_bytes(f"raw/events/dt={QDAY}/validation_report.html", HOSTILE)
    with pytest.raises(GateFailure):
        ingest_day(QDAY, lake=lake, now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))


def _register_models(home: Path) -> None:
    from core.settings import Settings
    from training.registry import configure_mlflow, experiment_id, model_name

    s = Settings(home=home)
    client = configure_mlflow(s)
    name = model_name(s)
    client.create_registered_model(name)
    for n, ndcg in enumerate((0.21, 0.34), start=1):
        run = client.create_run(
            experiment_id(client, s),
            tags={"data_window_start": "2026-01-01", "data_window_end": f"2026-01-0{6 + n}"},
        )
        client.log_metric(run.info.run_id, "holdout_ndcg_at_10", ndcg)
        client.log_metric(run.info.run_id, "holdout_recall_at_20", ndcg + 0.1)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run.info.run_id)
    client.set_registered_model_alias(name, CHAMPION, mv.version)


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("plugin") / "fw"
    af = AirflowProcesses(home)
    _seed_lake(home)
    _register_models(home)
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
    assert [d["date"] for d in drift] == [DAY.isoformat(), (DAY - dt.timedelta(days=1)).isoformat()]
    models = httpx.get(f"{airflow_ui.url}/flywheel/api/models", headers=auth, timeout=60).json()
    assert [(m["version"], m["champion"]) for m in models] == [("2", True), ("1", False)]
    quality = httpx.get(f"{airflow_ui.url}/flywheel/api/quality", headers=auth, timeout=30).json()
    failed = next(q for q in quality if q["table"] == "events")
    assert failed["report_key"] == "quality/reports/dt=2026-01-08/events.html"


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
    assert f'href="{link}"' in page and HOSTILE_KEY not in page
    report = httpx.get(airflow_ui.url + link, headers=auth, timeout=30)
    assert report.status_code == 200 and "text/html" in report.headers["content-type"]
    assert "content-disposition" not in report.headers
    assert "Data quality" in report.text and "FAILED" in report.text
    assert "<script" not in report.text and "validation_report.html" in report.text


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


def test_page_in_headless_chromium(airflow_ui, tmp_path):
    text = chromium_render(
        f"{airflow_ui.url}/flywheel/", {"_token": airflow_ui.token()}, tmp_path / "flywheel.png"
    )
    assert (tmp_path / "flywheel.png").stat().st_size > 10_000
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for heading in ("Drift reports", "Data quality", "Model leaderboard"):
        assert heading in lines
    drift_line = next(line for line in lines if line.startswith(DAY.isoformat()))
    assert "Drift — retraining triggered" in drift_line and "Evidently report" in drift_line
    assert any(line.startswith("2026-01-08") and "No drift" in line for line in lines)
    at = next(n for n, line in enumerate(lines) if line.startswith("2026-01-08\tevents"))
    assert "Failed" in lines[at]
    assert lines[at + 1].startswith("expect_column_values_to_be_in_set on event_type: 3 rows")
    assert lines[at + 2] == "Quality report"
    assert any(line.startswith("v2 ★ champion") for line in lines)
    assert "0.3400" in text  # the champion's NDCG@10
    # without the cookie a person sees Airflow's refusal, not the data
    refused = chromium_render(f"{airflow_ui.url}/flywheel/", {}, tmp_path / "refused.png")
    assert "Not authenticated" in refused and "Drift reports" not in refused
