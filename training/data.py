"""The training set: positives from validated events, features joined, split in time.

For a window ending on day E (``data.window_days`` days, E included):

    [ train days ........ ][ val days ][ holdout days ]
                                        ^ cutoff = first holdout day 00:00 UTC

* **Days** (the lineage, in ``meta.json``): ``days`` lists every day read; a window day without
  validated events is either in ``quarantined_days`` (the events gate failed it) or in
  ``days_without_data`` (no verdict: nothing arrived). A day the gate says it published but
  whose partition is missing fails the build (:func:`missing_days`). When none of the
  ``data.val_days`` calendar days before the holdout has data, validation is the last days that
  do; an empty validation or holdout split fails the build with the reason.
* **Positives** are ``click``, ``add_to_cart``, ``purchase`` and ``rating`` events with value
  ≥ ``data.min_rating`` (4 stars); ``view`` is exposure, not preference. Every positive event in
  the window is a training row, events of the same user at the same second included (a click →
  cart → purchase funnel is three rows: the stronger the evidence, the more weight).
* **Features** are joined by one function, :func:`join_features`: ``feast`` joins the feature
  service ``recommender_v1`` point-in-time through Feast (each interaction sees the features known
  at its timestamp); ``contract`` uses only the catalog/user attributes (genres, price, country,
  age band) and needs no feature store (small tests, first runs before features exist). No row is
  dropped for a missing feature: a missing value becomes a default (counts 0, other numbers the
  mean of the known values, strings ``unknown``) and the side's ``*_features_missing`` flag is 1;
  how many values were filled is logged and kept in ``meta.json`` (``filled``).
* **Interacted** (``interacted.parquet``): every (user, item) pair with any event before the
  cutoff, positive or not -- what evaluation excludes from a user's holdout recommendations.
* The **snapshots** (``users``, ``items``) are what serving would know at the cutoff: the features
  of the day before the holdout. The model is evaluated on the holdout with them, so nothing from
  the holdout leaks into training or into the features used to score it.

The set is written as Parquet under one location (a lake prefix or a local folder) with a
``meta.json``; Airflow tasks pass that location through XCom, never the frames.

**At scale** the window is never one frame: :func:`build_training_set` runs one piece per day
through the engine (:mod:`core.engine`: in this process with DuckDB, as Ray tasks with Ray).
:func:`train_piece` reads that day's validated events (the columns it needs), keeps the
positives, joins the features point-in-time (:func:`features.pit.join_day`: the same values as
Feast's ``get_historical_features``, reading only the feature partitions of that day) and writes
the shard ``train/part-<day>.parquet``, returning a small summary (rows, values filled, sums
for the means). The defaults that need the whole split (the means) are computed from the
summaries and filled into the shards that lack them (:func:`fill_piece`). Holdout, snapshots and
``interacted`` are written beside them; ``meta.json`` lists ``train_shards`` and is written last.
:func:`load_training_set` concatenates the shards (the frames are those of the in-memory path);
a streaming trainer reads :func:`train_shards` itself.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.contract import EVENTS, ITEMS, TABLES, USERS
from core.engine import Engine, get_engine
from core.errors import FlywheelError
from core.lake import QUALITY, TRAINING_SETS, VALIDATED, Lake, get_lake, parquet_bytes
from core.names import FEATURE_SERVICE, FEATURE_TTL_DAYS, ITEM_VIEW, USER_VIEW
from features.columns import (
    ITEM_CATEGORICAL,
    ITEM_FEATURES,
    USER_CATEGORICAL,
    USER_FEATURES,
    is_count,
)
from features.compute import read_features, serving_day
from features.pit import join_day
from features.store import build_training_frame
from training.config import DataConfig
from training.model import MISSING_FLAGS, FeatureColumns
from validation.results import RESULTS, read_result

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)

FRAMES = ("train", "holdout", "users", "items")
OPTIONAL_FRAMES = ("interacted",)  # absent in sets written before it existed
KEY_COLUMNS = ("user_id", "item_id", "event_timestamp", "split")  # a lean set's train frame
UNKNOWN = "unknown"  # the default of a missing string feature
#: What :func:`build_training_set` returns (and Airflow passes on through XCom) besides the location.
SUMMARY_KEYS = (
    "window_start",
    "holdout_start",
    "window_end",
    "rows",
    "users",
    "items",
    "validation_ids",
    "feature_service",
    "days_used",
    "quarantined_days",
)
CONTRACT_COLUMNS = FeatureColumns(
    user_numeric=[MISSING_FLAGS["user"]],
    user_categorical=["user_country", "user_age_bucket"],
    item_numeric=["item_price", MISSING_FLAGS["item"]],
    item_categorical=["item_category"],
)


class TrainingDataError(FlywheelError):
    """The training data cannot train a model (no positives, one user, empty holdout, …)."""


@dataclass
class TrainingSet:
    train: pd.DataFrame  # user_id, item_id, event_timestamp, split ("train"|"val"), + features
    holdout: pd.DataFrame  # user_id, item_id, event_timestamp (positives of the holdout days)
    users: pd.DataFrame  # user_id + user features at the cutoff
    items: pd.DataFrame  # item_id + item features at the cutoff (the catalog)
    meta: dict[str, Any]
    interacted: pd.DataFrame | None = None  # user_id, item_id: any event before the cutoff
    lean: bool = False  # ``train`` holds KEY_COLUMNS only (a streamed set: features in shards)

    @property
    def columns(self) -> FeatureColumns:
        return FeatureColumns(**self.meta["feature_columns"])

    def split(self, name: str) -> pd.DataFrame:
        return self.train[self.train["split"] == name].reset_index(drop=True)

    def split_rows(self, name: str) -> int:
        """Rows of the ``train`` or ``val`` split (without copying them)."""
        return int((self.train["split"] == name).sum())

    def seen(self, users: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Items each user had as positives before the holdout (train + val); only ``users``'
        when given (a holdout of 100k users does not need a million users' sets)."""
        return item_sets([self.train], users)

    def interacted_before(self, users: Iterable[str] | None = None) -> dict[str, set[str]]:
        """Items each user interacted with in any way before the holdout (positives included);
        only ``users``' when given."""
        frames = [self.train]
        if self.interacted is not None and len(self.interacted):
            frames.append(self.interacted)
        return item_sets(frames, users)

    def histories(self, n: int, before: str = "holdout") -> dict[str, list[str]]:
        """Each user's last ``n`` positive items (oldest first) known before the holdout
        (``before="holdout"``: train + val rows) or before validation (``"val"``: train rows);
        rows at the same time keep their order in the set."""
        rows = self.train if before == "holdout" else self.split("train")
        if n <= 0 or rows.empty:
            return {}
        codes, uniques = pd.factorize(rows["user_id"], sort=True)
        stamps = pd.to_datetime(rows["event_timestamp"], utc=True).astype("int64").to_numpy()
        order = np.lexsort((stamps, codes))  # stable: ties keep the set's row order
        users, items = codes[order], rows["item_id"].to_numpy()[order]
        end = np.r_[np.flatnonzero(users[1:] != users[:-1]), len(users) - 1] + 1
        start = np.maximum(np.r_[0, end[:-1]], end - n)
        return {
            uniques[users[b - 1]]: items[a:b].tolist()
            for a, b in zip(start.tolist(), end.tolist(), strict=True)
        }

    def truth(self, exclude_seen: bool) -> dict[str, set[str]]:
        """Holdout positives per user (minus the already seen ones when ``exclude_seen``)."""
        truth = self.holdout.groupby("user_id")["item_id"].agg(set).to_dict()
        if exclude_seen:
            seen = self.seen(truth)
            truth = {u: items - seen.get(u, set()) for u, items in truth.items()}
        return {u: s for u, s in truth.items() if s}


