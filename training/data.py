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
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import EVENTS, ITEMS, TABLES, USERS
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
from features.store import build_training_frame
from training.config import DataConfig
from training.model import MISSING_FLAGS, FeatureColumns
from validation.results import RESULTS, read_result

log = logging.getLogger(__name__)

FRAMES = ("train", "holdout", "users", "items")
OPTIONAL_FRAMES = ("interacted",)  # absent in sets written before it existed
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

    @property
    def columns(self) -> FeatureColumns:
        return FeatureColumns(**self.meta["feature_columns"])

    def split(self, name: str) -> pd.DataFrame:
        return self.train[self.train["split"] == name].reset_index(drop=True)

    def seen(self) -> dict[str, set[str]]:
        """Items each user had as positives before the holdout (train + val)."""
        return self.train.groupby("user_id")["item_id"].agg(set).to_dict()

    def interacted_before(self) -> dict[str, set[str]]:
        """Items each user interacted with in any way before the holdout (positives included)."""
        pairs = self.train[["user_id", "item_id"]]
        if self.interacted is not None and len(self.interacted):
            pairs = pd.concat([pairs, self.interacted[["user_id", "item_id"]]])
        return pairs.groupby("user_id")["item_id"].agg(set).to_dict()

    def histories(self, n: int, before: str = "holdout") -> dict[str, list[str]]:
        """Each user's last ``n`` positive items (oldest first) known before the holdout
        (``before="holdout"``: train + val rows) or before validation (``"val"``: train rows)."""
        rows = self.train if before == "holdout" else self.split("train")
        if n <= 0 or rows.empty:
            return {}
        rows = rows.sort_values("event_timestamp", kind="stable")
        return rows.groupby("user_id")["item_id"].agg(lambda s: s.tolist()[-n:]).to_dict()

    def truth(self, exclude_seen: bool) -> dict[str, set[str]]:
        """Holdout positives per user (minus the already seen ones when ``exclude_seen``)."""
        truth = self.holdout.groupby("user_id")["item_id"].agg(set).to_dict()
        if exclude_seen:
            seen = self.seen()
            truth = {u: items - seen.get(u, set()) for u, items in truth.items()}
        return {u: s for u, s in truth.items() if s}


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
    lake: Lake, end_day: dt.date, cfg: DataConfig, location: str | Path | None = None
) -> dict[str, Any]:
    """Build the set for the window ending on ``end_day`` and write it to ``location``.

    ``location`` is a lake prefix (default ``training_sets/dt=<end_day>/``) or a local folder
    (a :class:`~pathlib.Path`). Returns a small summary (location, rows, users, window, ids),
    fit for XCom. Raises :class:`TrainingDataError` when no model can be trained from it.
    """
    w = window(end_day, cfg, min(lake.partitions(VALIDATED, EVENTS.name), default=None))
    days, missing = window_days(lake, w, cfg.feature_source)
    w["val_start"] = validation_start(days, w, cfg)
    events = read_validated(lake, EVENTS.name, days)
    before, holdout = temporal_split(positives(events, cfg), w, cfg)
    source = cfg.feature_source
    train, filled = join_features(lake, before, source, w["end"])
    users, items = snapshots(lake, source, w["holdout_start"], w["end"])
    # interacted items missing from the snapshot (e.g. contract tables trimmed) still get scored
    extra = sorted(set(before["item_id"]) - set(items["item_id"]))
    if extra:
        items = pd.concat([items, pd.DataFrame({"item_id": extra})], ignore_index=True)
        items = fill_missing(items, FeatureColumns([], [], *_item_columns(source)))[0]
    interacted = interactions_before(events, w)
    meta = {
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
        "rows": {
            "train": int((train["split"] == "train").sum()),
            "val": int((train["split"] == "val").sum()),
            "holdout": len(holdout),
        },
        "filled": filled,
        "rows_with_missing_features": {
            side: int(train[flag].sum()) for side, flag in MISSING_FLAGS.items() if flag in train
        },
        "users": int(before["user_id"].nunique()),
        "items": len(items),
    }
    frames = {
        "train": train,
        "holdout": holdout,
        "users": users,
        "items": items,
        "interacted": interacted,
    }
    where = write_training_set(
        lake, frames, meta, location or f"{TRAINING_SETS}/dt={end_day.isoformat()}/"
    )
    log.info(
        "training set %s: %s; rows with missing features (filled) %s; values filled %s",
        where,
        meta["rows"],
        meta["rows_with_missing_features"],
        {c: n for c, n in filled.items() if n},
    )
    return {"location": where, **{k: meta[k] for k in SUMMARY_KEYS}}


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


def load_training_set(location: str | Path, lake: Lake | None = None) -> TrainingSet:
    """Read a set written by :func:`build_training_set` (local folder or lake prefix)."""
    path = Path(location)
    if path.is_dir():

        def read(name: str) -> bytes:
            return (path / name).read_bytes()
    else:
        lake = lake or get_lake()
        prefix = str(location) if str(location).endswith("/") else f"{location}/"

        def read(name: str) -> bytes:
            return lake.read_bytes(prefix + name)

    try:
        meta = json.loads(read("meta.json"))
        frames = {n: pq.read_table(io.BytesIO(read(f"{n}.parquet"))).to_pandas() for n in FRAMES}
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
    return TrainingSet(meta=meta, **frames)
