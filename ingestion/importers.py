"""Bring your own data: turn a ratings or events export into raw partitions of the contract.

* ``movielens``: ``u.data`` (tab-separated ``user item rating timestamp``, no header) or
  ``ratings.csv`` (header ``userId,movieId,rating,timestamp``). Every row becomes a ``rating``
  event with ``value`` = rating; items get their category from a movies file when given
  (``movies.csv`` ``movieId,title,genres`` or ``u.item``), else ``unknown``; price 0.
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

    from core.lake import Lake

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


def read_movies(path: Path) -> dict[str, str]:
    """item id → category (first genre) from ``movies.csv`` or ``u.item``."""
    with open(path, "rb") as fh:
        head = fh.readline().decode("utf-8", "replace")
    if head.lower().startswith("movieid"):
        df = _read_text_table(path)
        return dict(
            zip(
                df["movieId"].astype(str),
                df["genres"].astype(str).str.split("|").str[0],
                strict=True,
            )
        )
    df = _read_text_table(path, sep="|", header=None)
    flags = df.iloc[:, -len(ML100K_GENRES) :].to_numpy()
    cats = [ML100K_GENRES[row.argmax()] if row.any() else "unknown" for row in flags]
    return dict(zip(df.iloc[:, 0].astype(str), cats, strict=True))


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
) -> dict:
    """Write raw partitions for ``path``; returns counts and the days written."""
    import pyarrow as pa

    path = Path(path)
    if country not in ISO_COUNTRIES:
        raise ContractError(f"--country {country!r} is not an ISO 3166-1 alpha-2 code")
    if age_bucket not in AGE_BUCKETS:
        raise ContractError(f"--age-bucket {age_bucket!r} is not one of {list(AGE_BUCKETS)}")
    if fmt == "movielens":
        df = read_movielens(path)
        source = "ml"
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
    if "event_id" not in df:
        df.insert(0, "event_id", _derive_event_ids(df, source))
    df["event_ts"] = df["event_ts"].dt.as_unit("us")
    df["dt"] = df["event_ts"].dt.date
    name = f"import-{path.stem.replace('.', '_')}.parquet"

    categories = read_movies(Path(movies)) if movies else {}
    first_item = df.groupby("item_id", sort=False)["event_ts"].min()
    items = first_item.rename("created_ts").reset_index()
    items["category"] = items["item_id"].map(categories).fillna("unknown")
    items["price"] = 0.0
    first_user = df.groupby("user_id", sort=False)["event_ts"].min()
    users = first_user.rename("signup_ts").reset_index()
    users["country"] = country
    users["age_bucket"] = age_bucket

    days = set()
    for table, frame, time_col in (
        ("events", df, "event_ts"),
        ("items", items, "created_ts"),
        ("users", users, "signup_ts"),
    ):
        schema = TABLES[table].arrow_schema()
        for day, part in frame.groupby(frame[time_col].dt.date, sort=True):
            tbl = pa.Table.from_pandas(part[schema.names], schema=schema, preserve_index=False)
            lake.write_parquet(f"raw/{table}/dt={day.isoformat()}/{name}", tbl)
            days.add(day)
    return {
        "events": len(df),
        "items": len(items),
        "users": len(users),
        "first_day": min(days).isoformat(),
        "last_day": max(days).isoformat(),
        "days": len({d for d in df["dt"]}),
    }


def day_range(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=k) for k in range((end - start).days + 1)]
