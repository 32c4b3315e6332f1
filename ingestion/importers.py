"""Bring your own data: turn a ratings or events export into raw partitions of the contract.

* ``movielens``: ``u.data`` (tab-separated ``user item rating timestamp``, no header),
  ``ratings.dat`` (``::``-separated) or ``ratings.csv`` (header
  ``userId,movieId,rating,timestamp``). Every row becomes a ``rating`` event with ``value`` =
  rating; items get every genre from a movies file when given (``movies.csv``
  ``movieId,title,genres``, ``movies.dat`` or ``u.item``'s one-hot genres) as one
  ``|``-joined ``category`` (``Action|Adventure``; ``unknown`` without genres or file); price 0.
  A users file (``u.user`` ``id|age|gender|occupation|zip`` or ``users.dat``
  ``id::gender::age::occupation::zip``) gives users their ``age_bucket``; MovieLens has no
  country (every user gets ``--country``), and gender, occupation and zip have no contract
  column (dropped).
* ``csv``: any UTF-8 CSV of events; ``mapping`` renames its columns onto the contract
  (``uid=user_id,ts=event_ts``). ``user_id``, ``item_id`` and ``event_ts`` are required;
  ``event_type`` defaults to ``view``, ``value`` to 1.0 (the rating for ``rating`` events).

Items are written to the partition of the day they are first seen (``created_ts``), users to
the day of their first event (``signup_ts``). Event ids are derived deterministically from the
row content, so importing the same file twice gives the same ids (and the same files: each
partition gets ``import-<source>.parquet``, overwritten on re-import).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from core.contract import AGE_BUCKETS, EVENT_TYPES, ISO_COUNTRIES, TABLES
from core.errors import ContractError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from core.lake import Lake

GENRE_SEP = "|"  # one ``category`` string holds every genre of an item, in the file's order
UNKNOWN_CATEGORY = "unknown"
NO_GENRE = frozenset({"(no genres listed)", "unknown"})  # MovieLens' "no genre" markers
AGE_UPPER = (24, 34, 44, 54, 64, 200)  # inclusive upper age of each of AGE_BUCKETS
ML1M_UNDER_18 = 1  # users.dat's age code for "under 18" (the others are their band's lower end)
EPOCH = dt.date(1970, 1, 1)
WRITE_THREADS = 8  # raw files written at once (I/O bound: fsync, S3 round trips)
WINDOW_MIN_EVENTS = 200_000  # below this, train on every event (a window only throws data away)
WINDOW_TARGET_EVENTS = 100_000  # enough interactions for the towers; more costs time, not quality
WINDOW_MIN_DAYS = 14  # two weekly cycles at least
ML100K_GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"a=user_id,b=item_id"`` → ``{"a": "user_id", "b": "item_id"}``."""
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ContractError(f"mapping entry {part!r} is not src=dst")
        src, dst = (s.strip() for s in part.split("=", 1))
        if dst not in TABLES["events"].column_names:
            raise ContractError(
                f"mapping target {dst!r} is not an events column {TABLES['events'].column_names}"
            )
        out[src] = dst
    return out


def _read_text_table(path: Path, **kwargs) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path, encoding="utf-8", **kwargs)
    except UnicodeDecodeError:
        try:
            return pd.read_csv(path, encoding="latin-1", **kwargs)  # MovieLens 100k titles
        except Exception as exc:
            raise ContractError(f"{path}: cannot read ({exc})") from None
    except FileNotFoundError:
        raise ContractError(f"{path}: no such file") from None
    except Exception as exc:
        raise ContractError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None


def read_movielens(path: Path) -> pd.DataFrame:
    """Ratings as ``user_id, item_id, value, event_ts`` (strings, float, UTC timestamps)."""
    import pandas as pd

    with open(path, "rb") as fh:
        head = fh.readline().decode("utf-8", "replace")
    if head.lower().startswith("userid"):
        df = _read_text_table(path)
        df = df.rename(columns={"userId": "user_id", "movieId": "item_id", "rating": "value"})
    else:
        sep = "\t" if "\t" in head else ("::" if "::" in head else ",")
        df = _read_text_table(
            path,
            sep=sep,
            header=None,
            names=["user_id", "item_id", "value", "timestamp"],
            engine="python" if sep == "::" else "c",
        )
    missing = {"user_id", "item_id", "value", "timestamp"} - set(df.columns)
    if missing:
        raise ContractError(f"{path}: not a MovieLens ratings file (missing {sorted(missing)})")
    out = pd.DataFrame(
        {
            "user_id": df["user_id"].astype(str),
            "item_id": df["item_id"].astype(str),
            "event_type": "rating",
            "value": pd.to_numeric(df["value"], errors="coerce").astype("float64"),
            "event_ts": pd.to_datetime(
                pd.to_numeric(df["timestamp"], errors="coerce"), unit="s", utc=True
            ),
        }
    )
    return out


