"""Streaming training data: Parquet shards encoded once into a local cache, read back as batches.

A large train split does not fit the trainer as pandas frames or as one block of tensors (20M rows
of encoded tensors are several GiB), so the streaming path works shard by shard:

1. :func:`fit_encoder` builds the :class:`~training.model.FeatureEncoder` without the whole frame:
   id vocabularies from per-shard unique ids, categorical vocabularies from the snapshots and
   per-shard unique values, numeric mean/std merged per shard (Chan's parallel update). The result
   is the encoder :meth:`FeatureEncoder.fit` gives on the concatenated frame (the same vocabularies;
   mean/std equal up to float rounding).
2. :func:`encode_shards` encodes every shard ONCE into compact NumPy arrays (int32 ids, codes and
   history, float32 numbers and weights), one ``.npy`` per column per shard, under a cache folder
   keyed by the shards, the encoder and the settings; ``manifest.json`` is written last, so a
   second epoch, a retry or a second run on the same data reads the cache and encodes nothing.
   It also keeps what training needs from the whole split (item counts for the logQ correction
   and the item prior, each item's first timestamp for freshness, the catalog's latest features).
   Each row's history (its user's last ``n`` positives before it, across shards) comes from one
   sort of (user code int32, timestamp int64, item code int32) of every row (:class:`HistoryPlan`):
   measured at 20M rows, 1.3 GB at peak (≈ 70 bytes per row, 19 s on this 2-core machine), then
   16 bytes per row (305 MB) kept while the shards are encoded.
3. :class:`ShardStream` (an ``IterableDataset``) yields ready batches (dicts of tensors) per
   epoch: a seeded shard order, rows split by DDP rank (the same number of rows, so the same
   number of batches, on every rank) and by DataLoader worker, shuffled in a bounded buffer of
   ``buffer_shards`` shards (memory = shard size × buffer, not the window). Shards are
   memory-mapped: only the slices being batched are read.

Memory of the whole path: one shard frame while encoding, the history pass above, and per
process the buffer of the stream; the model and optimizer as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from training.model import (
    MAX_TOKENS,
    FeatureColumns,
    FeatureEncoder,
    SideEncoder,
    _tokens,
    tokens_informative,
)

log = logging.getLogger(__name__)

SHARD_GLOB = "part-*.parquet"
MANIFEST = "manifest.json"
CACHE_VERSION = 1  # bump when the cached arrays change meaning
#: the columns of one encoded shard (``<name>.npy``), the side they feed and their batch dtype
USER_COLUMNS = ("id", "cat", "num", "has_features", "hist")
ITEM_COLUMNS = ("id", "cat", "num", "has_features")
INDEX_COLUMNS = {"id", "cat", "hist"}  # int32 on disk, int64 in a batch (embedding indices)


# --- shards ----------------------------------------------------------------------------------


def write_shards(frame: pd.DataFrame, folder: str | Path, rows_per_shard: int) -> list[Path]:
    """``frame`` as ``folder/part-00000.parquet``, … (``rows_per_shard`` rows at most), in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(SHARD_GLOB):
        old.unlink()
    paths = []
    for k, start in enumerate(range(0, max(len(frame), 1), max(rows_per_shard, 1))):
        part = frame.iloc[start : start + rows_per_shard]
        path = folder / f"part-{k:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path)
        paths.append(path)
    return paths


def read_shard(path: str | Path, splits: tuple[str, ...] | None, columns=None) -> pd.DataFrame:
    """One shard's rows of ``splits`` (all rows when None or without a ``split`` column)."""
    schema = pq.read_schema(path)
    cols = None if columns is None else [c for c in columns if c in schema.names]
    if cols is not None and splits is not None and "split" in schema.names and "split" not in cols:
        cols.append("split")
    frame = pq.read_table(path, columns=cols).to_pandas()
    if splits is not None and "split" in frame:
        frame = frame[frame["split"].isin(splits)].reset_index(drop=True)
    for c in ("user_id", "item_id"):
        if c in frame:
            frame[c] = frame[c].astype(str)
    return frame


def _stamps_ns(frame: pd.DataFrame) -> np.ndarray:
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    return stamps.dt.as_unit("ns").astype("int64").to_numpy()


# --- fitting the encoder without the whole frame ---------------------------------------------


