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
  ``FLYWHEEL_ENGINE_WORKERS`` pieces run at once in threads (default: one per CPU, at most 4):
  DuckDB, pyarrow and the Parquet writer release the GIL, so one piece writes its shard while
  another joins. Each running piece's connection gets its share of the memory limit and of
  the CPUs, so the process as a whole stays under the cap.
* ``ray``: the production profile past one machine. :meth:`Engine.map` submits Ray tasks to the
  cluster at ``FLYWHEEL_RAY_ADDRESS`` (a local one when unset); each task reads the lake itself
  (S3 through pyarrow), so Airflow tasks stay thin. A task runs with the submitter's
  ``FLYWHEEL_*``/``AWS_*`` environment (its settings and S3 identity: the cluster holds none of
  its own) and ``FLYWHEEL_ENGINE=duckdb``: inside a task the engine is DuckDB on that node, so a
  piece computes exactly what it computes in the ``duckdb`` profile.
  :meth:`RayEngine.ray_dataset` reads partitions as a Ray Data dataset for stages that stream.

The lake's filesystem is reached through pyarrow (a local folder, or S3 with the lake's
endpoint), never through boto3 downloads of whole partitions.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from core.errors import ConfigError, FlywheelError
from core.lake import Lake, LocalLake, S3Lake, get_lake, partition_prefix
from core.settings import get_settings

