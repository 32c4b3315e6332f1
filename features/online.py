"""Online writes at scale: a day's feature snapshot streamed into Feast's online store.

Materializing a day means writing every entity's row of ``features/<view>/dt=D/`` (a full
snapshot) online. Feast's ``write_to_online_store`` converts a pandas frame row by row into
protos and its Redis store then loops over rows in Python: a few thousand rows a second.
:func:`write_day` streams the partition instead, in Arrow record batches from
:meth:`core.engine.Engine.dataset`, and overlaps two stages: a thread converts batch k+1 to
Feast's online format while batch k is being written (a bounded queue between them, so memory
holds at most a few batches).

Conversion is per column, never per value where avoidable: the distinct values of a column
(counts, categories, timestamps) are converted once with Feast's own
``feast.type_map.python_values_to_proto_values`` and then indexed; float64 columns are encoded
as Feast's ``Value(double_val=x)`` bytes with numpy (NaN/null → Feast's empty ``Value``).

Two writers, both producing exactly what Feast's ``materialize`` leaves online:

* Redis (the production profile): the hashes Feast's Redis online store writes -- key
  ``_redis_key(project, entity_key)``, fields ``_mmh3("<view>:<feature>")`` → serialized
  ``Value``, ``_ts:<view>`` → serialized ``Timestamp`` -- and its rule that a row only
  replaces a stored one with an older timestamp. The rule runs in Redis (a Lua script per
  chunk of rows, through Feast's own Redis client): one round trip per chunk, no per-row
  command built in Python. Redis Cluster takes the generic path below.
* any other online store (SQLite in the embedded profile): the ``(EntityKeyProto, {feature:
  ValueProto}, event_ts, created_ts)`` rows handed to the provider's ``online_write_batch``.

The registry's materialization intervals are the caller's (:mod:`features.store`).
"""

from __future__ import annotations

import datetime as dt
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.engine import get_engine
from core.lake import FEATURES, Lake
from features.compute import arrow_schema

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from feast import FeatureStore, FeatureView

BATCH_ROWS = 20_000  # rows per batch: one Redis pipeline; a few MB of protos
QUEUE_DEPTH = 2  # converted batches waiting for the writer (memory bound: depth + 2 batches)
_DOUBLE_TAG = 0x29  # Value.double_val: field 5, wire type 1 (fixed 64-bit)


@dataclass
class WriteResult:
    """What :func:`write_batches` did (rows read, rows written, rows kept because newer)."""

    rows: int
    written: int
    skipped: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def write_day(
    store: FeatureStore,
    feature_view: str,
    view: str,
    day: dt.date,
    lake: Lake | None = None,
    batch_rows: int = BATCH_ROWS,
) -> WriteResult:
    """Write day D's partition of ``view`` online as the Feast view ``feature_view``."""
    engine = get_engine(lake)
    schema = arrow_schema(view)
    fv = store.get_feature_view(feature_view)
    needed = [schema.names[0], *(f.name for f in fv.features), "event_timestamp", "created"]
    dataset = engine.dataset(FEATURES, view, [day], schema=schema)
    batches = dataset.to_batches(columns=needed, batch_size=batch_rows)
    return write_batches(store, fv, batches)


def write_batches(
    store: FeatureStore, fv: FeatureView, batches: Iterable[pa.RecordBatch]
) -> WriteResult:
    """Convert ``batches`` (a thread) and write them online (this thread), overlapped."""
    convert, write = _writer(store, fv)
    started = time.perf_counter()
    rows = written = 0
    for converted in _prefetch((convert(b) for b in batches if b.num_rows), QUEUE_DEPTH):
        n, w = write(converted)
        rows, written = rows + n, written + w
    return WriteResult(rows, written, rows - written, time.perf_counter() - started)


def _prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, produced by a thread up to ``depth`` ahead; its errors re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((None, exc))
            return
        q.put((done, None))

    thread = threading.Thread(target=produce, name="online-convert", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _writer(store: FeatureStore, fv: FeatureView) -> tuple[Callable, Callable]:
    """(convert a batch, write a converted batch → (rows, written)) for the store's kind."""
    online = store.config.online_store
    if getattr(online, "type", None) == "redis" and str(online.redis_type.value) == "redis":
        redis = _RedisWrite(store, fv)
        return redis.convert, redis.write
    feast_rows = _FeastRows(store, fv)
    return feast_rows.convert, feast_rows.write


# --- conversion, per column ------------------------------------------------------------------


def _value_type(fv: FeatureView, name: str):
    return next(f for f in fv.features if f.name == name).dtype.to_value_type()


def _protos_by_dictionary(column: pa.Array, value_type, serialize: bool = False) -> np.ndarray:
    """One Feast ``ValueProto`` per row (or its bytes), converted once per distinct value."""
    import numpy as np
    import pyarrow as pa
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values

    encoded = column.dictionary_encode()
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    uniques = encoded.dictionary.to_numpy(zero_copy_only=False)
    protos = [*python_values_to_proto_values(uniques, value_type), Value()]  # last: null
    table = np.empty(len(protos), dtype=object)
    table[:] = [p.SerializeToString() for p in protos] if serialize else protos
    index = encoded.indices.fill_null(len(uniques)).to_numpy(zero_copy_only=False)
    return table[index]


def _serialized(column: pa.Array, value_type) -> np.ndarray:
    """Each row's ``ValueProto`` serialized, as Feast's Redis store writes it (object array)."""
    import numpy as np
    import pyarrow as pa
    from feast.value_type import ValueType

    if value_type == ValueType.DOUBLE and pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False).astype("<f8")
        n = len(values)
        buf = np.empty((n, 9), dtype=np.uint8)
        buf[:, 0] = _DOUBLE_TAG
        buf[:, 1:] = values.view(np.uint8).reshape(n, 8)
        out = np.empty(n, dtype=object)
        out[:] = buf.view("V9").ravel().tolist()
        out[np.isnan(values)] = b""  # Feast writes NaN and null as an empty Value
        return out
    return _protos_by_dictionary(column, value_type, serialize=True)


