"""The data-access seam (core.engine): what the DuckDB engine reads, how it is capped, how the
engines are chosen, and what a Ray task is given (without a cluster: tests/integration/
test_engine_ray.py runs one)."""

from __future__ import annotations

import datetime as dt
import os

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from core import engine as core_engine
from core.engine import DuckDBEngine, RayEngine, filesystem, get_engine, task_env
from core.errors import ConfigError, FlywheelError, LakeError
from core.lake import VALIDATED, Lake, S3Lake
from tests.fixtures.lake import write_validated

START = dt.date(2026, 3, 1)


@pytest.fixture
def days(lake) -> list[dt.date]:
    return write_validated(lake, START, 4, n_users=10, n_items=6, events_per_day=40, seed=3)


def test_files_prune_to_the_requested_days(lake, days):
    engine = get_engine(lake)
    files = engine.files(VALIDATED, "events", [days[1], days[3]])
    assert [f.rsplit("/", 2)[1] for f in files] == [f"dt={days[1]}", f"dt={days[3]}"]
    assert all(os.path.isfile(f) for f in files)  # paths on the engine's filesystem
    assert len(engine.files(VALIDATED, "events")) == 4
    assert engine.files(VALIDATED, "events", [START - dt.timedelta(days=1)]) == []


def test_dataset_reads_only_its_days_and_columns_with_the_day_column(lake, days):
    engine = get_engine(lake)
    ds = engine.dataset(VALIDATED, "events", [days[0], days[2]])
    assert isinstance(ds, pads.FileSystemDataset) and len(ds.files) == 2
    table = ds.to_table(columns=["user_id", "dt"])
    assert table.column_names == ["user_id", "dt"]
    assert table.schema.field("dt").type == pa.date32()
    assert set(table.column("dt").to_pylist()) == {days[0], days[2]}
    one_day = ds.to_table(columns=["event_id"], filter=pads.field("dt") == days[2])
    expected = lake.read("events", [days[2]], columns=["event_id"])
    assert sorted(one_day.column("event_id").to_pylist()) == sorted(
        expected.column("event_id").to_pylist()
    )


def test_dataset_with_a_schema_and_no_file_is_empty_without_one_an_error(lake, days):
    engine = get_engine(lake)
    schema = pa.schema([("user_id", pa.string()), ("value", pa.float64())])
    empty = engine.dataset(VALIDATED, "events", [START - dt.timedelta(days=9)], schema=schema)
    assert empty.to_table().num_rows == 0 and empty.schema.names == ["user_id", "value", "dt"]
    with pytest.raises(ConfigError, match="no Parquet files of validated/events"):
        engine.dataset(VALIDATED, "events", [START - dt.timedelta(days=9)])


def test_duckdb_sql_over_a_dataset_equals_the_lake(lake, days):
    engine = get_engine(lake)
    con = engine.connect()
    events = engine.dataset(VALIDATED, "events", days)  # noqa: F841 (DuckDB scans it by name)
    got = dict(con.execute("SELECT dt, count(*) FROM events GROUP BY dt").fetchall())
    assert got == {d: lake.read("events", [d]).num_rows for d in days}


def test_connect_honours_memory_limit_threads_and_temp_dir(lake, monkeypatch, tmp_path):
    spill = tmp_path / "spill"
    monkeypatch.setenv("FLYWHEEL_ENGINE_MEMORY_LIMIT", "64MB")
    monkeypatch.setenv("FLYWHEEL_ENGINE_THREADS", "1")
    monkeypatch.setenv("FLYWHEEL_ENGINE_TEMP_DIR", str(spill))
    con = get_engine(lake).connect()
    limit, threads, temp = con.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads'),"
        " current_setting('temp_directory')"
    ).fetchone()
    assert limit == "61.0 MiB"  # 64 MB as DuckDB prints it
    assert threads == 1 and temp == str(spill) and spill.is_dir()
    # a sort bigger than the cap (without a temp folder: "Out of Memory Error") spills and ends
    n = con.execute(
        "SELECT count(*) FROM (SELECT range AS i, md5(range::VARCHAR) AS h FROM range(1500000)"
        " ORDER BY h)"
    ).fetchone()[0]
    assert n == 1_500_000