def _genres(names) -> str:
    """Genre names as one ``category``: ``|``-joined in the file's order, ``unknown`` when none."""
    kept = [n for n in names if n and n not in NO_GENRE]
    return GENRE_SEP.join(dict.fromkeys(kept)) or UNKNOWN_CATEGORY


def read_movies(path: Path) -> dict[str, str]:
    """item id → category (every genre, ``|``-joined) from ``movies.csv``, ``movies.dat`` or ``u.item``."""
    import pandas as pd

    with open(path, "rb") as fh:
        head = fh.readline().decode("utf-8", "replace")
    if head.lower().startswith("movieid"):
        df = _read_text_table(path, dtype=str, keep_default_na=False)
        missing = {"movieId", "genres"} - set(df.columns)
        if missing:
            raise ContractError(f"{path}: not a MovieLens movies file (missing {sorted(missing)})")
        ids, genres = df["movieId"], df["genres"]
    elif "::" in head:  # movies.dat: id::title::Genre|Genre
        lines = Path(path).read_bytes().decode("latin-1").splitlines()
        parts = [line.split("::") for line in lines if line.strip()]
        if any(len(p) < 3 for p in parts):
            raise ContractError(f"{path}: not a MovieLens movies.dat (id::title::genres)")
        ids = pd.Series([p[0] for p in parts])
        genres = pd.Series([p[-1] for p in parts])
    else:  # u.item: id|title|release|video release|url|19 genre flags
        df = _read_text_table(path, sep="|", header=None, dtype=str, keep_default_na=False)
        if df.shape[1] < len(ML100K_GENRES) + 1:
            raise ContractError(
                f"{path}: not a MovieLens u.item ({df.shape[1]} columns, expected the "
                f"{len(ML100K_GENRES)} genre flags last)"
            )
        flags = df.iloc[:, -len(ML100K_GENRES) :].to_numpy() == "1"
        names = [[g for g, on in zip(ML100K_GENRES, row, strict=True) if on] for row in flags]
        return dict(zip(df.iloc[:, 0].astype(str), map(_genres, names), strict=True))
    cats = [_genres(g.split("|")) for g in genres.astype(str)]
    return dict(zip(ids.astype(str).str.strip(), cats, strict=True))


def age_bucket_of(age: float) -> str:
    """A real age in years → the contract's band (under 18 joins the youngest, 18-24)."""
    for bucket, upper in zip(AGE_BUCKETS, AGE_UPPER, strict=True):
        if age <= upper:
            return bucket
    return AGE_BUCKETS[-1]


def read_users(path: Path) -> dict[str, str]:
    """user id → age bucket from ``u.user`` (``id|age|gender|occupation|zip``) or ``users.dat``.

    ``users.dat`` (MovieLens 1M, ``id::gender::age::occupation::zip``) codes the age as the
    lower end of its band (1 = under 18, 18, 25, 35, 45, 50, 56 = 56+).
    """
    import pandas as pd

    with open(path, "rb") as fh:
        head = fh.readline().decode("utf-8", "replace")
    if "::" in head:
        lines = Path(path).read_bytes().decode("latin-1").splitlines()
        parts = [line.split("::") for line in lines if line.strip()]
        ids = [p[0] for p in parts]
        ages = pd.to_numeric(pd.Series([p[2] if len(p) > 2 else "" for p in parts]), "coerce")
        ages = ages.where(ages != ML1M_UNDER_18, 17.0)
    else:
        df = _read_text_table(path, sep="|", header=None, dtype=str, keep_default_na=False)
        if df.shape[1] < 2:
            raise ContractError(
                f"{path}: not a MovieLens users file (id|age|gender|occupation|zip)"
            )
        ids = df.iloc[:, 0].str.strip().tolist()
        ages = pd.to_numeric(df.iloc[:, 1], errors="coerce")
    # rows named by number, not by user id: an error message must not carry raw ids
    bad = [n for n, a in enumerate(ages, 1) if not (a == a and 0 < a < 130)]
    if bad:
        raise ContractError(
            f"{path}: column age is not a number of years on row(s) {bad[:5]} "
            "(expected u.user id|age|gender|occupation|zip or users.dat)"
        )
    return {str(i): age_bucket_of(float(a)) for i, a in zip(ids, ages, strict=True)}