@dataclass
class _Moments:
    """Count, mean and squared deviations of one numeric column, merged batch by batch."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        if not len(values):
            return
        n_b, mean_b = len(values), float(values.mean())
        m2_b = float(((values - mean_b) ** 2).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta**2 * self.n * n_b / n
        self.n = n

    def stats(self) -> tuple[float, float]:
        """(mean, sample std) as :meth:`SideEncoder.fit` computes them (0/1 when unknown)."""
        mean = self.mean if self.n else 0.0
        std = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 1.0
        return mean, std if std > 1e-9 else 1.0


@dataclass
class _SideFit:
    numeric: list[str]
    categorical: list[str]
    ids: set[str] = field(default_factory=set)
    moments: dict[str, _Moments] = field(default_factory=dict)
    values: dict[str, set[str]] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # string columns with a missing value

    def add(self, frame: pd.DataFrame, ids: pd.Series | None) -> None:
        if ids is not None:
            self.ids.update(ids.astype(str).unique().tolist())
        for c in self.numeric:
            if c in frame:
                col = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")
                self.moments.setdefault(c, _Moments()).add(col)
        for c in self.categorical:
            if c in frame:
                self.values.setdefault(c, set()).update(frame[c].dropna().astype(str).unique())
                if frame[c].isna().any():
                    self.missing.add(c)

    def encoder(self) -> SideEncoder:
        """As :meth:`SideEncoder.fit` would fit the whole frame (one-valued columns left out)."""
        numeric = [c for c in self.numeric if self.moments.get(c, _Moments()).m2 > 0]
        stats = [self.moments[c].stats() for c in numeric]
        cats, width = {}, 1
        for c in self.categorical:
            bags = [_tokens(v) for v in self.values.get(c, ())]
            tokens = sorted({t for bag in bags for t in bag})
            if tokens_informative(tokens, c in self.missing):
                cats[c] = tokens
                width = max([width, *(len(b) for b in bags)])
        return SideEncoder(
            sorted(self.ids),
            numeric,
            [m for m, _ in stats],
            [s for _, s in stats],
            cats,
            min(width, MAX_TOKENS),
        )


def fit_encoder(
    shards: list[Path],
    users: pd.DataFrame,
    items: pd.DataFrame,
    columns: FeatureColumns,
    splits: tuple[str, ...] | None = ("train",),
) -> FeatureEncoder:
    """:meth:`FeatureEncoder.fit` of the shards' rows plus the snapshots, one shard in memory."""
    user = _SideFit(columns.user_numeric, columns.user_categorical)
    item = _SideFit(columns.item_numeric, columns.item_categorical)
    wanted = ["user_id", "item_id", *columns.user, *columns.item]
    for path in shards:
        frame = read_shard(path, splits, wanted)
        user.add(frame, frame["user_id"])
        item.add(frame, frame["item_id"])
    user.add(users, None)
    item.add(items, None)
    return FeatureEncoder(user.encoder(), item.encoder())


def fitted_encoder(
    shards: list[Path],
    users: pd.DataFrame,
    items: pd.DataFrame,
    columns: FeatureColumns,
    cache: str | Path,
    splits: tuple[str, ...] | None = ("train",),
) -> FeatureEncoder:
    """:func:`fit_encoder`, kept as JSON under ``cache/`` (keyed by the shards, the snapshots, the
    columns and the splits): a retry or a refit on the same data does not read the shards again."""
    snap = [int(pd.util.hash_pandas_object(f, index=False).sum()) for f in (users, items)]
    key = shard_digest(shards, {"columns": columns.to_dict(), "splits": splits, "snap": snap})
    path = Path(cache) / f"encoder-{key}.json"
    if path.exists():
        return FeatureEncoder.from_dict(json.loads(path.read_text()))
    encoder = fit_encoder(shards, users, items, columns, splits)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(encoder.to_dict()))
    tmp.replace(path)
    return encoder


# --- encoding once ---------------------------------------------------------------------------


@dataclass
class Manifest:
    """An encoded cache: its folder, rows per shard and the whole split's item statistics."""

    folder: Path
    shard_rows: list[int]
    history_len: int
    weighted: bool

    @property
    def rows(self) -> int:
        return int(sum(self.shard_rows))

    def shard_dir(self, k: int) -> Path:
        return self.folder / f"shard-{k:05d}"

    def stats(self) -> dict[str, np.ndarray]:
        """``counts`` (positives per item index), ``weighted_counts`` (recency-weighted),
        ``first_ns`` (first row per item, int64 max when none) and ``span_ns`` ([min, max])."""
        with np.load(self.folder / "stats.npz") as z:
            return {k: z[k] for k in z.files}

    def catalog(self) -> dict[str, torch.Tensor]:
        """Item tensors of every vocabulary item (the full softmax's classes), as encoded."""
        with np.load(self.folder / "catalog.npz") as z:
            return {k: _batch_tensor(k, z[k]) for k in z.files}

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        d = json.loads((folder / MANIFEST).read_text())
        return cls(folder, d["shard_rows"], d["history_len"], d["weighted"])


