"""Small contract-conforming raw data for the ingestion tests."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.contract import TABLES

DAY0 = dt.date(2026, 1, 1)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)  # pinned "now" for the not-in-the-future rule


def ts(day: dt.date, seconds: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)


def items_table(day: dt.date, ids: list[str]) -> pa.Table:
    return pa.table(
        {
            "item_id": ids,
            "category": ["books"] * len(ids),
            "price": [float(i) for i in range(len(ids))],
            "created_ts": [ts(day, 60)] * len(ids),
        },
        schema=TABLES["items"].arrow_schema(),
    )


def users_table(day: dt.date, ids: list[str]) -> pa.Table:
    return pa.table(
        {
            "user_id": ids,
            "signup_ts": [ts(day, 120)] * len(ids),
            "country": ["DE"] * len(ids),
            "age_bucket": ["25-34"] * len(ids),
        },
        schema=TABLES["users"].arrow_schema(),
    )


def events_table(day: dt.date, n: int, items: list[str], prefix: str | None = None) -> pa.Table:
    prefix = prefix or f"e{day.isoformat()}-"
    types = ["view", "click", "rating", "purchase"]
    etypes = [types[i % 4] for i in range(n)]
    return pa.table(
        {
            "event_id": [f"{prefix}{i}" for i in range(n)],
            "user_id": [f"user{i % 7}" for i in range(n)],
            "item_id": [items[i % len(items)] for i in range(n)],
            "event_type": etypes,
            "value": [float(1 + i % 5) if t == "rating" else 1.0 for i, t in enumerate(etypes)],
            "event_ts": [ts(day, 300 + i * 7) for i in range(n)],
        },
        schema=TABLES["events"].arrow_schema(),
    )


def parquet_bytes(tbl: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    return buf.getvalue()


def put(
    lake, table: str, day: dt.date, tbl: pa.Table | bytes, name: str = "part-00000.parquet"
) -> str:
    key = f"raw/{table}/dt={day.isoformat()}/{name}"
    lake.write_bytes(key, tbl if isinstance(tbl, bytes) else parquet_bytes(tbl))
    return key


ITEMS = [f"i{k}" for k in range(10)]


def write_day(lake, day: dt.date, n: int = 40, with_catalog: bool | None = None) -> None:
    """A clean day: the catalog and users on the first day, events every day."""
    if with_catalog if with_catalog is not None else day == DAY0:
        put(lake, "items", day, items_table(day, ITEMS))
        put(lake, "users", day, users_table(day, [f"user{k}" for k in range(7)]))
    put(lake, "events", day, events_table(day, n, ITEMS))


@pytest.fixture
def clean_days(lake):
    """Three clean days written to raw/."""
    for k in range(3):
        write_day(lake, DAY0 + dt.timedelta(days=k))
    return lake