def read_events_csv(path: Path, mapping: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    df = _read_text_table(path, dtype=str, keep_default_na=False).rename(columns=mapping)
    missing = {"user_id", "item_id", "event_ts"} - set(df.columns)
    if missing:
        raise ContractError(f"{path}: missing column(s) {sorted(missing)} (use --mapping src=dst)")
    ts = df["event_ts"]
    numeric = pd.to_numeric(ts, errors="coerce")
    if numeric.notna().all():
        event_ts = pd.to_datetime(numeric, unit="s", utc=True)
    else:
        event_ts = pd.to_datetime(ts, utc=True, errors="coerce", format="ISO8601")
    if event_ts.isna().any():
        bad = ts[event_ts.isna()].head(3).tolist()
        raise ContractError(f"{path}: column event_ts has unparseable timestamps, e.g. {bad}")
    etype = df["event_type"] if "event_type" in df else pd.Series("view", index=df.index)
    value = (
        pd.to_numeric(df["value"], errors="coerce")
        if "value" in df
        else pd.Series(1.0, index=df.index)
    )
    out = pd.DataFrame(
        {
            "user_id": df["user_id"],
            "item_id": df["item_id"],
            "event_type": etype,
            "value": value.astype("float64"),
            "event_ts": event_ts,
        }
    )
    if "event_id" in df:
        out.insert(0, "event_id", df["event_id"])
    return out


def _derive_event_ids(df: pd.DataFrame, source: str) -> pd.Series:
    """Deterministic ids: a hash of the row's content plus its occurrence number."""
    import pandas as pd

    key = (
        df["user_id"]
        + "\x1f"
        + df["item_id"]
        + "\x1f"
        + df["event_type"]
        + "\x1f"
        + df["event_ts"].astype("int64").astype(str)
    )
    occurrence = key.groupby(key).cumcount().astype(str)
    return pd.Series(
        [
            f"{source}-" + hashlib.sha1(f"{k}\x1f{o}".encode()).hexdigest()[:20]
            for k, o in zip(key, occurrence, strict=True)
        ],
        index=df.index,
    )


def import_file(
    lake: Lake,
    path: Path | str,
    fmt: str,
    mapping: str | dict | None = None,
    movies: Path | str | None = None,
    country: str = "US",
    age_bucket: str = "25-34",
    users: Path | str | None = None,
) -> dict:
    """Write raw partitions for ``path``; returns counts, the days written and a window."""
    path = Path(path)
    for what, given in (("export", path), ("--movies", movies), ("--users", users)):
        if given is not None and not Path(given).is_file():
            raise ContractError(f"{what} file {str(given)!r} does not exist (or is not a file)")
    if country not in ISO_COUNTRIES:
        raise ContractError(f"--country {country!r} is not an ISO 3166-1 alpha-2 code")
    if age_bucket not in AGE_BUCKETS:
        raise ContractError(f"--age-bucket {age_bucket!r} is not one of {list(AGE_BUCKETS)}")
    df, source = _read_events(path, fmt, mapping)
    if "event_id" not in df:
        df.insert(0, "event_id", _derive_event_ids(df, source))
    df["event_ts"] = df["event_ts"].dt.as_unit("us")
    categories = read_movies(Path(movies)) if movies else {}
    ages = read_users(Path(users)) if users else {}
    first_item = df.groupby("item_id", sort=False)["event_ts"].min()
    items = first_item.rename("created_ts").reset_index()
    items["category"] = items["item_id"].map(categories).fillna(UNKNOWN_CATEGORY)
    items["price"] = 0.0
    first_user = df.groupby("user_id", sort=False)["event_ts"].min()
    users_df = first_user.rename("signup_ts").reset_index()
    users_df["country"] = country
    users_df["age_bucket"] = users_df["user_id"].map(ages).fillna(age_bucket)

    name = f"import-{path.stem.replace('.', '_')}.parquet"
    days = _write_partitions(lake, name, {"events": df, "items": items, "users": users_df})
    event_days = df["event_ts"].dt.floor("D")
    return {
        "events": len(df),
        "items": len(items),
        "users": len(users_df),
        "items_with_genres": int((items["category"] != UNKNOWN_CATEGORY).sum()),
        "users_with_age": int(users_df["user_id"].isin(ages.keys()).sum()),
        "first_day": min(days).isoformat(),
        "last_day": max(days).isoformat(),
        "days": int(event_days.nunique()),
        "window": suggest_window(df["event_ts"]),
    }


def _read_events(path: Path, fmt: str, mapping: str | dict | None) -> tuple[pd.DataFrame, str]:
    """The export's events in the contract's columns (no ids yet) and the id prefix."""
    if fmt == "movielens":
        df, source = read_movielens(path), "ml"
    elif fmt == "csv":
        df = read_events_csv(
            path, parse_mapping(mapping) if not isinstance(mapping, dict) else mapping
        )
        source = "csv"
    else:
        raise ContractError(f"unknown format {fmt!r}: use movielens or csv")
    if df.empty:
        raise ContractError(f"{path}: no rows")
    bad_types = sorted(set(df["event_type"]) - set(EVENT_TYPES))
    if bad_types:
        raise ContractError(
            f"{path}: column event_type has values outside {list(EVENT_TYPES)}: {bad_types[:5]}"
        )
    return df, source


def _write_partitions(lake: Lake, name: str, frames: dict[str, pd.DataFrame]) -> set[dt.date]:
    """One ``raw/<table>/dt=D/<name>`` per table and day of its time column; the days written.

    Thousands of small files: written from a few threads (each write waits on its fsync and
    Parquet encoding without the GIL; on S3 on the round trip), which is most of the time.
    """
    from concurrent.futures import ThreadPoolExecutor

    writes = [w for table, frame in frames.items() for w in _day_slices(table, frame)]
    with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
        list(pool.map(lambda w: lake.write_parquet(f"raw/{w[0]}/dt={w[1]}/{name}", w[2]), writes))
    return {dt.date.fromisoformat(day) for _, day, _ in writes}


def _day_slices(table: str, frame: pd.DataFrame) -> list[tuple[str, str, pa.Table]]:
    """(table, ISO day, rows of that day) for each day of the table's time column, file order."""
    import numpy as np
    import pyarrow as pa

    schema = TABLES[table].arrow_schema()
    time_col = TABLES[table].time_column
    # one Arrow conversion per table, then zero-copy slices per day (rows keep file order)
    day_no = frame[time_col].dt.tz_convert(None).to_numpy().astype("datetime64[D]")
    day_no = day_no.astype("int64")  # days since 1970-01-01 (UTC)
    order = np.argsort(day_no, kind="stable")
    day_no = day_no[order]
    whole = pa.Table.from_pandas(
        frame[schema.names].iloc[order], schema=schema, preserve_index=False
    )
    cuts = [0, *(np.flatnonzero(day_no[1:] != day_no[:-1]) + 1).tolist(), len(day_no)]
    return [
        (table, (EPOCH + dt.timedelta(days=int(day_no[lo]))).isoformat(), whole.slice(lo, hi - lo))
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=False)
    ]