def shard_digest(shards: list[Path], settings: dict[str, Any]) -> str:
    """A digest of the shards (path, size, mtime) and ``settings``."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for p in shards:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_key(shards: list[Path], encoder: FeatureEncoder, settings: dict[str, Any]) -> str:
    """A digest of the shards, the encoder and the settings: an encoded cache's folder name."""
    enc = hashlib.sha256(json.dumps(encoder.to_dict(), sort_keys=True).encode()).hexdigest()
    return shard_digest(shards, {**settings, "encoder": enc})


def encode_shards(
    shards: list[Path],
    encoder: FeatureEncoder,
    cache: str | Path,
    history_len: int,
    half_life_days: float,
    snapshot_items: pd.DataFrame | None = None,
    splits: tuple[str, ...] | None = ("train",),
    chunk_rows: int = 262_144,
) -> Manifest:
    """Encode ``shards`` once under ``cache/<key>/`` (see the module docstring); the manifest.

    A shard is kept as encoded chunks of at most ``chunk_rows`` rows (a day of a large lake is
    one Parquet shard of millions of rows; the stream's buffer holds a few chunks). A folder with
    a manifest is reused as it is: nothing is read or encoded again.
    """
    settings = {"v": CACHE_VERSION, "n": history_len, "hl": half_life_days, "splits": splits}
    settings["chunk"] = chunk_rows
    settings["items"] = None if snapshot_items is None else len(snapshot_items)
    folder = Path(cache) / cache_key(shards, encoder, settings)
    if (folder / MANIFEST).exists():
        return Manifest.load(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    keys = _read_keys(shards, encoder, splits)
    span = (int(keys["stamps"].min()), int(keys["stamps"].max())) if len(keys["stamps"]) else (0, 0)
    hist = HistoryPlan(keys["users"], keys["stamps"], keys["items"], history_len)
    del keys
    n_items = len(encoder.item.ids) + 1
    stats = {
        "counts": np.zeros(n_items),
        "weighted_counts": np.zeros(n_items),
        "first_ns": np.full(n_items, np.iinfo(np.int64).max),
        "span_ns": np.asarray(span, dtype=np.int64),
    }
    latest, sizes, offset = None, [], 0
    for path in shards:
        frame = read_shard(path, splits)
        arrays = _encode_frame(frame, encoder, half_life_days, span[1])
        arrays["user_hist"] = hist.rows(offset, len(frame))
        _add_stats(stats, arrays, _stamps_ns(frame))
        latest = _latest_items(latest, frame, encoder)
        for start in range(0, max(len(frame), 1), max(chunk_rows, 1)):
            part = {c: v[start : start + chunk_rows] for c, v in arrays.items()}
            _save(folder / f"shard-{len(sizes):05d}", part)
            sizes.append(len(part["user_id"]))
        offset += len(frame)
    np.savez(folder / "stats.npz", **stats)
    catalog = _catalog(encoder, latest, snapshot_items)
    np.savez(folder / "catalog.npz", **{k: v.numpy() for k, v in catalog.items()})
    weighted = bool(half_life_days) and offset > 0
    meta = {"shard_rows": sizes, "history_len": history_len, "weighted": weighted}
    (folder / MANIFEST).write_text(json.dumps(meta))  # last: the cache is complete
    log.info(
        "encoded %d rows in %d shards in %.1f s", offset, len(shards), time.perf_counter() - t0
    )
    return Manifest(folder, sizes, history_len, weighted)


def _read_keys(
    shards: list[Path], encoder: FeatureEncoder, splits: tuple[str, ...] | None
) -> dict[str, np.ndarray]:
    """(user code int32, stamp ns int64, item code int32) of every row, shards in order."""
    users, stamps, items = [], [], []
    for path in shards:
        frame = read_shard(path, splits, ["user_id", "item_id", "event_timestamp"])
        users.append(encoder.user.id_index(frame["user_id"].tolist()).astype(np.int32))
        items.append(encoder.item.id_index(frame["item_id"].tolist()).astype(np.int32))
        stamps.append(_stamps_ns(frame))
    cat = np.concatenate
    return {
        "users": cat(users) if users else np.zeros(0, np.int32),
        "stamps": cat(stamps) if stamps else np.zeros(0, np.int64),
        "items": cat(items) if items else np.zeros(0, np.int32),
    }


class HistoryPlan:
    """Each row's user's last ``n`` items strictly before it (:func:`training.model.history_index`
    over all shards at once), kept as three int32 arrays in (user, time) order plus each row's
    position in it; :meth:`rows` gives a shard's ``[rows, n]`` slice."""

    def __init__(self, users: np.ndarray, stamps: np.ndarray, items: np.ndarray, n: int):
        self.n = max(n, 0)
        rows = len(users)
        order = np.lexsort((stamps, users))  # stable: ties keep the shards' row order
        us, ts = users[order], stamps[order]
        self.items = items[order].astype(np.int32)
        pos = np.arange(rows, dtype=np.int64)
        new_user = np.r_[True, us[1:] != us[:-1]] if rows else np.zeros(0, bool)
        self.user_start = np.maximum.accumulate(np.where(new_user, pos, 0)).astype(np.int32)
        new_time = new_user | (np.r_[True, ts[1:] != ts[:-1]] if rows else new_user)
        self.first_same = np.maximum.accumulate(np.where(new_time, pos, 0)).astype(np.int32)
        del us, ts, new_user, new_time
        self.rank = np.empty(rows, dtype=np.int32)
        self.rank[order] = pos

    def rows(self, start: int, count: int) -> np.ndarray:
        out = np.zeros((count, self.n), dtype=np.int32)
        if not count or not self.n:
            return out
        r = self.rank[start : start + count]
        first, begin = self.first_same[r].astype(np.int64), self.user_start[r]
        for j in range(self.n):
            src = first - 1 - j
            ok = src >= begin
            out[ok, j] = self.items[src[ok]]
        return out


def _encode_frame(
    frame: pd.DataFrame, encoder: FeatureEncoder, half_life_days: float, newest_ns: int
) -> dict[str, np.ndarray]:
    """The compact arrays of one shard: ``user_*``, ``item_*`` and ``weight``."""
    out: dict[str, np.ndarray] = {}
    for side, enc, key in (("user", encoder.user, "user_id"), ("item", encoder.item, "item_id")):
        for name, t in enc.encode(frame[key].tolist(), frame).items():
            arr = t.numpy()
            out[f"{side}_{name}"] = arr.astype(np.int32 if name in INDEX_COLUMNS else np.float32)
    if half_life_days:
        age = (newest_ns - _stamps_ns(frame)) / 1e9 / 86_400.0
        out["weight"] = (0.5 ** (age / half_life_days)).astype(np.float32)
    return out


def _add_stats(stats: dict[str, np.ndarray], arrays: dict[str, np.ndarray], ns: np.ndarray) -> None:
    idx = arrays["item_id"].astype(np.int64)
    n = len(stats["counts"])
    stats["counts"] += np.bincount(idx, minlength=n)
    w = arrays.get("weight")
    stats["weighted_counts"] += np.bincount(
        idx, weights=None if w is None else w.astype("float64"), minlength=n
    )
    np.minimum.at(stats["first_ns"], idx, ns)


def _latest_items(
    latest: pd.DataFrame | None, frame: pd.DataFrame, encoder: FeatureEncoder
) -> pd.DataFrame:
    """Each item's latest training row's features so far (the catalog's fallback features)."""
    cols = [c for c in encoder.item.numeric + list(encoder.item.categorical) if c in frame]
    part = frame.sort_values("event_timestamp", kind="stable")[
        ["item_id", "event_timestamp", *cols]
    ]
    both = part if latest is None else pd.concat([latest, part], ignore_index=True)
    both = both.sort_values("event_timestamp", kind="stable")
    return both.drop_duplicates("item_id", keep="last").reset_index(drop=True)


def _catalog(
    encoder: FeatureEncoder, latest: pd.DataFrame | None, items: pd.DataFrame | None
) -> dict[str, torch.Tensor]:
    """As :func:`training.train.catalog_inputs`: the snapshot row, else the latest training row."""
    cols = encoder.item.numeric + list(encoder.item.categorical)
    parts = [] if latest is None else [latest[["item_id", *[c for c in cols if c in latest]]]]
    if items is not None:
        parts.append(items[["item_id", *[c for c in cols if c in items]]])
    frame = pd.concat(parts) if parts else pd.DataFrame({"item_id": []})
    frame = frame.drop_duplicates("item_id", keep="last").set_index("item_id")
    frame = frame.reindex(encoder.item.ids).reset_index()
    return encoder.item.encode(encoder.item.ids, frame)


def _save(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arr))


