"""The production engine for real: a Ray cluster (a head and a worker node, each its own
``ray start`` process, token authentication on) reading an S3 lake on a moto server over HTTP.

The test process is a Ray Client driver (``ray://``), as Airflow's workers are in compose. One
simulated month is written once and copied to a second lake prefix; a stage run with
``FLYWHEEL_ENGINE=duckdb`` on one prefix and ``FLYWHEEL_ENGINE=ray`` on the other must write the
same partitions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from core.engine import DuckDBEngine, RayEngine, get_engine
from core.errors import ConfigError
from core.lake import FEATURES, VALIDATED, Lake
from core.names import VIEWS
from features import store as fstore
from tests.fixtures.lake import write_simulated
from tests.s3_server import free_port, moto_s3

pytestmark = pytest.mark.slow

BUCKET = "flywheel-ray"
DAYS = 30
START = dt.date(2026, 1, 5)
RAY = str(Path(sys.executable).parent / "ray")


def _wait(check, timeout: float, what: str, procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a Ray process exited ({p.args[:3]}: {p.returncode})")
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: not ready after {timeout}s")


@pytest.fixture(scope="module")
def ray_cluster():
    """``ray start --head`` and ``ray start --address`` (a second node), one CPU each."""
    repo = Path.cwd()
    temp = tempfile.mkdtemp(prefix="fwray", dir="/tmp")  # short: Ray's sockets live there
    port, client_port = free_port(), free_port()
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "120",  # a loaded 2-core machine
        "PYTHONPATH": str(repo),
    }
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    log = open(Path(temp) / "cluster.log", "ab")  # noqa: SIM115 (closed below)
    try:
        procs.append(
            subprocess.Popen(
                [RAY, "start", "--head", *common, "--port", str(port), "--temp-dir", f"{temp}/h"]
                + ["--ray-client-server-port", str(client_port), "--include-dashboard", "false"],
                env=env,
                cwd=repo,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        gcs = f"127.0.0.1:{port}"
        ok = lambda *args: subprocess.run([RAY, *args], env=env, capture_output=True, text=True)  # noqa: E731
        _wait(lambda: ok("health-check", "--address", gcs).returncode == 0, 90, "head", procs)
        procs.append(
            subprocess.Popen(
                [RAY, "start", *common, "--address", gcs, "--temp-dir", f"{temp}/w"],
                env=env,
                cwd=repo,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        _wait(
            lambda: ok("status", "--address", gcs).stdout.count(" 1 node_") == 2,
            90,
            "worker node",
            procs,
        )
        yield {"address": f"ray://127.0.0.1:{client_port}", "token": token}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for p in reversed(procs):  # each `ray start` leads its own process group
            p.terminate()
            try:
                p.wait(5)  # it would drain for 30 s: nothing here needs draining
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_month(ray_cluster, tmp_path_factory):
    """A simulated month in ``s3://flywheel-ray/duck`` and the same validated/ in ``.../ray``;
    the process's environment: the S3 endpoint, test credentials, Ray's token."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(key, "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield from _month(mp, ray_cluster, tmp_path_factory)


def _month(mp: pytest.MonkeyPatch, ray_cluster: dict, tmp_path_factory):
    with moto_s3(BUCKET) as endpoint:
        for key, value in {
            "FLYWHEEL_S3_ENDPOINT_URL": endpoint,
            "FLYWHEEL_HOME": str(tmp_path_factory.mktemp("fw")),
            "FLYWHEEL_RAY_ADDRESS": ray_cluster["address"],
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": ray_cluster["token"],
        }.items():
            mp.setenv(key, value)
        duck = Lake.from_uri(f"s3://{BUCKET}/duck", endpoint_url=endpoint)
        last = write_simulated(duck, days=DAYS, users=150, items=60, seed=11, start=START)
        on_ray = Lake.from_uri(f"s3://{BUCKET}/ray", endpoint_url=endpoint)
        for key in duck.list(f"{VALIDATED}/"):
            on_ray.write_bytes(key, duck.read_bytes(key))
        days = [START + dt.timedelta(days=k) for k in range((last - START).days + 1)]
        yield {"duck": duck, "ray": on_ray, "days": days, "mp": mp}


def _use(mp: pytest.MonkeyPatch, lake: Lake, engine: str) -> None:
    mp.setenv("FLYWHEEL_LAKE_URI", lake.uri)
    mp.setenv("FLYWHEEL_ENGINE", engine)


