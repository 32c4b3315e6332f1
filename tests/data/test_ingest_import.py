"""``flywheel import``: MovieLens and CSV exports become raw partitions that pass the gate."""

from __future__ import annotations

import datetime as dt

import pytest
from typer.testing import CliRunner

from core.errors import ContractError
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
    assert "6 items (6 with genres)" in res.output
    assert "suggested training window: all" in res.output
    assert "flywheel train --set data.window_days=all" in res.output
    lake = get_lake()
    assert [d.isoformat() for d in lake.partitions("raw", "events")] == [
        "2026-01-01",
        "2026-01-02",
        "2026-01-03",
    ]
    items = lake.read_parquet("raw/items/")
    assert set(items.column("category").to_pylist()) == {"Drama|Comedy"}  # every genre
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
    from ingestion.importers import import_file

    with pytest.raises(
        ContractError, match=r"missing column\(s\) \['event_ts', 'item_id', 'user_id'\]"
    ):
        import_file(get_lake(), path, "csv")
    with pytest.raises(ContractError, match="not an ISO 3166-1"):
        import_file(get_lake(), path, "movielens", country="XX")


def test_ml100k_genres_and_users_file(fw_home, tmp_path):
    """u.item's one-hot genres become one A|B category; u.user's ages become age bands."""
    from ingestion.importers import ML100K_GENRES

    udata = tmp_path / "u.data"
    udata.write_text(
        "".join(f"{u}\t{i}\t4\t{T0 + 60 * (u * 3 + i)}\n" for u in (1, 2, 3) for i in (1, 2, 3))
    )

    def flags(*names):
        return "|".join("1" if g in names else "0" for g in ML100K_GENRES)

    uitem = tmp_path / "u.item"
    toy = flags("Animation", "Children's", "Comedy")
    bond = flags("Action", "Adventure", "Thriller")
    uitem.write_bytes(
        (
            f"1|Toy Story (1995)|01-Jan-1995||http://x|{toy}\n"
            f"2|GoldenEye (1995)|01-Jan-1995||http://x|{bond}\n"
            f"3|Caf\xe9 (1995)|01-Jan-1995||http://x|{flags('unknown')}\n"
        ).encode("latin-1")
    )
    uuser = tmp_path / "u.user"
    uuser.write_text("1|17|M|student|85711\n2|53|F|other|94043\n")  # user 3 not listed
    res = CliRunner().invoke(
        app, ["import", str(udata), "--movies", str(uitem), "--users", str(uuser)]
    )
    assert res.exit_code == 0, res.output
    assert "3 items (2 with genres), 3 users (2 with an age)" in res.output
    lake = get_lake()
    items = lake.read_parquet("raw/items/").to_pandas().set_index("item_id")["category"]
    assert items.to_dict() == {
        "1": "Animation|Children's|Comedy",
        "2": "Action|Adventure|Thriller",
        "3": "unknown",
    }
    users = lake.read_parquet("raw/users/").to_pandas().set_index("user_id")
    assert users["age_bucket"].to_dict() == {"1": "18-24", "2": "45-54", "3": "25-34"}
    assert set(users["country"]) == {"US"}  # MovieLens has no country: the --country default
    assert ingest_day(dt.date(2026, 1, 1), lake=lake, now=NOW)["rows"] == 9


def test_movies_csv_and_users_dat_formats(tmp_path):
    from ingestion.importers import read_movies, read_users

    movies = tmp_path / "movies.csv"
    movies.write_text(
        'movieId,title,genres\n1,"Toy Story (1995)",Adventure|Animation|Children\n'
        "2,Nothing,(no genres listed)\n"
    )
    assert read_movies(movies) == {"1": "Adventure|Animation|Children", "2": "unknown"}
    dat = tmp_path / "movies.dat"
    dat.write_bytes("1::Toy Story (1995)::Animation|Comedy\n2::Caf\xe9::Drama\n".encode("latin-1"))
    assert read_movies(dat) == {"1": "Animation|Comedy", "2": "Drama"}
    users = tmp_path / "users.dat"
    users.write_text("1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    assert read_users(users) == {"1": "18-24", "2": "55-64", "3": "25-34"}
    bad = tmp_path / "u.user"
    bad.write_text("1|23|M|student|85711\nalice.raw|old|M|student|85711\n")
    with pytest.raises(
        ContractError, match=r"u.user: column age is not a number of years on row\(s\) \[2\]"
    ) as failure:
        read_users(bad)
    assert "alice.raw" not in str(failure.value)  # rows by number: no raw user id


def test_suggested_window_follows_the_data():
    import pandas as pd

    from ingestion.importers import WINDOW_MIN_EVENTS, suggest_window

    day = pd.Timestamp("2026-01-01", tz="UTC")
    sparse = pd.Series([day + pd.Timedelta(days=3 * k) for k in range(500)])
    assert suggest_window(sparse)["window_days"] == "all"  # a small history: all of it
    # a dense one: 30,000 events a day for 60 days -> the newest 100,000 fit in 4 days -> 14
    dense = pd.Series(pd.date_range(day, periods=60, freq="D").repeat(30_000))
    w = suggest_window(dense)
    assert w["window_days"] == 14 and w["events"] == 1_800_000 > WINDOW_MIN_EVENTS
    assert "the last 14 days hold 420,000 of 1,800,000 events" in w["reason"]
    # 3,000 a day: the newest 100,000 span 34 days -> whole weeks: 35
    mid = pd.Series(pd.date_range(day, periods=120, freq="D").repeat(3_000))
    assert suggest_window(mid)["window_days"] == 35


def test_missing_files_are_one_clear_error(lake, tmp_path):
    from core.errors import ContractError
    from ingestion.importers import import_file

    with pytest.raises(ContractError, match="export file .*nope.csv' does not exist"):
        import_file(lake, tmp_path / "nope.csv", "movielens")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,2,4.0,964982703\n")
    with pytest.raises(ContractError, match="--movies file"):
        import_file(lake, ratings, "movielens", movies=tmp_path / "movies.csv")