def _square(x: int, offset: int = 0) -> int:
    return x * x + offset


def _limit_of_a_piece(x: int, lake_root: str) -> tuple[int, str, int]:
    con = DuckDBEngine(Lake.from_uri(lake_root)).connect()
    limit, threads = con.execute(
        "SELECT current_setting('memory_limit'), current_setting('threads')"
    ).fetchone()
    if x < 0:
        raise ValueError(f"piece {x} is bad")
    return x, limit, threads


@pytest.mark.parametrize("workers", ["1", "2", "3"])
def test_duckdb_map_runs_in_order_in_this_process(lake, monkeypatch, workers):
    monkeypatch.setenv("FLYWHEEL_ENGINE_WORKERS", workers)
    engine = get_engine(lake)
    assert isinstance(engine, DuckDBEngine)
    assert engine.map(_square, [3, 1, 2, 5, 4], offset=1) == [10, 2, 5, 26, 17]
    assert engine.map(_square, []) == []


def test_pieces_running_at_once_share_the_memory_limit_and_cpus(lake, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_ENGINE_MEMORY_LIMIT", "2GB")
    monkeypatch.setenv("FLYWHEEL_ENGINE_WORKERS", "2")
    out = get_engine(lake).map(_limit_of_a_piece, [1, 2, 3], lake_root=str(lake.root))
    assert [x for x, _, _ in out] == [1, 2, 3]
    assert {limit for _, limit, _ in out} == {"953.6 MiB"}  # 1000 MB each: 2 GB in all
    assert {t for _, _, t in out} == {max(1, (os.cpu_count() or 1) // 2)}
    whole = get_engine(lake).connect()  # outside the pieces: the whole limit
    assert whole.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "1.8 GiB"
    with pytest.raises(ValueError, match="piece -1 is bad"):  # the failure, not a summary
        get_engine(lake).map(_limit_of_a_piece, [1, -1, 3], lake_root=str(lake.root))


def test_memory_share_reads_duckdb_sizes():
    assert core_engine.memory_share("2GB", 1) == "2GB"
    assert core_engine.memory_share("3GB", 3) == "1000MB"
    assert core_engine.memory_share("1GiB", 2) == "536MB"
    with pytest.raises(ConfigError, match="expected a size like 2GB"):
        core_engine.memory_share("lots", 2)


def test_engines_are_chosen_by_name_and_settings(lake, monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown engine 'spark'.*\['duckdb', 'ray'\]"):
        get_engine(lake, name="spark")
    monkeypatch.setenv("FLYWHEEL_ENGINE", "ray")
    engine = get_engine(lake)
    assert isinstance(engine, RayEngine) and engine.name == "ray"
    assert engine.root == str(lake.root)  # building it connects to nothing


def test_s3_filesystem_from_a_lake_with_an_endpoint(s3_endpoint):
    lake = S3Lake("flywheel-test", "lake/x", endpoint_url=s3_endpoint)
    fs, root = filesystem(lake)
    assert isinstance(fs, pafs.S3FileSystem) and root == "flywheel-test/lake/x"
    first = START - dt.timedelta(days=2)  # across a month's end: Feb 27 .. Mar 2
    write_validated(lake, first, 4, n_users=5, n_items=3, events_per_day=7, seed=1)
    engine = get_engine(lake)
    files = engine.files(VALIDATED, "events", [START])
    assert files == [f"{root}/validated/events/dt={START}/part-00000.parquet"]
    some = [START + dt.timedelta(days=1), first + dt.timedelta(days=1)]  # Mar 2, Feb 28
    assert engine.files(VALIDATED, "events", some) == [
        f"{root}/validated/events/dt={d}/part-00000.parquet" for d in sorted(some)
    ]
    assert (
        len(engine.files(VALIDATED, "events", [first + dt.timedelta(days=k) for k in range(9)]))
        == 4
    )
    table = engine.dataset(VALIDATED, "events", [START]).to_table(columns=["event_id", "dt"])
    assert table.num_rows == 7 and set(table.column("dt").to_pylist()) == {START}
    bare = S3Lake("flywheel-test")
    assert filesystem(bare)[1] == "flywheel-test"


def test_a_ray_task_gets_the_submitters_settings_and_runs_duckdb(monkeypatch, tmp_path):
    lake = Lake.from_uri("s3://bucket/lake", endpoint_url="http://minio:9000")
    monkeypatch.setenv("FLYWHEEL_ENGINE", "ray")
    monkeypatch.setenv("FLYWHEEL_PROFILE", "production")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "flywheel-airflow")
    monkeypatch.setenv("FLYWHEEL_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    monkeypatch.delenv("FLYWHEEL_ENGINE_THREADS", raising=False)
    env = task_env(lake)
    assert env["FLYWHEEL_ENGINE"] == "duckdb" and env["FLYWHEEL_ENGINE_THREADS"] == "1"
    assert (
        env["FLYWHEEL_PROFILE"] == "production" and env["AWS_ACCESS_KEY_ID"] == "flywheel-airflow"
    )
    assert env["FLYWHEEL_LAKE_URI"] == "s3://bucket/lake"
    assert env["FLYWHEEL_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["PYTHONPATH"] == f"{tmp_path}{os.pathsep}/elsewhere"
    assert "UNRELATED_SECRET" not in env and "HOME" not in env
    assert RayEngine(lake).runtime_env() == {"env_vars": env}


def test_a_failed_ray_piece_names_the_piece_and_the_cause():
    class RayTaskError(Exception):  # what ray.get raises: the task's exception as .cause
        def __init__(self, cause):
            super().__init__(f"remote traceback...\n{cause}")
            self.cause = cause

    lake_err = core_engine._piece_error(
        "compute_piece", dt.date(2026, 3, 2), RayTaskError(LakeError("not found: s3://b/k"))
    )
    assert type(lake_err) is LakeError
    assert str(lake_err) == (
        "compute_piece failed on Ray for piece datetime.date(2026, 3, 2): not found: s3://b/k"
    )
    other = core_engine._piece_error("f", 7, RayTaskError(KeyError("user_id")))
    assert type(other) is FlywheelError
    assert str(other) == "f failed on Ray for piece 7: KeyError: 'user_id'"
    crashed = core_engine._piece_error("f", "a", RuntimeError("worker died\nmore"))
    assert str(crashed) == "f failed on Ray for piece 'a': RuntimeError: worker died"
    server = RuntimeError(
        "Initialization failure from server:\nTraceback (most recent ...):\n"
        '  File "x.py"\nValueError: bad token'
    )
    assert core_engine._first_line(server) == (
        "Initialization failure from server: ValueError: bad token"
    )


def test_a_ray_client_server_that_failed_to_start_is_tried_once_more(monkeypatch):
    """Ray Client's server starts a server per connection, and that start fails now and then
    ("Starting Ray client server failed"): connect_ray tries once more; any other failure (a
    wrong token, a host that is down) is a ConfigError at once, naming the address."""
    import ray

    monkeypatch.setenv("FLYWHEEL_RAY_ADDRESS", "ray://127.0.0.1:1")
    monkeypatch.setattr(core_engine.time, "sleep", lambda s: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(core_engine, "_RAY", {})
    calls = []

    def flaky(address=None, **kwargs):
        calls.append(address)
        if len(calls) == 1:
            raise ConnectionError(
                "Initialization failure from server: RuntimeError: Starting Ray client server "
                "failed. See ray_client_server_23000.err for detailed logs."
            )

    monkeypatch.setattr(ray, "init", flaky)
    assert core_engine.connect_ray() is ray and calls == ["ray://127.0.0.1:1"] * 2

    def down(address=None, **kwargs):
        calls.append(address)
        raise ConnectionError("ray client connection timeout")

    calls.clear()
    monkeypatch.setattr(core_engine, "_RAY", {})
    monkeypatch.setattr(ray, "init", down)
    with pytest.raises(ConfigError, match=r"cannot connect to Ray at ray://127\.0\.0\.1:1"):
        core_engine.connect_ray()
    assert len(calls) == 1