def _timestamps(column: pa.Array) -> tuple[list[dt.datetime], np.ndarray]:
    """(distinct timestamps as aware datetimes, each row's index into them)."""
    import pyarrow as pa

    encoded = column.dictionary_encode()
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    stamps = [_aware(t) for t in encoded.dictionary.to_pylist()]
    return stamps, encoded.indices.to_numpy(zero_copy_only=False)


def _aware(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


# --- Feast's online_write_batch (any online store) -------------------------------------------


class _FeastRows:
    """Batches as the rows Feast's providers write: through ``online_write_batch``."""

    def __init__(self, store: FeatureStore, fv: FeatureView):
        self.store, self.fv = store, fv
        self.provider = store._get_provider()
        self.key = fv.entity_columns[0].name
        self.key_type = fv.entity_columns[0].dtype.to_value_type()
        self.names = [f.name for f in fv.features]
        self.types = [f.dtype.to_value_type() for f in fv.features]

    def convert(self, batch: pa.RecordBatch) -> list[tuple]:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        ids = _protos_by_dictionary(batch.column(self.key), self.key_type)
        columns = [
            _protos_by_dictionary(batch.column(n), t)
            for n, t in zip(self.names, self.types, strict=True)
        ]
        keys = [EntityKey(join_keys=[self.key], entity_values=[v]) for v in ids]
        features = [dict(zip(self.names, row, strict=True)) for row in zip(*columns, strict=True)]
        stamps, at = _timestamps(batch.column("event_timestamp"))
        made, made_at = _timestamps(batch.column("created"))
        return [
            (k, f, stamps[i], made[j])
            for k, f, i, j in zip(keys, features, at, made_at, strict=True)
        ]

    def write(self, rows: list[tuple]) -> tuple[int, int]:
        self.provider.online_write_batch(self.store.config, self.fv, rows, progress=None)
        return len(rows), len(rows)


# --- Redis: Feast's hashes, pipelined --------------------------------------------------------


# Feast's Redis rule, server side: a row replaces the stored hash only when its timestamp is
# newer than the stored one (and than an earlier row of the same key in the batch); the stored
# ``_ts:<view>`` is a serialized google.protobuf.Timestamp (seconds: field 1, nanos: field 2).
_WRITE_NEWER = """
local ts_field, ttl, m = ARGV[1], tonumber(ARGV[2]), %(m)d
local f = {}
for j = 1, m do f[j] = ARGV[2 + j] end
local n_stamps, s0 = tonumber(ARGV[3 + m]), 4 + m
local secs, nans, blobs = {}, {}, {}
for t = 1, n_stamps do
  local at = s0 + 3 * (t - 1)
  secs[t], nans[t], blobs[t] = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), ARGV[at + 2]
end
local base, per = s0 + 3 * n_stamps, 1 + m
local function varint(s, pos)
  local v, mul = 0, 1
  while true do
    local b = string.byte(s, pos)
    pos = pos + 1
    v = v + (b %% 128) * mul
    if b < 128 then return v, pos end
    mul = mul * 128
  end
end
local function decode(blob)
  local sec, nanos, pos = 0, 0, 1
  while pos <= #blob do
    local tag = string.byte(blob, pos)
    local v
    v, pos = varint(blob, pos + 1)
    if tag == 8 then sec = v elseif tag == 16 then nanos = v end
  end
  return sec, nanos
end
local written = 0
for i, key in ipairs(KEYS) do
  local o = base + (i - 1) * per
  local t = tonumber(ARGV[o])
  local sec, nanos, blob = secs[t], nans[t], blobs[t]
  local ss, sn
  local prev = redis.call('HGET', key, ts_field)
  local skip = false
  if prev and prev ~= '' then
    if prev == blob then
      skip = true
    else
      local ps, pn = decode(prev)
      if ps > 0 or pn > 0 then ss, sn = ps, pn end
    end
  end
  if not skip and (not ss or sec > ss or (sec == ss and nanos > sn)) then
    redis.call('HSET', key, ts_field, blob, %(pairs)s)
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    written = written + 1
  end
end
return written
"""


def write_newer_script(features: int) -> str:
    """The Lua of :data:`_WRITE_NEWER` for a view of ``features`` features (HSET unrolled).

    ARGV: the ``_ts:<view>`` field, the TTL (0: none), the feature fields; the number of
    distinct timestamps and each one's seconds, nanos and serialized ``Timestamp``; then per
    row the (1-based) number of its timestamp and its serialized values. Rows run in order,
    each against what is stored by then, so a key named twice in a chunk keeps the newer row
    (what Feast's store decides with its per-batch bookkeeping).
    """
    pairs = ", ".join(f"f[{j}], ARGV[o + {j}]" for j in range(1, features + 1))
    return _WRITE_NEWER % {"m": features, "pairs": pairs}


SCRIPT_ROWS = 5_000  # rows per script call: Redis serves nothing else while one runs (~10 ms)


class _RedisWrite:
    """Batches as the hashes Feast's Redis online store writes, a script call per chunk."""

    def __init__(self, store: FeatureStore, fv: FeatureView):
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name

        config = store.config
        self.online = config.online_store
        client = store._get_provider().online_store._get_client(self.online)
        self.script = client.register_script(write_newer_script(len(fv.features)))
        name = _versioned_fv_name(fv, config)
        self.head_args = [
            f"_ts:{name}".encode(),
            int(self.online.key_ttl_seconds or 0),
            *(_mmh3(f"{name}:{f.name}") for f in fv.features),
        ]
        self.names = [f.name for f in fv.features]
        self.types = [f.dtype.to_value_type() for f in fv.features]
        self.key = fv.entity_columns[0].name
        self.head, self.tail = _key_parts(
            config.project, self.key, config.entity_key_serialization_version
        )

    def convert(self, batch: pa.RecordBatch) -> list[tuple[list, list]]:
        """Chunks of (keys, script arguments) of ``batch``."""
        import numpy as np

        pack, head, tail = struct.pack, self.head, self.tail
        ids = batch.column(self.key).to_pylist()
        keys = [head + pack("<I", len(b)) + b + tail for b in (s.encode() for s in ids)]
        stamps, at = _timestamps(batch.column("event_timestamp"))
        blobs, seconds, nanos = _proto_timestamps(stamps)
        stamp_args = [len(stamps), *(x for t in zip(seconds, nanos, blobs, strict=True) for x in t)]
        args = np.empty((batch.num_rows, 1 + len(self.names)), dtype=object)
        args[:, 0] = (at + 1).tolist()
        for k, (name, vtype) in enumerate(zip(self.names, self.types, strict=True)):
            args[:, 1 + k] = _serialized(batch.column(name), vtype)
        chunks = []
        for i in range(0, batch.num_rows, SCRIPT_ROWS):
            part = keys[i : i + SCRIPT_ROWS]
            rows = args[i : i + SCRIPT_ROWS].ravel().tolist()
            chunks.append((part, [*self.head_args, *stamp_args, *rows]))
        return chunks

    def write(self, chunks: list[tuple[list, list]]) -> tuple[int, int]:
        rows = written = 0
        for keys, args in chunks:
            written += int(self.script(keys=keys, args=args))
            rows += len(keys)
        return rows, written


def _key_parts(project: str, join_key: str, version: int) -> tuple[bytes, bytes]:
    """(bytes before, bytes after) the length-prefixed id in Feast's Redis key of an entity.

    Derived from Feast's own ``_redis_key`` and checked on a sample id, so a change in Feast's
    key encoding fails loudly here instead of writing keys ``get_online_features`` never reads.
    """
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def feast_key(value: str) -> bytes:
        entity = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])
        return _redis_key(project, entity, entity_key_serialization_version=version)

    empty = feast_key("")
    tail = project.encode()
    head = empty[: len(empty) - len(tail) - 4]
    if empty != head + struct.pack("<I", 0) + tail:
        raise RuntimeError(f"unexpected Feast Redis key layout (version {version})")
    sample = "p_0123456789abcdefé"
    encoded = sample.encode()
    if feast_key(sample) != head + struct.pack("<I", len(encoded)) + encoded + tail:
        raise RuntimeError(f"unexpected Feast Redis key layout (version {version})")
    return head, tail


def _proto_timestamps(stamps: list[dt.datetime]) -> tuple[list[bytes], list[int], list[int]]:
    """Feast's serialized ``Timestamp`` of each timestamp, its seconds and its nanos."""
    from feast import utils
    from google.protobuf.timestamp_pb2 import Timestamp

    blobs, seconds, nanos = [], [], []
    for stamp in stamps:
        ts = Timestamp()
        ts.FromDatetime(utils.make_tzaware(stamp))
        blobs.append(ts.SerializeToString())
        seconds.append(ts.seconds)
        nanos.append(ts.nanos)
    return blobs, seconds, nanos
