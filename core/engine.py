"""The one way offline stages read the lake at scale: an engine over Parquet partitions.

Every offline stage that can meet a big window (feature computation, point-in-time training
sets, materialization, drift frames, evaluation) reads the lake through an :class:`Engine`:

* :meth:`Engine.dataset` -- a lazily scanned Arrow dataset of the partitions of some days
  (day pruning by file selection; column and row-filter pushdown when scanned);
* :meth:`Engine.connect` -- a DuckDB connection, memory-capped and spilling to disk, to run SQL
  over such datasets out of core;
* :meth:`Engine.map` -- run a module-level function over independent pieces of work (one day,
  one shard): in this process one after another (``duckdb``) or as tasks on a Ray cluster
  (``ray``). A stage writes its per-piece logic once; the engine decides where it runs, so both
  engines give the same results.

Two engines, chosen by ``FLYWHEEL_ENGINE``:

* ``duckdb`` (default): out of core on one machine. Memory is bounded by
  ``FLYWHEEL_ENGINE_MEMORY_LIMIT``; DuckDB spills the rest to ``FLYWHEEL_ENGINE_TEMP_DIR``.
* ``ray``: the production profile past one machine. :meth:`Engine.map` submits Ray tasks to the
  cluster at ``FLYWHEEL_RAY_ADDRESS`` (a local one when unset); each task reads the lake itself
  (S3 through pyarrow), so Airflow tasks stay thin.

The lake's filesystem is reached through pyarrow (a local folder, or S3 with the lake's
endpoint), never through boto3 downloads of whole partitions.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from core.errors import ConfigError
from core.lake import Lake, LocalLake, S3Lake, get_lake, partition_prefix
from core.settings import get_settings

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs


def filesystem(lake: Lake) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem of the lake, the path prefix of its keys on that filesystem)."""
    import pyarrow.fs as pafs

    if isinstance(lake, LocalLake):
        return pafs.LocalFileSystem(), str(lake.root)
    if isinstance(lake, S3Lake):
        opts: dict[str, Any] = {}
        if lake.endpoint_url:
            scheme, _, host = lake.endpoint_url.partition("://")
            opts = {"endpoint_override": host.rstrip("/"), "scheme": scheme}
        fs = pafs.S3FileSystem(**opts)
        root = f"{lake.bucket}/{lake.prefix}" if lake.prefix else lake.bucket
        return fs, root
    raise ConfigError(f"no pyarrow filesystem for lake {lake.uri}")


class Engine(ABC):
    """See the module docstring. Build one with :func:`get_engine`."""

    name: ClassVar[str]

    def __init__(self, lake: Lake | None = None):
        self.lake = lake or get_lake()
        self.fs, self.root = filesystem(self.lake)

    # --- reading ---------------------------------------------------------------------------
    def files(self, zone: str, table: str, days: Iterable[dt.date] | None = None) -> list[str]:
        """Paths (on :attr:`fs`) of the Parquet files of ``<zone>/<table>/`` for ``days``."""
        if days is None:
            keys = self.lake.list(f"{zone}/{table}/")
        else:
            keys = [
                k
                for d in sorted(set(days))
                for k in self.lake.list(partition_prefix(zone, table, d))
            ]
        return [f"{self.root}/{k}" for k in keys if k.endswith(".parquet")]

    def dataset(
        self,
        zone: str,
        table: str,
        days: Iterable[dt.date] | None = None,
        schema: pa.Schema | None = None,
    ) -> pads.Dataset:
        """The partitions of ``days`` as one Arrow dataset, scanned lazily in record batches.

        With ``schema`` the files are read as that schema (columns missing from a file are
        null); an empty dataset of it when there is no file. ``day`` is a column: the
        partition's date.
        """
        import pyarrow.dataset as pads

        paths = self.files(zone, table, days)
        if not paths and schema is None:
            raise ConfigError(f"no Parquet files of {zone}/{table} for the requested days")
        part = pads.partitioning(flavor="hive", schema=_day_schema())
        return pads.dataset(
            paths,
            schema=schema,
            format="parquet",
            filesystem=self.fs,
            partitioning=part,
            partition_base_dir=f"{self.root}/{zone}/{table}",
        )

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory DuckDB connection capped at the engine's memory limit."""
        import duckdb

        s = get_settings()
        temp = Path(s.engine_temp_dir or (s.home / "engine-tmp")).expanduser()
        temp.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(
            config={
                "memory_limit": s.engine_memory_limit,
                "temp_directory": str(temp),
                "preserve_insertion_order": False,
                **({"threads": s.engine_threads} if s.engine_threads else {}),
            }
        )
        return con

    # --- running ---------------------------------------------------------------------------
    @abstractmethod
    def map(self, fn: Callable[..., Any], pieces: Sequence[Any], /, **kwargs: Any) -> list[Any]:
        """``[fn(p, **kwargs) for p in pieces]``, in order; where it runs is the engine's.

        ``fn`` must be a module-level function and its arguments and result picklable (a
        small summary, not a frame: pieces write their output to the lake).
        """


class DuckDBEngine(Engine):
    """Out of core on this machine: pieces run one after another, in this process."""

    name = "duckdb"

    def map(self, fn: Callable[..., Any], pieces: Sequence[Any], /, **kwargs: Any) -> list[Any]:
        return [fn(p, **kwargs) for p in pieces]


ENGINES: dict[str, type[Engine]] = {DuckDBEngine.name: DuckDBEngine}


def _day_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("dt", pa.date32())])


def get_engine(lake: Lake | None = None, name: str | None = None) -> Engine:
    """The engine the settings choose (``FLYWHEEL_ENGINE``), over ``lake`` (the settings')."""
    name = name or get_settings().engine
    try:
        cls = ENGINES[name]
    except KeyError:
        raise ConfigError(
            f"unknown engine {name!r} (FLYWHEEL_ENGINE): choose one of {sorted(ENGINES)}"
        ) from None
    return cls(lake)