def suggest_window(event_ts: pd.Series) -> dict:
    """The training window (``data.window_days``) that suits this history.

    A small history is all signal: below :data:`WINDOW_MIN_EVENTS` events every one is worth
    training on (``"all"``). A larger one trains on the shortest span ending at its last day that
    still holds :data:`WINDOW_TARGET_EVENTS` events (recent behaviour, bounded cost), in whole
    weeks and at least :data:`WINDOW_MIN_DAYS`; ``"all"`` when that span is the whole history.
    """
    import numpy as np

    days = np.sort(event_ts.dt.floor("D").to_numpy())
    span = int((days[-1] - days[0]) // np.timedelta64(1, "D")) + 1
    n = len(days)
    base = {"events": n, "span_days": span, "active_days": int(len(np.unique(days)))}
    if n < WINDOW_MIN_EVENTS:
        why = f"{n:,} events (< {WINDOW_MIN_EVENTS:,}): every one is worth training on"
        return {**base, "window_days": "all", "reason": why}
    cutoff = days[n - WINDOW_TARGET_EVENTS]  # the newest events up to the target
    need = int((days[-1] - cutoff) // np.timedelta64(1, "D")) + 1
    weeks = -(-max(need, WINDOW_MIN_DAYS) // 7)
    window = weeks * 7
    if window >= span:
        why = f"the newest {WINDOW_TARGET_EVENTS:,} events span the whole history"
        return {**base, "window_days": "all", "reason": why}
    held = int((days > days[-1] - np.timedelta64(window, "D")).sum())
    why = f"the last {window} days hold {held:,} of {n:,} events"
    return {**base, "window_days": window, "reason": why}


def day_range(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=k) for k in range((end - start).days + 1)]