def probe(day: dt.date) -> dict:
    """A piece: DuckDB SQL over the engine's dataset of one day, and where it ran."""
    engine = get_engine()
    con = engine.connect()
    events = engine.dataset(VALIDATED, "events", [day])  # noqa: F841 (scanned by name)
    rows, users, value, days = con.execute(
        "SELECT count(*), count(DISTINCT user_id), round(sum(value), 6), list(DISTINCT dt)"
        " FROM events"
    ).fetchone()
    return {
        "result": (day, rows, users, value, days),
        "pid": os.getpid(),
        "engine": engine.name,
        "lake": engine.lake.uri,
    }


def test_ray_map_runs_pieces_on_ray_workers_with_the_same_results(s3_month):
    import ray

    days = s3_month["days"][:6]
    _use(s3_month["mp"], s3_month["ray"], "ray")
    engine = get_engine()
    assert isinstance(engine, RayEngine)
    on_ray = engine.map(probe, days)
    in_process = DuckDBEngine(s3_month["ray"]).map(probe, days)
    assert [r["result"] for r in on_ray] == [r["result"] for r in in_process]
    assert ray.is_initialized() and ray.util.client.ray.is_connected()  # a Ray Client driver
    assert all(r["pid"] != os.getpid() for r in on_ray)  # worker processes, not this one
    assert {r["engine"] for r in on_ray} == {"duckdb"}  # inside a task: DuckDB on its node
    assert {r["lake"] for r in on_ray} == {s3_month["ray"].uri}
    for day, r in zip(days, on_ray, strict=True):  # what the lake holds, read another way
        table = s3_month["ray"].read("events", [day])
        assert r["result"][:3] == (day, table.num_rows, len(set(table.column("user_id"))))
        assert r["result"][4] == [day]


def test_a_failed_piece_on_ray_names_the_piece_and_the_cause(s3_month):
    _use(s3_month["mp"], s3_month["ray"], "ray")
    missing = START - dt.timedelta(days=3)
    with pytest.raises(ConfigError) as err:
        get_engine().map(probe, [s3_month["days"][0], missing])
    assert str(err.value) == (
        f"probe failed on Ray for piece {missing!r}: "
        "no Parquet files of validated/events for the requested days"
    )


def ray_data_piece(days: list[dt.date]) -> dict:
    """A piece that reads through Ray Data (Ray Data runs on the cluster, not over Ray Client)."""
    engine = RayEngine()
    ds = engine.ray_dataset(VALIDATED, "events", days, columns=["user_id", "value"])
    rows = ds.take_all()
    return {"rows": len(rows), "columns": sorted(rows[0]), "value": sum(r["value"] for r in rows)}


def test_ray_data_reads_the_s3_lake_on_the_cluster(s3_month):
    lake, days = s3_month["ray"], s3_month["days"][:3]
    _use(s3_month["mp"], lake, "ray")
    with pytest.raises(ConfigError, match="Ray Data does not run over Ray Client"):
        get_engine().ray_dataset(VALIDATED, "events", days)
    [got] = get_engine().map(ray_data_piece, [days])
    expected = [lake.read("events", [d], columns=["user_id", "value"]) for d in days]
    assert got["rows"] == sum(t.num_rows for t in expected)
    assert got["columns"] == ["user_id", "value"]
    assert round(got["value"], 6) == round(
        sum(sum(t.column("value").to_pylist()) for t in expected), 6
    )


def test_features_of_a_month_are_the_same_on_both_engines(s3_month):
    """The stage itself (features.store.compute_days) on each engine, partitions compared."""
    import ray

    mp, days = s3_month["mp"], s3_month["days"]
    if ray.is_initialized():
        ray.shutdown()  # whether the stage connects to Ray is part of what is checked
    _use(mp, s3_month["duck"], "duckdb")
    on_duckdb = fstore.compute_days(days)
    assert not ray.is_initialized()
    _use(mp, s3_month["ray"], "ray")
    on_ray = fstore.compute_days(days)
    assert ray.is_initialized()  # the stage submitted its days to the cluster
    assert on_ray == on_duckdb and on_ray["days"] == DAYS
    for view in VIEWS:
        assert s3_month["ray"].partitions(FEATURES, view) == days
        for day in days:
            a = s3_month["duck"].read(view, [day], zone=FEATURES)
            b = s3_month["ray"].read(view, [day], zone=FEATURES)
            assert a.num_rows > 0 and a.equals(b), f"{view} {day} differs between engines"
