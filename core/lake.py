"""The lake: its layout (zones, keys, file names) and one interface over a local folder
(``file://``) and S3 (``s3://bucket/prefix``).

Layout: ``<zone>/<table>/dt=YYYY-MM-DD/<file>``. The zones are :data:`RAW` (as delivered),
:data:`VALIDATED` (passed the gate, pseudonymised), :data:`QUARANTINE` (rejected batches, kept
intact), :data:`FEATURES` (daily feature tables), :data:`QUALITY` (the gate's results),
:data:`REPORTS` (drift), :data:`TRAINING_SETS` and, in simulated lakes, :data:`SIM`. Stages read tables through :meth:`Lake.read` (day and column pruning)
and write them through :meth:`Lake.write`; this is the one place keys are spelled.

Keys are ``/``-separated paths relative to the lake root, e.g.
``raw/events/dt=2026-01-01/part-00000.parquet``. Every write is atomic: locally a temporary
file in the same folder is renamed over the target; on S3 an object appears only when its single
PUT (or multipart upload, which boto3 completes in one call) finishes. Names starting with ``.``
or ``_`` are private (temporaries, markers) and never listed.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from core.errors import LakeError
from core.settings import get_settings

if TYPE_CHECKING:
    import pyarrow as pa

_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")

# --- layout -----------------------------------------------------------------------------------
RAW = "raw"  # batches as delivered, by table and day
VALIDATED = "validated"  # batches that passed the gate, user ids pseudonymised
QUARANTINE = "quarantine"  # rejected batches, byte-identical, with their quality result
FEATURES = "features"  # daily feature tables, one folder per feature view
QUALITY = "quality"  # the gate's results and reports, per day and table
REPORTS = "reports"  # drift reports and decisions
TRAINING_SETS = "training_sets"  # point-in-time training sets, per window end day
SIM = "sim"  # the simulator's ground truth, fault list and clean copies (simulated lakes only)
ZONES: tuple[str, ...] = (
    RAW,
    VALIDATED,
    QUARANTINE,
    FEATURES,
    QUALITY,
    REPORTS,
    TRAINING_SETS,
    SIM,
)

#: The file a stage writes for one (table, day): one Parquet file per partition.
PART_NAME = "part-00000.parquet"


def partition_prefix(area: str, table: str, day: dt.date) -> str:
    """``<area>/<table>/dt=YYYY-MM-DD/`` -- the one place partition keys are spelled."""
    return f"{area}/{table}/dt={day.isoformat()}/"


def part_key(area: str, table: str, day: dt.date, name: str = PART_NAME) -> str:
    """``<area>/<table>/dt=YYYY-MM-DD/<name>``: the key of one file of a partition."""
    return partition_prefix(area, table, day) + name


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as one zstd-compressed Parquet file, in memory.

    Into an Arrow buffer, not a ``BytesIO``: writing to a Python file object takes the GIL for
    every page, and ingestion calls this in a thread while Great Expectations holds the GIL.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _visible(name: str) -> bool:
    return not name.startswith((".", "_"))


class Lake(ABC):
    """Common operations; subclasses implement the byte-level primitives."""

    uri: str

    @staticmethod
    def from_uri(uri: str, endpoint_url: str | None = None) -> Lake:
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            return LocalLake(Path(unquote(parsed.path)))
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise LakeError(f"lake URI {uri!r} names no bucket (expected s3://bucket/prefix)")
            return S3Lake(parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url)
        if parsed.scheme == "" and uri:
            return LocalLake(Path(uri))
        raise LakeError(f"unsupported lake URI {uri!r}: use file:///path or s3://bucket/prefix")

    # --- primitives ---------------------------------------------------------------------------
    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """All visible keys under ``prefix`` (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def url(self, key: str) -> str:
        """Full URI of a key (``file:///…`` or ``s3://…``)."""

    def copy(self, src: str, dst: str) -> None:
        self.write_bytes(dst, self.read_bytes(src))

    # --- derived ------------------------------------------------------------------------------
    def move(self, src: str, dst: str) -> None:
        """Move one object; the destination is complete before the source disappears."""
        self.copy(src, dst)
        self.delete(src)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def partitions(self, area: str, table: str) -> list[dt.date]:
        """Days that have at least one visible file under ``<area>/<table>/``."""
        days = set()
        for key in self.list(f"{area}/{table}/"):
            parts = key.split("/")
            if len(parts) >= 4:
                m = _PARTITION.match(parts[2])
                if m:
                    days.add(dt.date.fromisoformat(m.group(1)))
        return sorted(days)

    def partition_files(self, area: str, table: str, day: dt.date) -> list[str]:
        return self.list(partition_prefix(area, table, day))

    def replace_partition(self, prefix: str, files: dict[str, bytes]) -> None:
        """Make ``prefix`` hold exactly ``files`` (name → bytes).

        Each file lands atomically; files of an earlier run that are not in ``files`` are removed
        afterwards, so re-running a task overwrites rather than duplicates.
        """
        prefix = prefix.rstrip("/") + "/"
        for name, data in files.items():
            self.write_bytes(prefix + name, data)
        for key in self.list(prefix):
            if key[len(prefix) :] not in files:
                self.delete(key)

    # --- Parquet ------------------------------------------------------------------------------
    def write_parquet(self, key: str, table: pa.Table) -> None:
        self.write_bytes(key, parquet_bytes(table))

    def read(
        self,
        table: str,
        days: Iterable[dt.date] | None = None,
        columns: list[str] | None = None,
        zone: str = VALIDATED,
        schema: pa.Schema | None = None,
        name_prefix: str = "",
    ) -> pa.Table | None:
        """The Parquet files of ``<zone>/<table>/`` for ``days`` (every day when ``None``).

        Only ``columns`` are read (all when ``None``); with ``schema`` the result is selected
        and cast to it, and is an empty table of it when there is nothing to read (else
        ``None``). ``name_prefix`` keeps only files whose name starts with it.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if days is None:
            keys = self.list(f"{zone}/{table}/")
        else:
            keys = [k for day in days for k in self.list(partition_prefix(zone, table, day))]
        keys = [
            k
            for k in keys
            if k.endswith(".parquet") and k.rsplit("/", 1)[-1].startswith(name_prefix)
        ]
        if columns is None and schema is not None:
            columns = schema.names
        parts = [pq.read_table(io.BytesIO(self.read_bytes(k)), columns=columns) for k in keys]
        if schema is not None:
            parts = [t.select(schema.names).cast(schema) for t in parts]
        if not parts:
            return schema.empty_table() if schema is not None else None
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default")

    def write(
        self,
        data: pa.Table,
        table: str,
        day: dt.date,
        zone: str = VALIDATED,
        name: str = PART_NAME,
        replace: bool = False,
    ) -> str:
        """Write ``data`` as ``<zone>/<table>/dt=day/<name>`` (atomically); returns the key.

        With ``replace`` the partition holds only this file afterwards
        (:meth:`replace_partition`: a re-run overwrites, never duplicates).
        """
        if replace:
            self.replace_partition(partition_prefix(zone, table, day), {name: parquet_bytes(data)})
        else:
            self.write_parquet(part_key(zone, table, day, name), data)
        return part_key(zone, table, day, name)

    def read_parquet(self, key_or_prefix: str) -> pa.Table:
        """One Parquet file, or every Parquet file under a prefix concatenated."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if key_or_prefix.endswith(".parquet"):
            keys = [key_or_prefix]
        else:
            keys = [k for k in self.list(key_or_prefix) if k.endswith(".parquet")]
            if not keys:
                raise LakeError(f"no Parquet files under {self.url(key_or_prefix)}")
        tables = [pq.read_table(io.BytesIO(self.read_bytes(k))) for k in keys]
        return (
            tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        )


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename is durable only once its folder is synced)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalLake(Lake):
    """A lake in a local folder."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    def path(self, key: str) -> Path:
        """Local path of a key (also for libraries that want a path, like Feast)."""
        p = (self.root / key).resolve()
        if p != self.root and self.root not in p.parents:
            raise LakeError(f"key {key!r} escapes the lake root {self.root}")
        return p

    def url(self, key: str) -> str:
        return self.path(key).as_uri()

    def write_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            fsync_dir(target.parent)  # the rename itself survives a power cut
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind
            raise LakeError(f"cannot write {target}: {exc.strerror or exc}") from None

    def read_bytes(self, key: str) -> bytes:
        target = self.path(key)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise LakeError(f"not found in the lake: {target}") from None
        except OSError as exc:
            raise LakeError(f"cannot read {target}: {exc.strerror or exc}") from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self.path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if _visible(d)]
            for name in filenames:
                if _visible(name):
                    out.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return sorted(out)

    def delete(self, key: str) -> None:
        target = self.path(key)
        target.unlink(missing_ok=True)
        # prune empty partition folders so listings stay honest
        parent = target.parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def move(self, src: str, dst: str) -> None:
        s, d = self.path(src), self.path(dst)
        if not s.is_file():
            raise LakeError(f"not found in the lake: {s}")
        d.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(s, d)  # same filesystem: atomic, byte-identical
        except OSError:
            shutil.copy2(s, d)
            s.unlink()
        self.delete(src)  # prune the emptied folder


class S3Lake(Lake):
    """A lake under ``s3://bucket/prefix`` through boto3 (AWS, MinIO, moto)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self._s3 = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _fail(self, action: str, key: str, exc: Exception) -> LakeError:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = self.url(key)
        if isinstance(exc, EndpointConnectionError):
            return LakeError(
                f"S3 endpoint unreachable ({exc.kwargs.get('endpoint_url')}) while trying to {action} {where}"
            )
        if isinstance(exc, NoCredentialsError):
            return LakeError(f"no AWS credentials found to {action} {where}")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
                return LakeError(f"S3 refused the credentials ({code}) to {action} {where}")
            if code in {"NoSuchKey", "404"}:
                return LakeError(f"not found in the lake: {where}")
            if code == "NoSuchBucket":
                return LakeError(f"S3 bucket {self.bucket!r} does not exist ({where})")
            return LakeError(f"S3 error {code} while trying to {action} {where}")
        return LakeError(f"cannot {action} {where}: {exc}")

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            # upload_fileobj switches to a multipart upload for big objects; either way the
            # object becomes visible only once complete.
            self._s3.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key))
        except Exception as exc:  # boto3 raises several unrelated types
            raise self._fail("write", key, exc) from None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise self._fail("read", key, exc) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise self._fail("check", key, exc) from None
        except Exception as exc:
            raise self._fail("check", key, exc) from None

    def _iter(self, prefix: str) -> Iterable[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                key = obj["Key"][strip:]
                if all(_visible(part) for part in key.split("/")):
                    yield key

    def list(self, prefix: str = "") -> list[str]:
        try:
            return sorted(self._iter(prefix))
        except Exception as exc:
            raise self._fail("list", prefix, exc) from None

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._fail("delete", key, exc) from None

    def copy(self, src: str, dst: str) -> None:
        try:
            self._s3.copy(
                {"Bucket": self.bucket, "Key": self._key(src)}, self.bucket, self._key(dst)
            )
        except Exception as exc:
            raise self._fail("copy", src, exc) from None


def get_lake(uri: str | None = None) -> Lake:
    """The lake named by ``uri`` or by the settings."""
    s = get_settings()
    return Lake.from_uri(uri or s.lake_uri, endpoint_url=s.s3_endpoint_url)