def item_sets(frames: list[pd.DataFrame], users: Iterable[str] | None) -> dict[str, set[str]]:
    """``{user: set of items}`` of the (user_id, item_id) rows of ``frames``; only ``users``'
    when given (each frame filtered before they are put together: no full-size copy)."""
    wanted = None if users is None else pd.Index(list(users), dtype=object)
    parts = [
        f[["user_id", "item_id"]]
        if wanted is None
        else f.loc[f["user_id"].isin(wanted), ["user_id", "item_id"]]
        for f in frames
    ]
    pairs = parts[0] if len(parts) == 1 else pd.concat(parts)
    return pairs.groupby("user_id")["item_id"].agg(set).to_dict()


# --- windows --------------------------------------------------------------------------------


def window(
    end_day: dt.date, cfg: DataConfig, first_day: dt.date | None = None
) -> dict[str, dt.date]:
    """First/last day of the window and where val and holdout begin.

    ``data.window_days="all"`` starts the window on ``first_day`` (the first validated day).
    """
    if cfg.window_days == "all":
        start = min(first_day or end_day, end_day)
    else:
        start = end_day - dt.timedelta(days=int(cfg.window_days) - 1)
    holdout_start = end_day - dt.timedelta(days=cfg.holdout_days - 1)
    val_start = holdout_start - dt.timedelta(days=cfg.val_days)
    return {"start": start, "val_start": val_start, "holdout_start": holdout_start, "end": end_day}


