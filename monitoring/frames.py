"""The data the drift check compares: feature frames and served slates.

Reference = the feature rows of the champion's training window, read from the offline store
(:func:`features.compute.read_features`). Current = the rows of day D. Both sides keep only the
entities *active* on their day (a user or item with at least one view that day), so windows of a
few days compare like with like: one row per active entity per day.

When the serving API wrote impressions (``raw/impressions/dt=D/``) the frames add *prediction*
columns (the category and the popularity of what was recommended, :data:`PREDICTION_COLUMNS`)
and :func:`served_frames` measures *quality*: click-through of the served slates (clicks from
``raw/events`` on a shown item by the same user that day) on day D and on the reference serving
days. Raw tables are read through :meth:`core.lake.Lake.read`, one day at a time.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.contract import EVENTS, IMPRESSIONS
from core.lake import RAW, Lake
from core.names import CLICK_EVENT_TYPES, COUNTED_EVENTS, ITEM_VIEW, USER_VIEW
from features.compute import FeatureError, read_features
from monitoring import DriftError
from monitoring.config import PREDICTION_COLUMNS, REC_CATEGORY, REC_POPULARITY, DriftConfig

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

_DAY = dt.timedelta(days=1)

#: At most this many repeats of one entity in the ``traffic_*`` columns (bounds memory).
_TRAFFIC_CAP = 1_000
#: ``traffic_event`` values and the 1-day user counts they come from.
_EVENT_COUNTS: dict[str, str] = {etype: f"user_{word}_1d" for etype, word in COUNTED_EVENTS.items()}
#: The columns of the raw tables the slates need (read as strings, whatever a writer used).
_IMPRESSION_COLUMNS = ("request_id", "user_id", "item_ids")
_CLICK_COLUMNS = ("event_id", "user_id", "item_id", "event_type")


# --- features ----------------------------------------------------------------------------------


def _active_rows(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows whose ``column`` is > 0 (all rows when the view has no such column)."""
    return df[df[column] > 0] if column in df.columns else df


def _repeat(values, counts, day) -> pd.DataFrame:
    """``values`` repeated ``counts`` times each (capped), with their ``day``."""
    import numpy as np
    import pandas as pd

    reps = np.minimum(np.asarray(counts, dtype="int64"), _TRAFFIC_CAP)
    return pd.DataFrame({"value": np.repeat(np.asarray(values), reps), "day": np.repeat(day, reps)})


def _traffic(users: pd.DataFrame, items: pd.DataFrame) -> list[pd.DataFrame]:
    """``traffic_category`` (one row per item view) and ``traffic_event`` (one row per event)."""
    import pandas as pd

    cats = _repeat(items["item_category"], items["item_views_1d"], items["day"])
    events = pd.concat(
        [
            _repeat([etype] * len(users), users[col], users["day"])
            for etype, col in _EVENT_COUNTS.items()
            if col in users.columns
        ],
        ignore_index=True,
    )
    return [
        cats.rename(columns={"value": "traffic_category"}),
        events.rename(columns={"value": "traffic_event"}),
    ]


def feature_frame(
    lake: Lake, start: dt.date, end: dt.date, config: DriftConfig, skip_missing: bool = False
) -> pd.DataFrame:
    """Active users' and items' feature rows of [start, end], stacked into one frame.

    ``skip_missing`` (the reference window) leaves out days without features: quarantined
    batches and, for a champion trained on the first weeks, days before the first data.

    User rows carry NaN in item columns and the reverse (Evidently drops NaN per column), so one
    report covers both views.
    """
    import pandas as pd

    wanted = set(config.numeric) | set(config.categorical)
    active = {}
    for view, column in ((USER_VIEW, config.user_active), (ITEM_VIEW, config.item_active)):
        try:
            df = read_features(lake, view, start, end, skip_missing=skip_missing)
        except FeatureError as exc:
            raise DriftError(f"drift check needs features for {start}…{end}: {exc}") from None
        active[view] = _active_rows(df, column)
    frames = [df[[c for c in df.columns if c in wanted] + ["day"]] for df in active.values()]
    frames += [t for t in _traffic(active[USER_VIEW], active[ITEM_VIEW]) if t.columns[0] in wanted]
    return pd.concat(frames, ignore_index=True, sort=False)


def catalog_for(lake: Lake, day: dt.date) -> pd.DataFrame:
    """Item id, category and 7-day views of day D's items (what the prediction columns use)."""
    return read_features(lake, ITEM_VIEW, day, day)[["item_id", "item_category", "item_views_7d"]]


def stack(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """``a`` over ``b``; columns only one side has are NaN on the other."""
    import pandas as pd

    return pd.concat([a, b], ignore_index=True, sort=False)


# --- served slates -----------------------------------------------------------------------------


def _strings(columns: tuple[str, ...]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in columns])


def _raw_rows(
    lake: Lake, table: str, days: list[dt.date], columns: tuple[str, ...]
) -> pd.DataFrame | None:
    """``columns`` of raw ``table`` for ``days`` (as strings) with a ``day`` column; None if none."""
    import pandas as pd

    parts = []
    for day in days:
        t = lake.read(table, [day], zone=RAW, schema=_strings(columns))
        if t.num_rows:
            parts.append(t.to_pandas().assign(day=day))
    return pd.concat(parts, ignore_index=True) if parts else None


def _clicks(lake: Lake, days: list[dt.date]) -> pd.DataFrame:
    """Positive feedback (click, add to cart, purchase) of ``days`` from ``raw/events``."""
    import pandas as pd

    events = _raw_rows(lake, EVENTS.name, days, _CLICK_COLUMNS)
    if events is None:
        return pd.DataFrame(columns=["event_id", "user_id", "item_id", "day"])
    events = events[events["event_type"].isin(CLICK_EVENT_TYPES)]
    return events[["event_id", "user_id", "item_id", "day"]].reset_index(drop=True)


def _id_list(value: Any) -> list[str]:
    """The item ids of one impression (a JSON list, or already a list)."""
    if isinstance(value, str):
        return [str(v) for v in json.loads(value)] if value else []
    return [str(v) for v in value] if value is not None else []


def slate_rows(lake: Lake, days: list[dt.date]) -> pd.DataFrame | None:
    """One row per recommended slot of the impressions of ``days``: user, item, rank, clicked.

    Feedback is matched to the slot by request id (``fb:<request_id>:<n>`` event ids) or, for
    events without one, by the same user acting on the shown item that day.
    """
    imp = _raw_rows(lake, IMPRESSIONS.name, days, _IMPRESSION_COLUMNS)
    if imp is None or imp.empty:
        return None
    imp = imp.assign(item_id=imp["item_ids"].map(_id_list)).explode("item_id")
    imp = imp.dropna(subset=["item_id"])
    imp["rank"] = imp.groupby("request_id").cumcount() + 1
    clicks = _clicks(lake, sorted(set(imp["day"])))
    by_request = clicks["event_id"].astype(str).str.extract(r"^fb:(.+):\d+$")[0]
    keyed = set(zip(by_request.dropna(), clicks.loc[by_request.notna(), "item_id"], strict=True))
    loose = set(zip(clicks["user_id"], clicks["item_id"], clicks["day"], strict=True))
    imp["clicked"] = [
        (r, i) in keyed or (u, i, d) in loose
        for r, u, i, d in zip(
            imp["request_id"], imp["user_id"], imp["item_id"], imp["day"], strict=True
        )
    ]
    return imp[["request_id", "user_id", "item_id", "rank", "day", "clicked"]].reset_index(
        drop=True
    )


def slate_quality(slates: pd.DataFrame) -> dict[str, float]:
    """CTR of slates (share with ≥1 clicked item), MRR of the first click, slates count."""
    import numpy as np

    g = slates.groupby("request_id")
    hit = g["clicked"].any()
    first = slates[slates["clicked"]].groupby("request_id")["rank"].min()
    rr = (1.0 / first).reindex(hit.index).fillna(0.0)
    return {
        "slate_ctr": float(hit.mean()) if len(hit) else float("nan"),
        "mrr": float(rr.mean()) if len(rr) else float(np.nan),
        "slates": float(len(hit)),
    }


def prediction_columns(slates: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """``rec_category`` and ``rec_popularity`` (log1p of the item's 7-day views) per slot."""
    import numpy as np

    cat = catalog.set_index("item_id")
    out = slates[["item_id", "day"]].copy()
    out[REC_CATEGORY] = out["item_id"].map(cat["item_category"])
    out[REC_POPULARITY] = np.log1p(out["item_id"].map(cat["item_views_7d"]).astype("float64"))
    return out[[*PREDICTION_COLUMNS, "day"]]


@dataclass
class ServedFrames:
    """The served side of a check: prediction columns per slot and slate quality, both sides."""

    reference: pd.DataFrame
    current: pd.DataFrame
    quality: dict[str, float]
    #: Relative drop of slate CTR vs the reference (None when the reference had no click).
    quality_drop: float | None


def served_frames(
    lake: Lake, day: dt.date, reference_window: tuple[dt.date, dt.date], config: DriftConfig
) -> ServedFrames | None:
    """Prediction columns and slate quality of day D against the reference serving days.

    The reference is the impressions of the training window or, for a champion that served only
    after it, its first ``serving_reference_days`` days of serving before D. None when D or the
    reference has no impressions (nothing served, or nothing to compare it with).
    """
    start, end = reference_window
    cur_slates = slate_rows(lake, [day])
    if cur_slates is None:
        return None
    ref_slates = slate_rows(lake, [start + k * _DAY for k in range((end - start).days + 1)])
    if ref_slates is None:  # the champion served only after its window: its first days
        served = [d for d in lake.partitions(RAW, IMPRESSIONS.name) if end < d < day]
        ref_slates = slate_rows(lake, served[: config.serving_reference_days])
    if ref_slates is None:
        return None
    catalog = catalog_for(lake, day)
    q_ref, q_cur = slate_quality(ref_slates), slate_quality(cur_slates)
    quality = {
        "reference_slate_ctr": q_ref["slate_ctr"],
        "current_slate_ctr": q_cur["slate_ctr"],
        "reference_mrr": q_ref["mrr"],
        "current_mrr": q_cur["mrr"],
        "current_slates": q_cur["slates"],
    }
    drop = None
    if q_ref["slate_ctr"] > 0:
        drop = round(1.0 - q_cur["slate_ctr"] / q_ref["slate_ctr"], 6)
    return ServedFrames(
        reference=prediction_columns(ref_slates, catalog),
        current=prediction_columns(cur_slates, catalog),
        quality=quality,
        quality_drop=drop,
    )
