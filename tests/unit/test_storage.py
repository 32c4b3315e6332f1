"""The lake on a local folder and on S3 over real HTTP (moto server): same behaviour."""

import datetime as dt
import threading

import pyarrow as pa
import pytest

from core.errors import LakeError
from core.lake import Lake, LocalLake, S3Lake, partition_prefix

D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)


@pytest.fixture(params=["local", "s3"])
def any_lake(request, fw_home):
    if request.param == "local":
        return request.getfixturevalue("lake")
    return request.getfixturevalue("s3_lake")


def test_kinds(lake, s3_lake):
    assert isinstance(lake, LocalLake)
    assert isinstance(s3_lake, S3Lake)
    assert s3_lake.url("raw/x") == "s3://flywheel-test/lake/raw/x"


def test_write_read_list_partitions(any_lake: Lake):
    any_lake.write_bytes(partition_prefix("raw", "events", D2) + "a.csv", b"1")
    any_lake.write_bytes(partition_prefix("raw", "events", D1) + "b.parquet", b"2")
    any_lake.write_bytes("raw/events/_SUCCESS", b"")  # private names are never listed
    assert any_lake.read_bytes("raw/events/dt=2026-01-01/b.parquet") == b"2"
    assert any_lake.partitions("raw", "events") == [D1, D2]
    assert any_lake.partition_files("raw", "events", D2) == ["raw/events/dt=2026-01-02/a.csv"]
    assert any_lake.list("raw/") == [
        "raw/events/dt=2026-01-01/b.parquet",
        "raw/events/dt=2026-01-02/a.csv",
    ]
    assert any_lake.exists("raw/events/dt=2026-01-02/a.csv")
    assert not any_lake.exists("raw/events/dt=2026-01-03/a.csv")


def test_move_is_byte_identical(any_lake: Lake):
    payload = bytes(range(256)) * 1000
    any_lake.write_bytes("raw/events/dt=2026-01-01/x.parquet", payload)
    any_lake.move("raw/events/dt=2026-01-01/x.parquet", "quarantine/events/dt=2026-01-01/x.parquet")
    assert any_lake.read_bytes("quarantine/events/dt=2026-01-01/x.parquet") == payload
    assert any_lake.list("raw/") == []


def test_replace_partition_overwrites_and_prunes(any_lake: Lake):
    prefix = partition_prefix("validated", "events", D1)
    any_lake.replace_partition(prefix, {"part-00000.parquet": b"old", "part-00001.parquet": b"old"})
    any_lake.replace_partition(prefix, {"part-00000.parquet": b"new"})
    assert any_lake.list(prefix) == [prefix + "part-00000.parquet"]
    assert any_lake.read_bytes(prefix + "part-00000.parquet") == b"new"


def test_parquet_round_trip(any_lake: Lake):
    t = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    any_lake.write_parquet("validated/t/dt=2026-01-01/part-00000.parquet", t)
    any_lake.write_parquet("validated/t/dt=2026-01-02/part-00000.parquet", t)
    assert any_lake.read_parquet("validated/t/dt=2026-01-01/part-00000.parquet").equals(t)
    assert any_lake.read_parquet("validated/t/").num_rows == 6


def test_missing_key_is_a_clear_error(any_lake: Lake):
    with pytest.raises(LakeError, match="not found"):
        any_lake.read_bytes("raw/nothing.csv")
    with pytest.raises(LakeError, match="no Parquet files"):
        any_lake.read_parquet("validated/none/")


def test_local_write_is_atomic(lake: LocalLake):
    """A reader polling the key sees either nothing or the whole file, never a prefix of it."""
    key = "raw/events/dt=2026-01-01/big.bin"
    payload = b"x" * (8 << 20)
    seen: set[int] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            if lake.exists(key):
                seen.add(len(lake.read_bytes(key)))

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(5):
        lake.write_bytes(key, payload)
    stop.set()
    t.join()
    assert seen <= {len(payload)}
    assert lake.list("raw/") == [key]  # no temporaries left behind


def test_local_key_cannot_escape_root(lake: LocalLake):
    with pytest.raises(LakeError, match="escapes"):
        lake.write_bytes("../outside.txt", b"x")


def test_unreachable_endpoint_is_one_line(fw_home, monkeypatch):
    from tests.s3_server import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    lake = Lake.from_uri("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(LakeError, match="unreachable") as err:
        lake.list("raw/")
    assert "\n" not in str(err.value)


def test_missing_bucket(s3_endpoint):
    lake = Lake.from_uri("s3://no-such-bucket/p", endpoint_url=s3_endpoint)
    with pytest.raises(LakeError, match="does not exist"):
        lake.write_bytes("a", b"1")


def test_bad_uri():
    with pytest.raises(LakeError, match="unsupported lake URI"):
        Lake.from_uri("ftp://x/y")
    with pytest.raises(LakeError, match="names no bucket"):
        Lake.from_uri("s3:///prefix")


def test_local_write_is_durable_and_leaves_nothing_on_failure(lake, monkeypatch):
    """A failed write leaves no temp file; a successful one syncs the file and its folder."""
    import os

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    lake.write_bytes("raw/events/dt=2026-01-01/a.csv", b"1")
    assert len(synced) == 2  # the file, then the folder holding the rename

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(LakeError, match="No space left"):
        lake.write_bytes("raw/events/dt=2026-01-01/b.csv", b"2")
    folder = lake.path("raw/events/dt=2026-01-01")
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv"]  # no .tmp left behind