def _batch_tensor(name: str, arr: np.ndarray) -> torch.Tensor:
    """A batch column as the model takes it: embedding indices int64, the rest float32."""
    kind = name.split("_", 1)[-1]
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.long() if kind in INDEX_COLUMNS else t.float()


# --- the stream ------------------------------------------------------------------------------


def batch_count(rows: int, batch_size: int) -> int:
    """Batches of ``rows`` rows: full ones, the last short one merged when it has one row (as the
    in-memory path: a one-row batch has no negatives)."""
    full, rest = divmod(rows, batch_size)
    return full + (1 if rest >= 2 or (rest == 1 and full == 0) else 0)


class ShardStream(IterableDataset):
    """Ready batches ``{"user": {...}, "item": {...}, "weight": tensor}`` from an encoded cache.

    Per epoch (:meth:`set_epoch`): the shards in a seeded order form one sequence of rows; rank
    ``r`` of ``world_size`` takes the ``r``-th equal slice (``rows // world_size`` rows: the same
    number of batches on every rank; at most ``world_size - 1`` rows left out), and a DataLoader
    worker a whole-batch part of it. Rows are shuffled within a buffer of ``buffer_shards``
    shards' slices; ``peak_rows`` records the most rows held at once (in this process).
    """

    def __init__(
        self,
        manifest: Manifest,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        buffer_shards: int = 2,
    ):
        super().__init__()
        self.manifest, self.batch_size, self.seed = manifest, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.buffer_shards = max(1, buffer_shards)
        self.epoch, self.peak_rows = 0, 0
        self.columns = ["user_" + c for c in USER_COLUMNS] + ["item_" + c for c in ITEM_COLUMNS]
        if manifest.weighted:
            self.columns.append("weight")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def rank_rows(self) -> int:
        return self.manifest.rows // self.world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank (every rank the same)."""
        return batch_count(self.rank_rows, self.batch_size)

    def plan(self, worker: int = 0, workers: int = 1) -> list[tuple[int, int, int]]:
        """This rank's and worker's ``(shard, start, stop)`` slices this epoch, in reading order."""
        order = np.random.default_rng([self.seed, self.epoch]).permutation(
            len(self.manifest.shard_rows)
        )
        lo = self.rank * self.rank_rows
        full = self.rank_rows // self.batch_size
        cut = [lo + (full * w // workers) * self.batch_size for w in range(workers)]
        cut.append(lo + self.rank_rows)
        a, b = cut[worker], cut[worker + 1]
        out, pos = [], 0
        for k in order:
            n = self.manifest.shard_rows[k]
            s, e = max(a, pos) - pos, min(b, pos + n) - pos
            if s < e:
                out.append((int(k), int(s), int(e)))
            pos += n
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slices = self.plan(worker, workers)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        carry: dict[str, np.ndarray] | None = None
        pending: dict[str, np.ndarray] | None = None
        for start in range(0, len(slices), self.buffer_shards):
            window = [self._read(*s) for s in slices[start : start + self.buffer_shards]]
            if carry is not None:
                window.insert(0, carry)
            pool = {c: np.concatenate([w[c] for w in window]) for c in self.columns}
            n = len(pool["user_id"])
            self.peak_rows = max(self.peak_rows, n)
            perm = rng.permutation(n)
            pool = {c: v[perm] for c, v in pool.items()}
            full = n // self.batch_size * self.batch_size
            for s in range(0, full, self.batch_size):
                if pending is not None:
                    yield self._batch(pending)
                pending = {c: v[s : s + self.batch_size] for c, v in pool.items()}
            carry = {c: v[full:] for c, v in pool.items()}
        rest = 0 if carry is None else len(carry["user_id"])
        if pending is not None and rest == 1:  # a one-row batch has no negatives: merge it
            pending = {c: np.concatenate([pending[c], carry[c]]) for c in self.columns}
        elif rest:
            if pending is not None:
                yield self._batch(pending)
            pending = carry
        if pending is not None:
            yield self._batch(pending)

    def _read(self, shard: int, start: int, stop: int) -> dict[str, np.ndarray]:
        folder = self.manifest.shard_dir(shard)
        return {
            c: np.asarray(np.load(folder / f"{c}.npy", mmap_mode="r")[start:stop])
            for c in self.columns
        }

    @staticmethod
    def _batch(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {"user": {}, "item": {}}
        for c, v in arrays.items():
            side, _, name = c.partition("_")
            if c == "weight":
                out["weight"] = torch.from_numpy(v)
            else:
                out[side][name] = _batch_tensor(name, v)
        return out


def loader(stream: ShardStream, workers: int = 0, pin_memory: bool = False):
    """A DataLoader over the stream's ready batches (``workers`` processes read ahead)."""
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )
