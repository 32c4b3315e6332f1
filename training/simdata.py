"""Simulated validated data for training tests and benchmarks, without the quality gate.

:func:`simulated_validated` runs the simulator and writes ``validated/<table>/dt=D/`` directly:
contract columns and types, ``user_id`` pseudonymised — what ``ingestion.pipeline.ingest_day`` writes
for clean batches, minus the Great Expectations cost. The real pipeline (and its tests) goes through
the gate; training only needs the validated layout.
"""

from __future__ import annotations

import datetime as dt

from core.lake import Lake, partition_prefix


def simulated_validated(
    lake: Lake,
    days: int = 14,
    users: int = 300,
    items: int = 120,
    seed: int = 0,
    start: dt.date = dt.date(2026, 1, 1),
    scenario: str = "stable",
) -> dt.date:
    """Simulate ``days`` days and write them as validated partitions; returns the last day."""
    import pyarrow as pa

    from core.contract import TABLES
    from core.privacy import pseudonymise_many
    from simulation.simulator import simulate

    simulate(lake, days=days, users=users, items=items, scenario=scenario, seed=seed, start=start)
    for d in range(days):
        day = start + dt.timedelta(days=d)
        for name, table in TABLES.items():
            t = lake.read_parquet(partition_prefix("raw", name, day))
            schema = table.arrow_schema()
            t = t.select(schema.names)
            if "user_id" in schema.names:
                ids = t.column("user_id").to_pylist()
                t = t.set_column(
                    schema.names.index("user_id"),
                    "user_id",
                    pa.array(pseudonymise_many(ids), pa.string()),
                )
            lake.write_parquet(
                partition_prefix("validated", name, day) + "part-00000.parquet", t.cast(schema)
            )
    return start + dt.timedelta(days=days - 1)


def seed_tracking_db(home) -> None:
    """Give ``home`` an empty, migrated MLflow SQLite database (copied from a cached template).

    Creating the MLflow schema runs every migration (~15 s here); tests and benchmarks that each
    start from a fresh ``FLYWHEEL_HOME`` copy a template made once per MLflow version instead.
    """
    import os
    import shutil
    import tempfile
    from importlib.metadata import version
    from pathlib import Path

    template = Path(tempfile.gettempdir()) / f"flywheel-mlflow-template-{version('mlflow')}.db"
    if not template.exists():
        from mlflow.tracking import MlflowClient

        build = template.with_suffix(f".{os.getpid()}.tmp")
        MlflowClient(tracking_uri=f"sqlite:///{build}").search_experiments()
        build.replace(template)
    target = Path(home) / "mlflow" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