log = logging.getLogger(__name__)

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
        elif isinstance(self.lake, S3Lake):
            keys = _s3_partition_keys(self.lake, zone, table, set(days))
        else:  # a folder: listing a day is a syscall
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
        null); an empty dataset of it when there is no file. ``dt`` is a column: the
        partition's date.
        """
        import pyarrow.dataset as pads

        paths = self.files(zone, table, days)
        if schema is not None and "dt" not in schema.names:
            schema = schema.append(_day_schema().field("dt"))  # else pyarrow drops the column
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
        share = _SHARE.get()  # pieces running at once in this process (DuckDBEngine.map)
        threads = s.engine_threads or (
            max(1, (os.cpu_count() or 1) // share) if share > 1 else None
        )
        con = duckdb.connect(
            config={
                "memory_limit": memory_share(s.engine_memory_limit, share),
                "temp_directory": str(temp),
                "preserve_insertion_order": False,
                **({"threads": threads} if threads else {}),
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


def _s3_partition_keys(lake: S3Lake, zone: str, table: str, days: set[dt.date]) -> list[str]:
    """Keys of the partitions of ``days``, sorted, in one S3 listing per month of them (a
    28-day window: 2 requests, not 28; a LIST is a round trip, a page holds 1,000 keys)."""
    wanted = {partition_prefix(zone, table, d) for d in days}
    months = sorted({p[: -len("DD/")] for p in wanted})  # ".../dt=YYYY-MM-"
    return [
        k for month in months for k in lake.list(month) if k[: len(month) + len("DD/")] in wanted
    ]


#: How many pieces share this thread's process right now (set in DuckDBEngine.map's workers).
_SHARE: contextvars.ContextVar[int] = contextvars.ContextVar("flywheel_engine_share", default=1)

_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def memory_share(limit: str, share: int) -> str:
    """``limit`` (DuckDB's notation: ``2GB``, ``512MiB``) divided among ``share`` pieces."""
    if share <= 1:
        return limit
    m = _SIZE.match(limit)
    if not m:
        raise ConfigError(f"FLYWHEEL_ENGINE_MEMORY_LIMIT={limit!r}: expected a size like 2GB")
    base = 1024 if (m.group(3) or "").upper() == "IB" else 1000
    unit = m.group(2).upper()
    size = float(m.group(1)) * (base ** ("KMGT".index(unit) + 1) if unit else 1)  # bytes
    return f"{max(int(size / share / 1e6), 64)}MB"


def engine_workers() -> int:
    """Pieces run at once by :class:`DuckDBEngine` (``FLYWHEEL_ENGINE_WORKERS``)."""
    return get_settings().engine_workers or min(os.cpu_count() or 1, 4)


class DuckDBEngine(Engine):
    """Out of core on this machine: pieces run in this process, ``engine_workers()`` at once
    (threads), results in the pieces' order; the first failure stops the rest."""

    name = "duckdb"

    def map(self, fn: Callable[..., Any], pieces: Sequence[Any], /, **kwargs: Any) -> list[Any]:
        workers = min(engine_workers(), len(pieces))
        if workers <= 1:
            return [fn(p, **kwargs) for p in pieces]

        def run(piece: Any) -> Any:
            _SHARE.set(workers)  # this worker thread's connections take their share
            return fn(piece, **kwargs)

        with ThreadPoolExecutor(workers, thread_name_prefix="engine") as pool:
            futures = [pool.submit(run, p) for p in pieces]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                for f in futures:
                    f.cancel()
                raise failed[0].exception()
            return [f.result() for f in futures]


class RayEngine(Engine):
    """Pieces as Ray tasks (one CPU each) on the cluster at ``FLYWHEEL_RAY_ADDRESS``.

    The driver (an Airflow task, the CLI) only submits and gathers small summaries; each task
    opens the lake itself and works through a DuckDB engine on its node. Connecting happens on
    the first :meth:`map` (once per process); building a ``RayEngine`` costs nothing, so a task
    that runs on a Ray worker may build one to read through :meth:`dataset`/:meth:`connect`.
    """

    name = "ray"

    def map(self, fn: Callable[..., Any], pieces: Sequence[Any], /, **kwargs: Any) -> list[Any]:
        if not pieces:
            return []
        ray = connect_ray()
        remote, env = ray.remote(fn), self.runtime_env()
        label = getattr(fn, "__qualname__", repr(fn))
        refs = [
            remote.options(num_cpus=1, runtime_env=env, name=f"{label}[{str(p)[:60]}]").remote(
                p, **kwargs
            )
            for p in pieces
        ]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:  # fail fast: the first failed piece stops the rest
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            try:
                results[i] = ray.get(done[0])
            except Exception as exc:
                for ref in pending:
                    ray.cancel(ref)
                raise _piece_error(label, pieces[i], exc) from exc
        return results

    def runtime_env(self) -> dict[str, Any]:
        """What every task runs with: this process's ``FLYWHEEL_*``/``AWS_*`` variables, the
        engine's lake, DuckDB inside the task (one thread per task's CPU unless set), and the
        project on ``PYTHONPATH``."""
        return {"env_vars": task_env(self.lake)}

    def ray_dataset(
        self,
        zone: str,
        table: str,
        days: Iterable[dt.date] | None = None,
        columns: list[str] | None = None,
    ) -> Any:
        """The partitions of ``days`` as a Ray Data dataset, read by Ray tasks through pyarrow.

        Only ``columns`` are read (all when ``None``); ``dt`` (the partition's day, a
        ``YYYY-MM-DD`` string here) is added when the files are read whole. Ray Data runs on a
        node of the cluster (inside a piece of :meth:`map`, a Ray job), not over Ray Client.
        """
        import ray.data
        from ray.data.datasource import Partitioning

        if connect_ray().util.client.ray.is_connected():
            raise ConfigError(
                "Ray Data does not run over Ray Client (FLYWHEEL_RAY_ADDRESS=ray://...): read "
                "it inside a piece of engine.map, or from a driver on a node of the cluster"
            )
        paths = self.files(zone, table, days)
        if not paths:
            raise ConfigError(f"no Parquet files of {zone}/{table} for the requested days")
        return ray.data.read_parquet(
            paths,
            filesystem=self.fs,
            columns=columns,
            partitioning=Partitioning("hive", base_dir=f"{self.root}/{zone}/{table}"),
            ray_remote_args={"runtime_env": self.runtime_env()},
        )


ENGINES: dict[str, type[Engine]] = {DuckDBEngine.name: DuckDBEngine, RayEngine.name: RayEngine}

#: Environment variables a Ray task gets from its submitter (its settings and S3 identity).
TASK_ENV_PREFIXES: tuple[str, ...] = ("FLYWHEEL_", "AWS_")

_RAY: dict[str, Any] = {}  # the cluster this process is connected to: {"address": ...}


def task_env(lake: Lake) -> dict[str, str]:
    """The environment of a Ray task submitted from this process over ``lake``."""
    s = get_settings()
    env = {k: v for k, v in os.environ.items() if k.startswith(TASK_ENV_PREFIXES)}
    env["FLYWHEEL_ENGINE"] = DuckDBEngine.name  # inside a task: out of core on its node
    env["FLYWHEEL_ENGINE_THREADS"] = str(s.engine_threads or 1)  # a task holds one CPU
    env["FLYWHEEL_ENGINE_WORKERS"] = "1"  # and runs its one piece
    env["FLYWHEEL_LAKE_URI"] = lake.uri
    endpoint = lake.endpoint_url if isinstance(lake, S3Lake) else None
    if endpoint:
        env["FLYWHEEL_S3_ENDPOINT_URL"] = endpoint
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(s.project_dir), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def connect_ray() -> Any:
    """``ray``, connected (once per process) to ``FLYWHEEL_RAY_ADDRESS`` or a local cluster.

    ``ray://host:10001`` is a Ray Client connection (a driver outside the cluster: Airflow's
    workers); ``host:6379`` joins as a driver on a node of the cluster. Ray's token
    (``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``) comes from the environment, as for the ``ray`` CLI.
    A different address than the connected one reconnects.
    """
    import ray

    address = get_settings().ray_address or None
    if ray.is_initialized():
        # not connected by us (inside a Ray task, or the caller's own ray.init), or the same
        # cluster: use it as it is
        if "address" not in _RAY or _RAY["address"] == address:
            return ray
        ray.shutdown()
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:  # a local cluster of this process: no dashboard, no usage stats
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs.update(include_dashboard=False, configure_logging=True)
    for attempt in (1, 2):
        try:
            ray.init(address=address, **kwargs)
            break
        except Exception as exc:  # ConnectionError, RuntimeError, AuthenticationError, ...
            # the client server starts a server per connection; that start fails now and then
            # ("Starting Ray client server failed"): one more try, anything else fails at once
            if attempt == 1 and RAY_CLIENT_START_FAILED in str(exc):
                log.warning("Ray client server did not start; connecting again: %s", exc)
                time.sleep(2.0)
                continue
            where = address or "a local cluster"
            raise ConfigError(
                f"cannot connect to Ray at {where} (FLYWHEEL_RAY_ADDRESS): {_first_line(exc)}"
            ) from None
    _RAY["address"] = address
    return ray


#: What a Ray Client connection raises when the server side failed to start its per-client server.
RAY_CLIENT_START_FAILED = "Starting Ray client server failed"


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's text on one line (a remote traceback is left to ``__cause__``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    if text.endswith(":") and len(lines) > 1:  # "... from server:" + a traceback: its last line
        text = f"{text} {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _piece_error(label: str, piece: Any, exc: Exception) -> FlywheelError:
    """One line naming the piece and the cause; a stage's own error keeps its class."""
    cause = getattr(exc, "cause", None) or exc  # RayTaskError wraps the task's exception
    where = f"{label} failed on Ray for piece {piece!r}"
    if isinstance(cause, FlywheelError):
        try:
            return type(cause)(f"{where}: {cause}")
        except TypeError:  # a subclass with another signature
            pass
    return FlywheelError(f"{where}: {type(cause).__name__}: {_first_line(cause)}")


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
