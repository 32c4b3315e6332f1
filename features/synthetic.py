"""Small synthetic *validated* partitions, for tests and benchmarks of the feature store.

Writes what the ingest gate would write (contract columns and arrow types, pseudonymous user
ids ``p_…``), without running the simulator or the gate.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from core.lake import Lake, partition_prefix

if TYPE_CHECKING:
    import pandas as pd

CATEGORIES = ("books", "games", "garden", "music", "toys")


def user_id(i: int) -> str:
    """A pseudonym-shaped id (``p_`` + 24 hex digits)."""
    return f"p_{i:024x}"


def item_id(i: int) -> str:
    return f"i{i:06d}"


def write_table(lake: Lake, table: str, day: dt.date, df: pd.DataFrame) -> str:
    """Write ``df`` as ``validated/<table>/dt=day/part-00000.parquet`` with the contract schema."""
    import pyarrow as pa

    from core.contract import TABLES

    schema = TABLES[table].arrow_schema()
    key = partition_prefix("validated", table, day) + "part-00000.parquet"
    lake.write_parquet(
        key, pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    )
    return key


def write_validated(
    lake: Lake,
    start: dt.date,
    days: int,
    n_users: int = 50,
    n_items: int = 20,
    events_per_day: int = 300,
    seed: int = 0,
) -> list[dt.date]:
    """Users and the catalog on ``start``, random events every day; returns the days written."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    write_table(
        lake,
        "users",
        start,
        pd.DataFrame(
            {
                "user_id": [user_id(i) for i in range(n_users)],
                "signup_ts": t0 + pd.to_timedelta(rng.integers(0, 86_400, n_users), unit="s"),
                "country": rng.choice(["DE", "FR", "US", "JP"], n_users),
                "age_bucket": rng.choice(["18-24", "25-34", "35-44"], n_users),
            }
        ),
    )
    write_table(
        lake,
        "items",
        start,
        pd.DataFrame(
            {
                "item_id": [item_id(i) for i in range(n_items)],
                "category": rng.choice(CATEGORIES, n_items),
                "price": rng.uniform(1, 100, n_items).round(2),
                "created_ts": [t0] * n_items,
            }
        ),
    )
    types = np.array(["view", "click", "add_to_cart", "purchase", "rating"])
    out = []
    for k in range(days):
        day = start + dt.timedelta(days=k)
        n = events_per_day
        etype = types[rng.choice(5, n, p=[0.6, 0.2, 0.08, 0.05, 0.07])]
        value = np.where(etype == "rating", rng.integers(1, 6, n).astype(float), 1.0)
        write_table(
            lake,
            "events",
            day,
            pd.DataFrame(
                {
                    "event_id": [f"e{k:04d}_{j:08d}" for j in range(n)],
                    "user_id": [user_id(i) for i in rng.integers(0, n_users, n)],
                    "item_id": [item_id(i) for i in rng.integers(0, n_items, n)],
                    "event_type": etype,
                    "value": value,
                    "event_ts": pd.Timestamp(day, tz="UTC")
                    + pd.to_timedelta(rng.integers(0, 86_400_000, n), unit="ms"),
                }
            ),
        )
        out.append(day)
    return out
