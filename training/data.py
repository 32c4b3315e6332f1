"""The training set: positives from validated events, features joined, split in time.

For a window ending on day E (``data.window_days`` days, E included):

    [ train days ........ ][ val days ][ holdout days ]
                                        ^ cutoff = first holdout day 00:00 UTC

* **Positives** are ``click``, ``add_to_cart``, ``purchase`` and ``rating`` events with value
  ≥ ``data.min_rating`` (4 stars); ``view`` is exposure, not preference. A (user, item) pair counts
  once per day (a click → cart → purchase funnel is one positive, not three).
* **Features** are joined by one function, :func:`join_features`: ``feast`` joins the feature
  service ``recommender_v1`` point-in-time through Feast (each interaction sees the features known
  at its timestamp); ``contract`` uses only the catalog/user attributes (category, price, country,
  age band) and needs no feature store (small tests, first runs before features exist).
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
from core.lake import TRAINING_SETS, VALIDATED, Lake, get_lake, parquet_bytes
from core.names import FEATURE_SERVICE, FEATURE_TTL_DAYS, ITEM_VIEW, USER_VIEW
from features.columns import ITEM_CATEGORICAL, ITEM_FEATURES, USER_CATEGORICAL, USER_FEATURES
from features.compute import read_features, serving_day
from features.store import build_training_frame
from training.config import DataConfig
from training.model import FeatureColumns
from validation.results import read_result

log = logging.getLogger(__name__)

FRAMES = ("train", "holdout", "users", "items")
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
)
CONTRACT_COLUMNS = FeatureColumns(
    user_numeric=[],
    user_categorical=["user_country", "user_age_bucket"],
    item_numeric=["item_price"],
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

    @property
    def columns(self) -> FeatureColumns:
        return FeatureColumns(**self.meta["feature_columns"])

    def split(self, name: str) -> pd.DataFrame:
        return self.train[self.train["split"] == name].reset_index(drop=True)

    def seen(self) -> dict[str, set[str]]:
        """Items each user had as positives before the holdout (train + val)."""
        return self.train.groupby("user_id")["item_id"].agg(set).to_dict()

    def truth(self, exclude_seen: bool) -> dict[str, set[str]]:
        """Holdout positives per user (minus the already seen ones when ``exclude_seen``)."""
        truth = self.holdout.groupby("user_id")["item_id"].agg(set).to_dict()
        if exclude_seen:
            seen = self.seen()
            truth = {u: items - seen.get(u, set()) for u, items in truth.items()}
        return {u: s for u, s in truth.items() if s}


# --- windows --------------------------------------------------------------------------------


def window(end_day: dt.date, cfg: DataConfig) -> dict[str, dt.date]:
    """First/last day of the window and where val and holdout begin."""
    start = end_day - dt.timedelta(days=cfg.window_days - 1)
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
    """Positive interactions (see the module docstring), one per (user, item, day)."""
    is_pos = events["event_type"].isin([e for e in cfg.positive_events if e != "rating"])
    if "rating" in cfg.positive_events:
        is_pos |= (events["event_type"] == "rating") & (events["value"] >= cfg.min_rating)
    pos = events.loc[is_pos, ["user_id", "item_id", "event_ts"]].rename(
        columns={"event_ts": "event_timestamp"}
    )
    pos["day"] = pos["event_timestamp"].dt.floor("D")
    pos = pos.sort_values("event_timestamp", kind="stable").drop_duplicates(
        ["user_id", "item_id", "day"]
    )
    return pos.drop(columns="day").reset_index(drop=True)


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
        list(USER_FEATURES), list(USER_CATEGORICAL), list(ITEM_FEATURES), list(ITEM_CATEGORICAL)
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
) -> pd.DataFrame:
    """``entity_df`` (user_id, item_id, event_timestamp, …) plus every feature column.

    The single place where features are joined: ``feast`` is point-in-time through the feature
    service; ``contract`` attaches the static attributes of validated items and users.
    """
    if source == "feast":
        return build_training_frame(entity_df)
    users, items = _contract_attributes(lake, end_day)
    out = entity_df.merge(users.drop(columns="signup_ts"), on="user_id", how="left")
    return out.merge(items.drop(columns="created_ts"), on="item_id", how="left")


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
        return users.reset_index(drop=True), items.reset_index(drop=True)
    users, items = _contract_attributes(lake, end_day)
    cut = _midnight(cutoff_day)
    users = users[users["signup_ts"] < cut].drop(columns="signup_ts")
    items = items[items["created_ts"] < cut].drop(columns="created_ts")
    return users.reset_index(drop=True), items.reset_index(drop=True)


# --- building and storing -------------------------------------------------------------------


def build_training_set(
    lake: Lake, end_day: dt.date, cfg: DataConfig, location: str | Path | None = None
) -> dict[str, Any]:
    """Build the set for the window ending on ``end_day`` and write it to ``location``.

    ``location`` is a lake prefix (default ``training_sets/dt=<end_day>/``) or a local folder
    (a :class:`~pathlib.Path`). Returns a small summary (location, rows, users, window, ids),
    fit for XCom. Raises :class:`TrainingDataError` when no model can be trained from it.
    """
    w = window(end_day, cfg)
    days, missing = window_days(lake, w, cfg.feature_source)
    events = read_validated(lake, EVENTS.name, days)
    before, holdout = temporal_split(positives(events, cfg), w, cfg)
    source = cfg.feature_source
    train = join_features(lake, before, source, w["end"])
    users, items = snapshots(lake, source, w["holdout_start"], w["end"])
    # interacted items missing from the snapshot (e.g. contract tables trimmed) still get scored
    extra = sorted(set(before["item_id"]) - set(items["item_id"]))
    if extra:
        items = pd.concat([items, pd.DataFrame({"item_id": extra})], ignore_index=True)
    meta = {
        "window_start": w["start"].isoformat(),
        "val_start": w["val_start"].isoformat(),
        "holdout_start": w["holdout_start"].isoformat(),
        "window_end": w["end"].isoformat(),
        "days": [d.isoformat() for d in days],
        "missing_days": missing,
        "feature_source": source,
        "feature_service": _feature_service(source),
        "feature_columns": feature_columns(source).to_dict(),
        "validation_ids": validation_ids(lake, days),
        "rows": {
            "train": int((train["split"] == "train").sum()),
            "val": int((train["split"] == "val").sum()),
            "holdout": len(holdout),
        },
        "users": int(before["user_id"].nunique()),
        "items": len(items),
    }
    frames = {"train": train, "holdout": holdout, "users": users, "items": items}
    where = write_training_set(
        lake, frames, meta, location or f"{TRAINING_SETS}/dt={end_day.isoformat()}/"
    )
    log.info("training set %s: %s", where, meta["rows"])
    return {"location": where, **{k: meta[k] for k in SUMMARY_KEYS}}


def window_days(lake: Lake, w: dict[str, dt.date], source: str) -> tuple[list[dt.date], list[str]]:
    """(days of the window that can be read, ISO days left out): validated, and with features.

    With ``feast`` a row of day D joins the newest features within the views' TTL (D-1, else
    D-2 when D-1's batch was quarantined); days without any are left out. Holdout rows are
    scored with the cutoff snapshot instead, so holdout days need none.
    """
    available = set(lake.partitions(VALIDATED, EVENTS.name))
    every = _days(w["start"], w["end"])
    days = [d for d in every if d in available]
    missing = [d.isoformat() for d in every if d not in available]
    if not days:
        raise TrainingDataError(
            f"no validated events between {w['start']} and {w['end']} "
            f"({lake.url(f'{VALIDATED}/{EVENTS.name}/')}); ingest those days first"
        )
    if source != "feast":
        return days, missing
    joinable = [d for d in days if d >= w["holdout_start"] or serving_day(lake, d) is not None]
    if len(joinable) < len(days):
        dropped = sorted(set(days) - set(joinable))
        log.warning(
            "no features of the previous day for %s: those days are left out",
            [d.isoformat() for d in dropped],
        )
        missing += [d.isoformat() for d in dropped]
    if not joinable:
        raise TrainingDataError(
            f"no day of {w['start']}..{w['end']} has features of the {FEATURE_TTL_DAYS} days "
            "before it (features/<view>/dt=D-1/): run the build_features DAG for those days first"
        )
    return joinable, missing


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
    if len(frames["users"]):
        frames["users"]["user_id"] = frames["users"]["user_id"].astype(str)
    else:
        frames["users"] = pd.DataFrame({"user_id": pd.Series([], dtype=str)})
    return TrainingSet(meta=meta, **frames)