def _midnight(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


# --- reading validated data -----------------------------------------------------------------


def read_validated(lake: Lake, table: str, days: list[dt.date]) -> pd.DataFrame:
    """The validated rows of a contract ``table`` on ``days``, cast to the contract's types."""
    return lake.read(table, days, schema=TABLES[table].arrow_schema()).to_pandas()


def positives(events: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Positive interactions (see the module docstring): every positive event, in time order."""
    is_pos = events["event_type"].isin([e for e in cfg.positive_events if e != "rating"])
    if "rating" in cfg.positive_events:
        is_pos |= (events["event_type"] == "rating") & (events["value"] >= cfg.min_rating)
    pos = events.loc[is_pos, ["user_id", "item_id", "event_ts"]].rename(
        columns={"event_ts": "event_timestamp"}
    )
    return pos.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def validation_ids(lake: Lake, days: list[dt.date]) -> list[str]:
    """Great Expectations validation ids of the events gate for ``days`` (where recorded)."""
    results = [read_result(lake, d, EVENTS.name) for d in days]
    return [str(r["validation_id"]) for r in results if r and r.get("validation_id")]


# --- features -------------------------------------------------------------------------------


def feature_columns(source: str) -> FeatureColumns:
    """The columns each tower reads: the feature service's, or the contract attributes."""
    if source == "contract":
        return CONTRACT_COLUMNS
    return FeatureColumns(
        [*USER_FEATURES, MISSING_FLAGS["user"]],
        list(USER_CATEGORICAL),
        [*ITEM_FEATURES, MISSING_FLAGS["item"]],
        list(ITEM_CATEGORICAL),
    )


def _contract_attributes(lake: Lake, end_day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    def upto_end(table: str) -> list[dt.date]:
        return [d for d in lake.partitions(VALIDATED, table) if d <= end_day]

    items = read_validated(lake, ITEMS.name, upto_end(ITEMS.name))
    users = read_validated(lake, USERS.name, upto_end(USERS.name))
    items = items.rename(columns={"category": "item_category", "price": "item_price"})
    users = users.rename(columns={"country": "user_country", "age_bucket": "user_age_bucket"})
    return (
        users.drop_duplicates("user_id", keep="last")[
            ["user_id", "signup_ts", "user_country", "user_age_bucket"]
        ],
        items.drop_duplicates("item_id", keep="last")[
            ["item_id", "created_ts", "item_category", "item_price"]
        ],
    )


def join_features(
    lake: Lake, entity_df: pd.DataFrame, source: str, end_day: dt.date
) -> tuple[pd.DataFrame, dict[str, int]]:
    """(``entity_df`` plus every feature column, values filled per column).

    The single place where features are joined: ``feast`` is point-in-time through the feature
    service; ``contract`` attaches the static attributes of validated items and users. Every
    row of ``entity_df`` comes back, in order; missing values are filled (:func:`fill_missing`).
    """
    if source == "feast":
        out = build_training_frame(entity_df, missing_ok=True)
    else:
        users, items = _contract_attributes(lake, end_day)
        out = entity_df.merge(users.drop(columns="signup_ts"), on="user_id", how="left")
        out = out.merge(items.drop(columns="created_ts"), on="item_id", how="left")
    return fill_missing(out, feature_columns(source))


def fill_missing(
    frame: pd.DataFrame, columns: FeatureColumns
) -> tuple[pd.DataFrame, dict[str, int]]:
    """(``frame`` with no missing feature value, values filled per column).

    A missing window count is 0 (nothing known happened), another number the mean of the known
    values, a string :data:`UNKNOWN`; each side's ``*_features_missing`` flag is 1 on rows where
    any of that side's features was missing. Columns absent from ``frame`` are added (all filled).
    """
    out = frame.copy()
    filled: dict[str, int] = {}
    sides = (
        ("user", columns.user_numeric, columns.user_categorical),
        ("item", columns.item_numeric, columns.item_categorical),
    )
    for side, numeric, categorical in sides:
        flag = MISSING_FLAGS[side]
        cols = [c for c in numeric + categorical if c != flag]
        for c in cols:
            if c not in out:
                out[c] = None
        missing = out[cols].isna() if cols else pd.DataFrame(index=out.index)
        if flag in numeric:
            out[flag] = missing.any(axis=1).astype("float64") if cols else 0.0
        for c in cols:
            n = int(missing[c].sum())
            filled[c] = n
            if not n:
                continue
            if c in categorical:
                out[c] = out[c].astype(object).where(out[c].notna(), UNKNOWN)
                continue
            values = pd.to_numeric(out[c], errors="coerce").astype("float64")
            known = values.dropna()
            default = 0.0 if is_count(c) or known.empty else float(known.mean())
            out[c] = values.fillna(default)
    return out, filled


def snapshots(
    lake: Lake, source: str, cutoff_day: dt.date, end_day: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(users, items) as serving would see them on ``cutoff_day``: features of the day before."""
    if source == "feast":
        day = serving_day(lake, cutoff_day)  # what serving reads on the cutoff day
        if day is None:
            raise TrainingDataError(
                f"no features within the TTL before {cutoff_day} (features/<view>/dt=…/): "
                "run the build_features DAG for those days first"
            )
        users = read_features(lake, USER_VIEW, day, day).drop(
            columns=["event_timestamp", "created", "day"], errors="ignore"
        )
        items = read_features(lake, ITEM_VIEW, day, day).drop(
            columns=["event_timestamp", "created", "day"], errors="ignore"
        )
    else:
        users, items = _contract_attributes(lake, end_day)
        cut = _midnight(cutoff_day)
        users = users[users["signup_ts"] < cut].drop(columns="signup_ts")
        items = items[items["created_ts"] < cut].drop(columns="created_ts")
    cols = feature_columns(source)
    user_cols = FeatureColumns(cols.user_numeric, cols.user_categorical, [], [])
    item_cols = FeatureColumns([], [], cols.item_numeric, cols.item_categorical)
    users = fill_missing(users.reset_index(drop=True), user_cols)[0]
    items = fill_missing(items.reset_index(drop=True), item_cols)[0]
    return users, items


# --- building and storing -------------------------------------------------------------------


def build_training_set(
    lake: Lake,
    end_day: dt.date,
    cfg: DataConfig,
    location: str | Path | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Build the set for the window ending on ``end_day`` and write it to ``location``.

    ``location`` is a lake prefix (default ``training_sets/dt=<end_day>/``) or a local folder
    (a :class:`~pathlib.Path`). The train rows are built a day at a time through the engine
    (:func:`train_piece`: one Parquet shard under ``train/`` per piece of consecutive days, at
    most :data:`MAX_PIECES`), never as one frame.
    Returns a small summary (location, rows, users, window, ids), fit for XCom. Raises
    :class:`TrainingDataError` when no model can be trained from it (nothing is left written).
    """
    w = window(end_day, cfg, min(lake.partitions(VALIDATED, EVENTS.name), default=None))
    days, missing = window_days(lake, w, cfg.feature_source)
    w["val_start"] = validation_start(days, w, cfg)
    engine = engine or get_engine(lake)
    where = location or f"{TRAINING_SETS}/dt={end_day.isoformat()}/"
    spec = PieceSpec.of(lake, engine, where, w, cfg)
    holdout = pa.concat_tables(
        [day_positives(engine, d, spec) for d in days if d >= w["holdout_start"]]
        or [_positives_schema().empty_table()]
    )
    train_days = [d for d in days if d < w["holdout_start"]]
    pieces = engine.map(train_piece, piece_days(train_days), spec=spec)
    con = engine.connect()  # the window-wide steps: counts over the shards, interacted pairs
    try:
        meta, frames = _finish(con, engine, spec, w, (days, missing), cfg, pieces, holdout)
    except Exception:  # a set that cannot train leaves nothing behind, as before
        _remove_shards(lake, where, pieces)
        raise
    finally:
        con.close()
    filled = meta["filled"]
    where = _put_files(
        lake,
        where,
        {f"{n}.parquet": parquet_bytes(t) for n, t in frames.items()},
        meta,
        keep=meta["train_shards"],
    )
    log.info(
        "training set %s (%s engine, %d shards): %s; rows with missing features (filled) %s; "
        "values filled %s",
        where,
        engine.name,
        len(meta["train_shards"]),
        meta["rows"],
        meta["rows_with_missing_features"],
        {c: n for c, n in filled.items() if n},
    )
    return {"location": where, **{k: meta[k] for k in SUMMARY_KEYS}}


def _finish(
    con: duckdb.DuckDBPyConnection,
    engine: Engine,
    spec: PieceSpec,
    w: dict[str, dt.date],
    days_missing: tuple[list[dt.date], dict[str, list[str]]],
    cfg: DataConfig,
    pieces: list[dict[str, Any]],
    holdout: pa.Table,
) -> tuple[dict[str, Any], dict[str, pa.Table]]:
    """After the pieces: the split's checks, the mean fill, snapshots, interacted, the meta."""
    lake, source = engine.lake, cfg.feature_source
    days, missing = days_missing
    n_users = _check_split(con, engine, spec, pieces, holdout.num_rows, w, cfg)
    defaults = fill_defaults(pieces, source)
    todo = [p["shard"] for p in pieces if p["shard"] and p["unfilled"]]
    engine.map(fill_piece, todo, spec=spec, defaults=defaults)
    users, items = snapshots(lake, source, w["holdout_start"], w["end"])
    extra = _extra_items(con, engine, spec, pieces, items)
    if extra:  # interacted items missing from the snapshot (contract tables trimmed) get scored
        items = pd.concat([items, pd.DataFrame({"item_id": extra})], ignore_index=True)
        items = fill_missing(items, FeatureColumns([], [], *_item_columns(source)))[0]
    meta = _meta(lake, w, days, missing, cfg, pieces, holdout.num_rows)
    meta.update(users=n_users, items=len(items), engine=engine.name)
    before = [d for d in days if d < w["holdout_start"]]
    frames = {
        "holdout": holdout,
        "users": pa.Table.from_pandas(users, preserve_index=False),
        "items": pa.Table.from_pandas(items, preserve_index=False),
        "interacted": interactions_table(con, engine, before, w),
    }
    return meta, frames


def _meta(
    lake: Lake,
    w: dict[str, dt.date],
    days: list[dt.date],
    missing: dict[str, list[str]],
    cfg: DataConfig,
    pieces: list[dict[str, Any]],
    holdout_rows: int,
) -> dict[str, Any]:
    """``meta.json`` of a set built from ``pieces`` (``users``/``items``/``engine`` added after)."""
    source = cfg.feature_source
    return {
        "window_start": w["start"].isoformat(),
        "val_start": w["val_start"].isoformat(),
        "holdout_start": w["holdout_start"].isoformat(),
        "window_end": w["end"].isoformat(),
        "days": [d.isoformat() for d in days],
        "days_used": len(days),
        **missing,  # quarantined_days, days_without_data
        "feature_source": source,
        "feature_service": _feature_service(source),
        "feature_columns": feature_columns(source).to_dict(),
        "validation_ids": validation_ids(lake, days),
        "rows": {**_sum_counts(pieces, "rows"), "holdout": holdout_rows},
        "filled": _sum_counts(pieces, "filled"),
        "rows_with_missing_features": _sum_counts(pieces, "flagged"),
        "users": 0,
        "items": 0,
        "train_shards": [p["shard"] for p in pieces if p["shard"]],
    }


def _item_columns(source: str) -> tuple[list[str], list[str]]:
    cols = feature_columns(source)
    return cols.item_numeric, cols.item_categorical


def interactions_before(events: pd.DataFrame, w: dict[str, dt.date]) -> pd.DataFrame:
    """Distinct (user, item) pairs with any event (views, low ratings…) before the cutoff."""
    cut = events["event_ts"] < _midnight(w["holdout_start"])
    pairs = events.loc[cut, ["user_id", "item_id"]].drop_duplicates()
    return pairs.astype(str).reset_index(drop=True)


def window_days(
    lake: Lake, w: dict[str, dt.date], source: str
) -> tuple[list[dt.date], dict[str, list[str]]]:
    """(days of the window that can be read, the other days by why: see :func:`missing_days`).

    Every validated day is read: with ``feast`` a row of a day without features within the
    views' TTL (the first days of a history) keeps its row, with defaults and the missing flags
    (:func:`fill_missing`); such days are logged.
    """
    available = set(lake.partitions(VALIDATED, EVENTS.name))
    every = _days(w["start"], w["end"])
    days = [d for d in every if d in available]
    if not days:
        raise TrainingDataError(
            f"no validated events between {w['start']} and {w['end']} "
            f"({lake.url(f'{VALIDATED}/{EVENTS.name}/')}); ingest those days first"
        )
    missing = missing_days(lake, [d for d in every if d not in available])
    if source == "feast":
        bare = [d for d in days if d < w["holdout_start"] and serving_day(lake, d) is None]
        if bare:
            log.warning(
                "no features within %d days before %d day(s) (%s…): their rows get default "
                "feature values and the *_features_missing flags",
                FEATURE_TTL_DAYS,
                len(bare),
                bare[0].isoformat(),
            )
    return days, missing


def missing_days(lake: Lake, days: list[dt.date]) -> dict[str, list[str]]:
    """Window days without validated events, by the events gate's latest verdict:
    ``quarantined_days`` (it failed them) and ``days_without_data`` (no verdict: nothing came).

    A day the gate says it *published* but whose partition is not there is neither: the lake is
    inconsistent (a partition deleted by hand, a publication being replaced), and training on
    the rest would quietly train on less than the lineage claims, so it raises
    :class:`~core.errors.FlywheelError` (not :class:`TrainingDataError`: the DAG task fails and
    its retries wait for the re-run, rather than skipping as for too little history).
    """
    judged = set(lake.partitions(QUALITY, RESULTS)) & set(days)
    verdicts = {d: read_result(lake, d, EVENTS.name) for d in sorted(judged)}
    gone = [d.isoformat() for d, r in verdicts.items() if r and r.get("published")]
    if gone:
        raise FlywheelError(
            f"the events gate published {', '.join(gone)} but {lake.url(f'{VALIDATED}/{EVENTS.name}/')} "
            "has no partition for it: re-run ingest_events for that day (or wait for the re-run "
            "in progress) before training"
        )
    failed = {d for d, r in verdicts.items() if r is not None}
    return {
        "quarantined_days": [d.isoformat() for d in days if d in failed],
        "days_without_data": [d.isoformat() for d in days if d not in failed],
    }


def validation_start(days: list[dt.date], w: dict[str, dt.date], cfg: DataConfig) -> dt.date:
    """First validation day: the ``val_days`` calendar days before the holdout, or — when none
    of them has validated events (quarantined, a gap in a real history) — the last ``val_days``
    days *with data* before it, so early stopping is never fed an empty split by the calendar.
    """
    before = [d for d in days if d < w["holdout_start"]]
    if cfg.val_days == 0 or not before or before[-1] >= w["val_start"]:
        return w["val_start"]
    return before[-min(cfg.val_days, len(before))]


def temporal_split(
    pos: pd.DataFrame, w: dict[str, dt.date], cfg: DataConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train + val rows with a ``split`` column, holdout rows); raises when either cannot serve."""
    span = f"{w['start']}..{w['end']}"
    if pos.empty:
        raise TrainingDataError(
            f"no positive interactions ({', '.join(cfg.positive_events)}; ratings ≥ {cfg.min_rating:g}) "
            f"in validated events {span}: nothing to learn from"
        )
    cutoff, val_cut = _midnight(w["holdout_start"]), _midnight(w["val_start"])
    before = pos[pos["event_timestamp"] < cutoff]
    holdout = pos[pos["event_timestamp"] >= cutoff].reset_index(drop=True)
    n_users = before["user_id"].nunique()
    if n_users < 2:
        raise TrainingDataError(
            f"the training window {w['start']}..{w['val_start'] - dt.timedelta(days=1)} has positives from "
            f"{n_users} user(s); at least 2 users are needed (in-batch negatives, evaluation)"
        )
    if holdout.empty:
        raise TrainingDataError(
            f"no positive interactions in the holdout days {w['holdout_start']}..{w['end']}: cannot evaluate"
        )
    before = before.assign(
        split=["val" if t >= val_cut else "train" for t in before["event_timestamp"]]
    )
    if not (before["split"] == "train").any():
        raise TrainingDataError(
            f"no positive interactions before {w['val_start']} (train split of {span} is empty)"
        )
    if cfg.val_days and not (before["split"] == "val").any():
        raise TrainingDataError(
            f"no positive interactions in the validation days {w['val_start']}.."
            f"{w['holdout_start'] - dt.timedelta(days=1)}: early stopping would run on nothing"
        )
    return before.reset_index(drop=True), holdout


def _feature_service(source: str) -> str:
    return FEATURE_SERVICE if source == "feast" else "contract"


def write_training_set(
    lake: Lake, frames: dict[str, pd.DataFrame], meta: dict, location: str | Path
) -> str:
    """Write the frames and ``meta.json``; a local folder when ``location`` is a Path."""
    files = {
        f"{name}.parquet": parquet_bytes(pa.Table.from_pandas(df, preserve_index=False))
        for name, df in frames.items()
    }
    files["meta.json"] = json.dumps(meta, indent=2).encode()
    if isinstance(location, Path):
        location.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (location / name).write_bytes(data)
        return str(location)
    prefix = location if location.endswith("/") else location + "/"
    lake.replace_partition(prefix, files)
    return prefix


# --- the build, day by day through the engine -----------------------------------------------


@dataclass(frozen=True)
class PieceSpec:
    """What a piece of the build needs (picklable: pieces may run as Ray tasks elsewhere)."""

    lake_uri: str
    endpoint_url: str | None
    engine: str  # the engine that runs the pieces (for the record)
    location: str  # a lake prefix ending in "/", or a local folder
    local: bool  # ``location`` is a local folder (a Path was given)
    positive_events: tuple[str, ...]
    min_rating: float
    val_start: dt.date
    holdout_start: dt.date
    end_day: dt.date
    source: str
    build: str  # this build's id (a cache key of the pieces)

    @classmethod
    def of(
        cls,
        lake: Lake,
        engine: Engine,
        location: str | Path,
        w: dict[str, dt.date],
        cfg: DataConfig,
    ) -> PieceSpec:
        local = isinstance(location, Path)
        where = str(location) if local else _as_prefix(str(location))
        return cls(
            lake_uri=lake.uri,
            endpoint_url=getattr(lake, "endpoint_url", None),
            engine=engine.name,
            location=where,
            local=local,
            positive_events=tuple(cfg.positive_events),
            min_rating=float(cfg.min_rating),
            val_start=w["val_start"],
            holdout_start=w["holdout_start"],
            end_day=w["end"],
            source=cfg.feature_source,
            build=uuid.uuid4().hex,
        )

    def open_engine(self) -> Engine:
        """The engine a piece reads through where it runs: DuckDB on that node (a piece maps
        nothing itself; with Ray it is a task on some worker)."""
        return get_engine(Lake.from_uri(self.lake_uri, self.endpoint_url), "duckdb")

    def shard_path(self, name: str) -> str:
        """Where shard ``name`` lives: a local path, or a lake key."""
        if self.local:
            return str(Path(self.location) / SHARDS / name)
        return f"{self.location}{SHARDS}/{name}"


SHARDS = "train"  # the folder of the train shards inside a set


def _as_prefix(location: str) -> str:
    return location if location.endswith("/") else location + "/"


def _positives_schema() -> pa.Schema:
    ts = EVENTS.arrow_schema().field("event_ts").type
    return pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_timestamp", ts)])


def day_positives(engine: Engine, day: dt.date, spec: PieceSpec) -> pa.Table:
    """Positive events of validated ``day`` (user_id, item_id, event_timestamp), in time order:
    :func:`positives` of one day, reading only the columns it needs."""
    import pyarrow.dataset as pads

    data = engine.dataset(VALIDATED, EVENTS.name, [day], schema=EVENTS.arrow_schema())
    etype = pads.field("event_type")
    cond = etype.isin([e for e in spec.positive_events if e != "rating"])
    if "rating" in spec.positive_events:
        cond = cond | ((etype == "rating") & (pads.field("value") >= spec.min_rating))
    table = data.to_table(columns=["user_id", "item_id", "event_ts"], filter=cond)
    table = table.take(pc.sort_indices(table, [("event_ts", "ascending")]))  # stable
    return table.rename_columns(_positives_schema().names).cast(_positives_schema())


#: Most pieces a build is cut into: a window of more days groups consecutive days per piece
#: (a real history has thousands of small days; a piece has a fixed cost of its own).
MAX_PIECES = 64


def piece_days(days: list[dt.date], most: int = MAX_PIECES) -> list[list[dt.date]]:
    """``days`` (ascending) as at most ``most`` runs of consecutive days, equal in length."""
    size = max(1, -(-len(days) // most))
    return [days[i : i + size] for i in range(0, len(days), size)]


def train_piece(days: list[dt.date], spec: PieceSpec) -> dict[str, Any]:
    """Some days of the train split: positives + features (filled where it needs no other
    day) written as the shard ``train/part-<first day>.parquet``; returns a small summary.

    Counts are filled with 0, strings with :data:`UNKNOWN` and the ``*_features_missing`` flags
    set here; other numbers stay null until :func:`fill_piece` (their default is the mean over
    the whole split: the summary carries the sums and counts of known values).
    """
    engine = spec.open_engine()
    parts = [t for t in (_day_rows(engine, day, spec) for day in days) if t is not None]
    empty = {"day": days[0].isoformat(), "shard": None, "rows": {"train": 0, "val": 0}}
    if not parts:
        return {**empty, "filled": {}, "flagged": {}, "sums": {}, "known": {}, "unfilled": False}
    rows = pa.concat_tables(parts)
    if spec.source != "feast":
        rows = _contract_join(spec, rows)
    n_val = int(pc.sum(pc.equal(rows["split"], "val")).as_py() or 0)
    table, stats = fill_known(rows, feature_columns(spec.source))
    name = f"part-{days[0].isoformat()}.parquet"
    _write_shard(engine.lake, spec, name, table)
    return {
        **empty,
        "shard": name,
        "rows": {"train": table.num_rows - n_val, "val": n_val},
        **stats,
    }


def _day_rows(engine: Engine, day: dt.date, spec: PieceSpec) -> pa.Table | None:
    """One day's train/val positives with their split (and, from Feast, their features)."""
    rows = day_positives(engine, day, spec)
    cut = pa.scalar(_midnight(spec.holdout_start), rows["event_timestamp"].type)
    rows = rows.filter(pc.less(rows["event_timestamp"], cut))
    if rows.num_rows == 0:
        return None
    val_cut = pa.scalar(_midnight(spec.val_start), rows["event_timestamp"].type)
    val = pc.greater_equal(rows["event_timestamp"], val_cut)
    rows = rows.append_column("split", pc.if_else(val, "val", "train"))
    if spec.source == "feast":
        # what build_training_frame returns: nanosecond timestamps
        rows = rows.set_column(
            2, "event_timestamp", rows["event_timestamp"].cast(pa.timestamp("ns", tz="UTC"))
        )
        feats = join_day(engine, rows, day)
        for name in feats.column_names:
            rows = rows.append_column(name, feats[name])
    return rows


@functools.lru_cache(maxsize=1)
def _build_attributes(
    lake_uri: str, endpoint_url: str | None, end_day: dt.date, build: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`_contract_attributes`, read once per build and process (the pieces of a build
    that run here share it; ``build`` keeps another build from seeing it)."""
    return _contract_attributes(Lake.from_uri(lake_uri, endpoint_url), end_day)


def _contract_join(spec: PieceSpec, rows: pa.Table) -> pa.Table:
    """The contract attributes of a piece's rows (as :func:`join_features` attaches them)."""
    users, items = _build_attributes(spec.lake_uri, spec.endpoint_url, spec.end_day, spec.build)
    out = rows.to_pandas().merge(users.drop(columns="signup_ts"), on="user_id", how="left")
    out = out.merge(items.drop(columns="created_ts"), on="item_id", how="left")
    return pa.Table.from_pandas(out, preserve_index=False)


def _mean_filled(columns: FeatureColumns) -> list[str]:
    """The numeric feature columns whose default is the mean of the known values."""
    flags = set(MISSING_FLAGS.values())
    return [
        c for c in columns.user_numeric + columns.item_numeric if c not in flags and not is_count(c)
    ]


def fill_known(table: pa.Table, columns: FeatureColumns) -> tuple[pa.Table, dict[str, Any]]:
    """:func:`fill_missing` of one piece, less the means: (table, summary of what was missing).

    Counts become 0 and strings :data:`UNKNOWN`; the flags are appended (user, then item);
    mean-filled numbers stay null. The summary: ``filled`` (nulls per column), ``flagged`` (rows
    flagged per side), ``sums``/``known`` (of the mean-filled columns), ``unfilled``.
    """
    filled: dict[str, int] = {}
    flagged: dict[str, int] = {}
    sides = (
        ("user", columns.user_numeric, columns.user_categorical),
        ("item", columns.item_numeric, columns.item_categorical),
    )
    means = _mean_filled(columns)
    for side, numeric, categorical in sides:
        flag = MISSING_FLAGS[side]
        cols = [c for c in numeric + categorical if c != flag]
        for c in cols:
            if c not in table.column_names:
                kind = pa.string() if c in categorical else pa.float64()
                table = table.append_column(c, pa.nulls(table.num_rows, kind))
        missing = pa.array([False] * table.num_rows)
        for c in cols:
            missing = pc.or_(missing, pc.is_null(table[c]))
        if flag in numeric:
            values = pc.cast(missing, pa.float64())
            table = _put_column(table, flag, values)
            flagged[side] = int(pc.sum(missing).as_py() or 0)
        for c in cols:
            filled[c] = table[c].null_count
            if filled[c] and c in categorical:
                table = _put_column(table, c, pc.fill_null(table[c].cast(pa.string()), UNKNOWN))
            elif filled[c] and c not in means:
                table = _put_column(table, c, pc.fill_null(table[c], 0))
    sums = {c: float(pc.sum(table[c].cast(pa.float64())).as_py() or 0.0) for c in means}
    known = {c: table.num_rows - table[c].null_count for c in means}
    unfilled = any(table[c].null_count for c in means)
    return table, {
        "filled": filled,
        "flagged": flagged,
        "sums": sums,
        "known": known,
        "unfilled": unfilled,
    }


def _put_column(table: pa.Table, name: str, values: Any) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def _write_shard(lake: Lake, spec: PieceSpec, name: str, table: pa.Table) -> None:
    """Write a shard atomically; Snappy, not zstd: a shard is written once and read every
    epoch, and Snappy writes (and decodes) it about 3× faster for ~20 % more bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    data = sink.getvalue()
    path = spec.shard_path(name)
    if spec.local:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    else:
        lake.write_bytes(path, data.to_pybytes())


def _read_shard(lake: Lake, spec: PieceSpec, name: str) -> pa.Table:
    path = spec.shard_path(name)
    data = Path(path).read_bytes() if spec.local else lake.read_bytes(path)
    return pq.read_table(io.BytesIO(data))


def fill_defaults(pieces: list[dict[str, Any]], source: str) -> dict[str, float]:
    """Default of each mean-filled column: the mean of its known values over the whole split
    (train + val), from the pieces' sums and counts; 0 when nothing is known."""
    out = {}
    for c in _mean_filled(feature_columns(source)):
        n = sum(p["known"].get(c, 0) for p in pieces)
        out[c] = sum(p["sums"].get(c, 0.0) for p in pieces) / n if n else 0.0
    return out


def fill_piece(name: str, spec: PieceSpec, defaults: dict[str, float]) -> int:
    """Fill the mean-filled columns of shard ``name`` with ``defaults``; returns values filled."""
    engine = spec.open_engine()
    table = _read_shard(engine.lake, spec, name)
    n = 0
    for c, value in defaults.items():
        if c in table.column_names and table[c].null_count:
            n += table[c].null_count
            table = _put_column(table, c, pc.fill_null(table[c].cast(pa.float64()), value))
    _write_shard(engine.lake, spec, name, table)
    return n


def _sum_counts(pieces: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pieces:
        for k, v in p[key].items():
            out[k] = out.get(k, 0) + int(v)
    return out


def _shards_dataset(engine: Engine, spec: PieceSpec, names: list[str]) -> Any:
    """The shards ``names`` as one Arrow dataset (for DuckDB)."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    if spec.local:
        return pads.dataset(
            [spec.shard_path(n) for n in names], format="parquet", filesystem=pafs.LocalFileSystem()
        )
    paths = [f"{engine.root}/{spec.shard_path(n)}" for n in names]
    return pads.dataset(paths, format="parquet", filesystem=engine.fs)


def _check_split(
    con: duckdb.DuckDBPyConnection,
    engine: Engine,
    spec: PieceSpec,
    pieces: list[dict[str, Any]],
    holdout_rows: int,
    w: dict[str, dt.date],
    cfg: DataConfig,
) -> int:
    """The checks of :func:`temporal_split` on the pieces' counts; returns the train users."""
    rows = _sum_counts(pieces, "rows")
    span = f"{w['start']}..{w['end']}"
    if rows.get("train", 0) + rows.get("val", 0) + holdout_rows == 0:
        raise TrainingDataError(
            f"no positive interactions ({', '.join(cfg.positive_events)}; ratings ≥ {cfg.min_rating:g}) "
            f"in validated events {span}: nothing to learn from"
        )
    names = [p["shard"] for p in pieces if p["shard"]]
    n_users = 0
    if names:
        con.register("_shards", _shards_dataset(engine, spec, names))
        n_users = int(con.sql("SELECT count(DISTINCT user_id) FROM _shards").fetchall()[0][0])
        con.unregister("_shards")
    if n_users < 2:
        raise TrainingDataError(
            f"the training window {w['start']}..{w['val_start'] - dt.timedelta(days=1)} has positives from "
            f"{n_users} user(s); at least 2 users are needed (in-batch negatives, evaluation)"
        )
    if holdout_rows == 0:
        raise TrainingDataError(
            f"no positive interactions in the holdout days {w['holdout_start']}..{w['end']}: cannot evaluate"
        )
    if not rows.get("train"):
        raise TrainingDataError(
            f"no positive interactions before {w['val_start']} (train split of {span} is empty)"
        )
    if cfg.val_days and not rows.get("val"):
        raise TrainingDataError(
            f"no positive interactions in the validation days {w['val_start']}.."
            f"{w['holdout_start'] - dt.timedelta(days=1)}: early stopping would run on nothing"
        )
    return n_users


def _remove_shards(lake: Lake, location: str | Path, pieces: list[dict[str, Any]]) -> None:
    for p in pieces:
        if not p["shard"]:
            continue
        if isinstance(location, Path):
            (location / SHARDS / p["shard"]).unlink(missing_ok=True)
        else:
            lake.delete(f"{_as_prefix(str(location))}{SHARDS}/{p['shard']}")


def _extra_items(
    con: duckdb.DuckDBPyConnection,
    engine: Engine,
    spec: PieceSpec,
    pieces: list[dict[str, Any]],
    items: pd.DataFrame,
) -> list[str]:
    """Items of the train rows that the items snapshot lacks, sorted."""
    names = [p["shard"] for p in pieces if p["shard"]]
    if not names:
        return []
    con.register("_shards", _shards_dataset(engine, spec, names))
    con.register(
        "_known", pa.table({"item_id": pa.array(items["item_id"].astype(str), pa.string())})
    )
    found = con.sql(
        "SELECT DISTINCT item_id FROM _shards WHERE item_id NOT IN (SELECT item_id FROM _known)"
    ).fetchall()
    con.unregister("_shards")
    con.unregister("_known")
    return sorted(r[0] for r in found)


def interactions_table(
    con: duckdb.DuckDBPyConnection, engine: Engine, days: list[dt.date], w: dict[str, dt.date]
) -> pa.Table:
    """:func:`interactions_before` through DuckDB: distinct (user, item) pairs with any event
    before the cutoff, in order of first occurrence, reading only those two columns."""
    import pyarrow.dataset as pads

    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string())])
    if not days:
        return schema.empty_table()
    data = engine.dataset(VALIDATED, EVENTS.name, days, schema=EVENTS.arrow_schema())
    cut = pa.scalar(_midnight(w["holdout_start"]), EVENTS.arrow_schema().field("event_ts").type)
    scanner = data.scanner(columns=["user_id", "item_id"], filter=pads.field("event_ts") < cut)

    def numbered():
        start = 0
        for batch in scanner.to_batches():
            n = batch.num_rows
            yield pa.record_batch(
                [batch["user_id"], batch["item_id"], pa.array(range(start, start + n), pa.int64())],
                names=["user_id", "item_id", "_rn"],
            )
            start += n

    reader = pa.RecordBatchReader.from_batches(
        pa.schema([*schema, ("_rn", pa.int64())]), numbered()
    )
    con.register("_events", reader)
    out = con.sql(
        "SELECT user_id, item_id FROM _events GROUP BY user_id, item_id ORDER BY min(_rn)"
    ).to_arrow_table()
    con.unregister("_events")
    return out.cast(schema)


def _put_files(
    lake: Lake, location: str | Path, files: dict[str, bytes], meta: dict, keep: list[str]
) -> str:
    """Write ``files`` and then ``meta.json`` under ``location``; remove what an earlier set left
    there (a ``train.parquet``, shards not in ``keep``)."""
    files = {**files, "meta.json": json.dumps(meta, indent=2).encode()}
    wanted = set(files) | {f"{SHARDS}/{n}" for n in keep}
    if isinstance(location, Path):
        location.mkdir(parents=True, exist_ok=True)
        for name in [*files][:-1]:
            (location / name).write_bytes(files[name])
        stale = [p for p in (location / SHARDS).glob("*.parquet")] + [location / "train.parquet"]
        for p in stale:
            if p.relative_to(location).as_posix() not in wanted:
                p.unlink(missing_ok=True)
        (location / "meta.json").write_bytes(files["meta.json"])
        return str(location)
    prefix = _as_prefix(location)
    for name, data in files.items():
        if name != "meta.json":
            lake.write_bytes(prefix + name, data)
    for key in lake.list(prefix):
        if key[len(prefix) :] not in wanted:
            lake.delete(key)
    lake.write_bytes(prefix + "meta.json", files["meta.json"])
    return prefix


def _reader(location: str | Path, lake: Lake | None) -> tuple[Any, str | Path, Lake | None]:
    """(read(name) -> bytes, the folder or prefix, the lake) of a set's location."""
    path = Path(location)
    if path.is_dir():
        return (lambda name: (path / name).read_bytes()), path, None
    lake = lake or get_lake()
    prefix = _as_prefix(str(location))
    return (lambda name: lake.read_bytes(prefix + name)), prefix, lake


def read_meta(location: str | Path, lake: Lake | None = None) -> dict[str, Any]:
    """A set's ``meta.json`` (rows per split, shards, window) without loading its frames."""
    read, _, _ = _reader(location, lake)
    try:
        return json.loads(read("meta.json"))
    except (FileNotFoundError, OSError, FlywheelError) as exc:
        raise TrainingDataError(
            f"training set at {location} is incomplete or missing: {exc}"
        ) from None


def train_shards(location: str | Path, lake: Lake | None = None) -> list[str]:
    """The train shards of a set, in day order: local paths for a folder, lake keys for a
    lake prefix (empty for a set written as one ``train.parquet``).

    Shards are complete: every missing value filled, the flags set (see :func:`train_piece`);
    count columns are int64 (the loaded frame has them as float64 where any value was filled).
    """
    _, where, _ = _reader(location, lake)
    names = read_meta(location, lake).get("train_shards", [])
    if isinstance(where, Path):
        return [str(where / SHARDS / n) for n in names]
    return [f"{where}{SHARDS}/{n}" for n in names]


def _read_train(read: Any, meta: dict[str, Any], columns: list[str] | None = None) -> pd.DataFrame:
    """The train frame: ``train.parquet``, or the shards concatenated (dtypes as before); only
    ``columns`` when given (a streamed set's trainer reads the features from the shards)."""
    if "train_shards" not in meta:
        return pq.read_table(io.BytesIO(read("train.parquet")), columns=columns).to_pandas()
    tables = [
        pq.read_table(io.BytesIO(read(f"{SHARDS}/{n}")), columns=columns)
        for n in meta["train_shards"]
    ]
    if not tables:
        return pd.DataFrame(columns=columns or ["user_id", "item_id", "event_timestamp", "split"])
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    for c, n in meta.get("filled", {}).items():
        if n and is_count(c) and c in frame:
            frame[c] = frame[c].astype("float64")  # a filled count was a float column before
    return frame


def load_training_set(
    location: str | Path, lake: Lake | None = None, lean: bool = False
) -> TrainingSet:
    """Read a set written by :func:`build_training_set` (local folder or lake prefix); the
    train frame is the shards concatenated (a set of one ``train.parquet`` still loads).

    ``lean``: the train frame holds only :data:`KEY_COLUMNS` (a streamed set: its trainer reads
    the features from the shards; 20M rows of every feature are ~8 GB of pandas)."""
    read, _, _ = _reader(location, lake)
    try:
        meta = json.loads(read("meta.json"))
        frames = {
            n: pq.read_table(io.BytesIO(read(f"{n}.parquet"))).to_pandas()
            for n in FRAMES
            if n != "train"
        }
        frames["train"] = _read_train(read, meta, list(KEY_COLUMNS) if lean else None)
    except (FileNotFoundError, OSError, FlywheelError) as exc:
        raise TrainingDataError(
            f"training set at {location} is incomplete or missing: {exc}"
        ) from None
    for name in ("train", "holdout"):
        frames[name]["user_id"] = frames[name]["user_id"].astype(str)
        frames[name]["item_id"] = frames[name]["item_id"].astype(str)
    frames["items"]["item_id"] = frames["items"]["item_id"].astype(str)
    for name in OPTIONAL_FRAMES:
        try:
            frames[name] = pq.read_table(io.BytesIO(read(f"{name}.parquet"))).to_pandas()
        except (FileNotFoundError, OSError, FlywheelError):
            frames[name] = None
    if len(frames["users"]):
        frames["users"]["user_id"] = frames["users"]["user_id"].astype(str)
    else:
        frames["users"] = pd.DataFrame({"user_id": pd.Series([], dtype=str)})
    return TrainingSet(meta=meta, lean=lean, **frames)
