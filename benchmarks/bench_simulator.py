"""Simulator throughput: events/s writing about 1M events into a local lake.

Baseline (same run, same machine): writing the same rows per day with bare pyarrow -- random
columns of the contract's schema, Parquet with zstd, through the same lake -- i.e. the cost of the
output alone. The ratio says how much the behaviour model adds on top of writing.
"""

from __future__ import annotations

import shutil
import tempfile

from benchmarks.common import Row, run_isolated

FULL = {"days": 12, "users": 20_000, "items": 2_000}  # ≈ 1.1M events
QUICK = {"days": 3, "users": 2_000, "items": 300}


def _simulate(size: dict) -> dict[str, int]:
    from core.lake import Lake
    from simulation.simulator import simulate

    root = tempfile.mkdtemp(prefix="bench-sim-")
    try:
        s = simulate(Lake.from_uri(root), seed=0, **size)
        return s.events_per_day
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bare_pyarrow(events_per_day: dict[str, int]) -> int:
    import datetime as dt

    import numpy as np
    import pyarrow as pa

    from core.contract import EVENTS
    from core.lake import RAW, Lake
    from core.names import EVENT_TYPES

    root = tempfile.mkdtemp(prefix="bench-arrow-")
    rng = np.random.default_rng(0)
    users = pa.array([f"u{i:06d}" for i in range(20_000)])
    items = pa.array([f"i{i:05d}" for i in range(2_000)])
    try:
        lake = Lake.from_uri(root)
        for day, n in events_per_day.items():
            t0 = int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp() * 1e6)
            t = pa.table(
                {
                    "event_id": pa.array([f"e{day.replace('-', '')}-{i:07d}" for i in range(n)]),
                    "user_id": users.take(pa.array(rng.integers(0, len(users), n))),
                    "item_id": items.take(pa.array(rng.integers(0, len(items), n))),
                    "event_type": pa.array(
                        np.array(EVENT_TYPES, dtype=object)[rng.integers(0, 5, n)]
                    ),
                    "value": pa.array(np.ones(n)),
                    "event_ts": pa.array(
                        np.sort(t0 + rng.integers(0, 86_400_000_000, n)),
                        pa.timestamp("us", tz="UTC"),
                    ),
                },
                schema=EVENTS.arrow_schema(),
            )
            lake.write(t, "events", dt.date.fromisoformat(day), zone=RAW)
        return sum(events_per_day.values())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(quick: bool) -> list[Row]:
    size = QUICK if quick else FULL
    per_day, sim_s, sim_mb = run_isolated(_simulate, size)
    n = sum(per_day.values())
    _, base_s, _ = run_isolated(_bare_pyarrow, per_day)
    per_million = sim_s / n * 1e6
    case = f"{n:,} events ({size['days']} d, {size['users']:,} users, {size['items']:,} items)"
    return [
        Row("simulator", case, "events/s", n / sim_s, "bare pyarrow write of the same rows",
            ratio=(n / sim_s) / (n / base_s)),
        Row("simulator", case, "s per 1M events", per_million, "bare pyarrow write of the same rows",
            ratio=sim_s / base_s, target="< 60 s", ok=per_million < 60),
        Row("simulator", case, "peak RSS MiB", sim_mb),
    ]  # fmt: skip
