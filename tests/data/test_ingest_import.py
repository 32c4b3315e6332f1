"""``flywheel import``: MovieLens and CSV exports become raw partitions that pass the gate."""

from __future__ import annotations

import datetime as dt

import pytest
from typer.testing import CliRunner

from core.lake import get_lake
from flywheel.cli import app
from ingestion.pipeline import ingest_day

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DAY = 86_400
T0 = 1_767_225_600  # 2026-01-01 00:00:00 UTC


@pytest.fixture
def udata(tmp_path):
    """A small u.data (tab-separated user item rating timestamp) over three days."""
    rows = []
    for d in range(3):
        for u in range(4):
            for i in range(3):
                rows.append(
                    f"{u + 1}\t{(u + i + d) % 6 + 10}\t{1 + (u + i) % 5}\t{T0 + d * DAY + 3600 * u + i}"
                )
    path = tmp_path / "u.data"
    path.write_text("\n".join(rows) + "\n")
    movies = tmp_path / "movies.csv"
    movies.write_text(
        "movieId,title,genres\n" + "".join(f"{m},Film {m},Drama|Comedy\n" for m in range(10, 16))
    )
    return path, movies


def test_movielens_import_then_ingest(fw_home, udata):
    path, movies = udata
    res = CliRunner().invoke(
        app,
        ["import", str(path), "--format", "movielens", "--movies", str(movies), "--country", "FR"],
    )
    assert res.exit_code == 0, res.output
    assert "imported 36 events" in res.output and "2026-01-01 .. 2026-01-03" in res.output
    lake = get_lake()
    assert [d.isoformat() for d in lake.partitions("raw", "events")] == [
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
    ]
    items = lake.read_parquet("raw/items/")
    assert set(items.column("category").to_pylist()) == {"Drama"}
    assert set(lake.read_parquet("raw/users/").column("country").to_pylist()) == {"FR"}
    ev = lake.read_parquet("raw/events/")
    assert set(ev.column("event_type").to_pylist()) == {"rating"}
    # deterministic ids: importing again rewrites the same files
    before = {k: lake.read_bytes(k) for k in lake.list("raw/")}
    assert (
        CliRunner()
        .invoke(app, ["import", str(path), "--movies", str(movies), "--country", "FR"])
        .exit_code
        == 0
    )
    assert {k: lake.read_bytes(k) for k in lake.list("raw/")} == before
    for d in range(3):
        assert (
            ingest_day(dt.date(2026, 1, 1) + dt.timedelta(days=d), lake=lake, now=NOW)["rows"] == 12
        )


def test_csv_import_with_mapping(fw_home, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        "uid,product,kind,ts\n"
        "alice,p1,view,2026-01-01T10:00:00Z\n"
        "bob,p2,click,2026-01-01T11:00:00Z\n"
        "alice,p2,purchase,2026-01-02T09:00:00Z\n"
    )
    res = CliRunner().invoke(
        app,
        [
            "import",
            str(path),
            "--format",
            "csv",
            "--mapping",
            "uid=user_id,product=item_id,kind=event_type,ts=event_ts",
        ],
    )
    assert res.exit_code == 0, res.output
    lake = get_lake()
    assert ingest_day(dt.date(2026, 1, 1), lake=lake, now=NOW)["rows"] == 2
    assert ingest_day(dt.date(2026, 1, 2), lake=lake, now=NOW)["rows"] == 1


def test_bad_import_is_one_line(fw_home, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("who,what\nalice,p1\n")
    from core.errors import ContractError
    from ingestion.importers import import_file

    with pytest.raises(
        ContractError, match=r"missing column\(s\) \['event_ts', 'item_id', 'user_id'\]"
    ):
        import_file(get_lake(), path, "csv")
    with pytest.raises(ContractError, match="not an ISO 3166-1"):
        import_file(get_lake(), path, "movielens", country="XX")
