"""The data the drift check compares: feature rows and served slates, read out of core.

Reference = the feature rows of the champion's training window, current = the rows of day D,
both from the daily feature partitions. Both sides keep only the entities *active* on their day
(a user or item with at least one view that day), so windows of a few days compare like with
like: one row per active entity per day.

When the serving API wrote impressions (``raw/impressions/dt=D/``) the sides add *prediction*
rows (the category and the popularity of what was recommended, :data:`PREDICTION_COLUMNS`) and
:func:`served_frames` measures *quality*: click-through of the served slates (clicks from
``raw/events`` on a shown item by the same user that day) on day D and on the reference serving
days.

Everything is read through the one data-access seam, :mod:`core.engine`: a DuckDB connection of
the engine (:class:`Scan`, memory-capped, spilling) over the Arrow datasets of only the days and
only the columns a check needs. Counts, traffic mixes and slate quality are aggregated in SQL
over the whole window; only a bounded, deterministic sample of rows becomes pandas (what
Evidently compares). A side is a list of :class:`Part` (user rows, item rows, the two traffic
columns, prediction rows: each column lives in one part, the others are NaN there), each with
its full count; :func:`assemble` reads at most ``DriftConfig.max_rows`` rows per side:

* every part gets a fair share of the cap (a part smaller than its share keeps all its rows and
  leaves the rest to the others), so each compared column gets as many rows as it can;
* entity rows (and served slots) are the ones with the smallest stable hash of their id and day
  (``md5``: the same rows every run, whatever order the files are in);
* the traffic columns (one row per item view / per event, from the 1-day counts) are
  built from their counts per day and category, apportioned to the part's share (largest
  remainders): their category mix is the full window's, to the rounding of one row.

A side at or under the cap is read whole, row for row what the drift check always compared.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.contract import EVENTS, IMPRESSIONS
from core.engine import Engine, get_engine
from core.lake import FEATURES, RAW, Lake
from core.names import CLICK_EVENT_TYPES, COUNTED_EVENTS, ITEM_VIEW, USER_VIEW
from features.compute import FeatureError, arrow_schema, feature_key, require_partition
from monitoring import DriftError
from monitoring.config import PREDICTION_COLUMNS, REC_CATEGORY, REC_POPULARITY, DriftConfig

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

_DAY = dt.timedelta(days=1)
#: The engine's partition column (the day of a row's partition, ``date32``).
_DT = "dt"

#: At most this many repeats of one entity in the ``traffic_*`` columns (one very busy user or
#: item must not stand for a whole day's traffic).
_TRAFFIC_CAP = 1_000
#: ``traffic_event`` values and the 1-day user counts they come from.
_EVENT_COUNTS: dict[str, str] = {etype: f"user_{word}_1d" for etype, word in COUNTED_EVENTS.items()}
#: ``traffic_category``: the item column repeated, and the count it is repeated by.
_ITEM_TRAFFIC = ("item_category", "item_views_1d")
#: The columns of the raw tables the slates need (read as strings, whatever a writer used).
_IMPRESSION_COLUMNS = ("request_id", "user_id", "item_ids")
_CLICK_COLUMNS = ("event_id", "user_id", "item_id", "event_type")
#: Feedback event ids carry the request they answer: ``fb:<request_id>:<n>``.
_FEEDBACK_ID = r"^fb:(.+):\d+$"


# --- reading through the engine ----------------------------------------------------------------


class Scan:
    """A DuckDB connection of the engine over the lake: each table a check needs is registered
    as a view of only its days and columns (:meth:`core.engine.Engine.dataset`). Close it (or use
    it as a context manager) when the check is done."""

    def __init__(self, lake: Lake, engine: Engine | None = None):
        self.lake = lake
        self.engine = engine or get_engine(lake)
        self.con = self.engine.connect()
        self._views = 0

    def register(self, zone: str, table: str, days: list[dt.date], schema: pa.Schema) -> str:
        """Register ``days`` of ``zone/table`` read as ``schema`` (plus ``dt``); its view name."""
        import pyarrow as pa

        if _DT not in schema.names:
            schema = schema.append(pa.field(_DT, pa.date32()))
        self._views += 1
        name = f"{table}_{self._views}"
        self.con.register(name, self.engine.dataset(zone, table, days, schema))
        return name

    def table(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def value(self, sql: str):
        """The first column of the first row of ``sql``."""
        return self.con.sql(sql).fetchall()[0][0]

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Scan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _q(column: str) -> str:
    """``column`` quoted as a SQL identifier."""
    return '"' + column.replace('"', '""') + '"'


def _stable_hash(*parts: str) -> str:
    """SQL: the md5 (hex) of ``parts`` joined by ``|``: the same in every DuckDB version, and
    ordering by it is a random order (``md5_number_*`` is four times slower to compute)."""
    return "md5(concat_ws('|', " + ", ".join(f"CAST({p} AS VARCHAR)" for p in parts) + "))"


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + k * _DAY for k in range((end - start).days + 1)]


# --- parts of a side and the bounded sample ----------------------------------------------------


@dataclass
class Part:
    """One kind of row of a side: its full count and how to read ``n`` of them (always the same
    ``n`` rows; all of them when ``n >= rows``), with a ``day`` column."""

    name: str
    rows: int
    read: Callable[[int], pd.DataFrame]


@dataclass
class Frame:
    """A side as compared: the rows read (``data``) and the rows the side has (``rows``)."""

    data: pd.DataFrame
    rows: int

    @property
    def sampled(self) -> bool:
        return len(self.data) < self.rows


def fair_quotas(sizes: list[int], cap: int) -> list[int]:
    """Rows per part, ``cap`` in all at most: each part gets an equal share, a part smaller than
    its share keeps all its rows and the rest goes to the larger parts. All rows when they fit."""
    if sum(sizes) <= cap:
        return list(sizes)
    out = [0] * len(sizes)
    left = cap
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for k, i in enumerate(order):
        out[i] = min(sizes[i], left // (len(sizes) - k))
        left -= out[i]
    return out


def assemble(parts: list[Part], cap: int, side: str = "side") -> Frame:
    """The rows of ``parts`` stacked (columns a part lacks are NaN), at most ``cap`` rows."""
    import pandas as pd

    quotas = fair_quotas([p.rows for p in parts], cap)
    frames = [p.read(q) for p, q in zip(parts, quotas, strict=True)]
    data = (
        pd.concat(frames, ignore_index=True, sort=False)
        if frames
        else pd.DataFrame(columns=["day"])
    )
    frame = Frame(data=data, rows=sum(p.rows for p in parts))
    if frame.sampled:
        log.info(
            "drift %s: %d of %d rows sampled (max_rows %d): %s",
            side,
            len(data),
            frame.rows,
            cap,
            ", ".join(f"{p.name} {q}/{p.rows}" for p, q in zip(parts, quotas, strict=True)),
        )
    return frame


def _rows_part(
    scan: Scan, name: str, view: str, select: dict[str, str], where: str, key: tuple[str, ...]
) -> Part:
    """Rows of ``view`` matching ``where`` as ``select`` (``{output name: SQL}``); a sample is
    the rows with the smallest stable hash of ``key`` (SQL expressions: the row's identity)."""
    rows = int(scan.value(f"SELECT count(*) FROM {view} WHERE {where}"))
    columns = ", ".join(f"{sql} AS {_q(out)}" for out, sql in select.items())

    def read(n: int) -> pd.DataFrame:
        sql = f"SELECT {columns} FROM {view} WHERE {where}"
        if n < rows:
            sql += f" ORDER BY {_stable_hash(*key)}, {', '.join(key)} LIMIT {int(n)}"
        return scan.table(sql).to_pandas()

    return Part(name, rows, read)


def apportion(counts: np.ndarray, n: int) -> np.ndarray:
    """``counts`` scaled to sum to ``n`` (largest remainders; ties to the earlier group)."""
    import numpy as np

    counts = np.asarray(counts, dtype="int64")
    total = int(counts.sum())
    if n >= total:
        return counts
    exact = counts * (n / total)
    out = np.floor(exact).astype("int64")
    extra = n - int(out.sum())
    if extra > 0:
        out[np.argsort(-(exact - out), kind="stable")[:extra]] += 1
    return out


def _counts_part(name: str, groups: pd.DataFrame) -> Part:
    """``groups`` (``day``, ``value``, ``n``) as ``n`` rows of ``value`` each; a sample keeps the
    mix of the groups (:func:`apportion`)."""
    import numpy as np
    import pandas as pd

    counts = groups["n"].to_numpy(dtype="int64")
    values = groups["value"].to_numpy(dtype=object)
    days = groups["day"].to_numpy(dtype=object)

    def read(n: int) -> pd.DataFrame:
        reps = apportion(counts, n)
        return pd.DataFrame({name: np.repeat(values, reps), "day": np.repeat(days, reps)})

    return Part(name, int(counts.sum()), read)


# --- features ----------------------------------------------------------------------------------


def _capped(column: str) -> str:
    """SQL: ``column`` capped at :data:`_TRAFFIC_CAP` (NULL stays NULL: sums skip it)."""
    c = _q(column)
    return f"CASE WHEN {c} > {_TRAFFIC_CAP} THEN {_TRAFFIC_CAP} ELSE {c} END"


def _category_traffic(scan: Scan, view: str, where: str) -> pd.DataFrame:
    """``day``, ``value`` (item category), ``n`` (capped 1-day views of its active items)."""
    category, views = _ITEM_TRAFFIC
    return scan.table(
        f"SELECT {_DT} AS day, {_q(category)} AS value, CAST(sum({_capped(views)}) AS BIGINT) AS n"
        f" FROM {view} WHERE {where} GROUP BY ALL HAVING n > 0 ORDER BY day, value NULLS LAST"
    ).to_pandas()


def _event_traffic(scan: Scan, view: str, where: str, columns: list[str]) -> pd.DataFrame:
    """``day``, ``value`` (event type), ``n`` (capped 1-day counts of the active users)."""
    import pandas as pd

    present = {etype: col for etype, col in _EVENT_COUNTS.items() if col in columns}
    if not present:
        return pd.DataFrame({"day": [], "value": [], "n": []})
    sums = ", ".join(
        f"CAST(coalesce(sum({_capped(col)}), 0) AS BIGINT) AS {_q(etype)}"
        for etype, col in present.items()
    )
    wide = scan.table(
        f"SELECT {_DT} AS day, {sums} FROM {view} WHERE {where} GROUP BY day ORDER BY day"
    ).to_pandas()
    long = wide.melt(id_vars="day", value_vars=list(present), var_name="value", value_name="n")
    return long[long["n"] > 0].reset_index(drop=True)


def _feature_days(
    lake: Lake, view: str, start: dt.date, end: dt.date, skip_missing: bool
) -> list[dt.date]:
    """The days of [start, end] with a partition of ``view``; a gap (unless ``skip_missing``) or
    no day at all is a :class:`FeatureError` naming the view and the day."""
    days = _days(start, end)
    if skip_missing:
        days = [d for d in days if lake.exists(feature_key(view, d))]
    else:
        for d in days:
            require_partition(lake, view, d)
    if not days:
        raise FeatureError(
            f"no feature partition of {view!r} between {start} and {end} "
            f"({lake.url(f'{FEATURES}/{view}/')})"
        )
    return days


def _view_parts(
    scan: Scan, view: str, days: list[dt.date], active: str, wanted: set[str]
) -> list[Part]:
    """The active rows of ``view`` (the ``wanted`` columns) and its traffic column, if wanted."""
    import pyarrow as pa

    full = arrow_schema(view)
    key = full.names[0]
    keep = [c for c in full.names[1:] if c in wanted]
    if view == ITEM_VIEW:
        traffic = "traffic_category", list(_ITEM_TRAFFIC)
    else:
        traffic = "traffic_event", list(_EVENT_COUNTS.values())
    need = {key, active, *keep, *(traffic[1] if traffic[0] in wanted else [])}
    table = scan.register(FEATURES, view, days, pa.schema([f for f in full if f.name in need]))
    where = f"{_q(active)} > 0" if active in full.names else "TRUE"
    select = {c: _q(c) for c in keep} | {"day": _DT}
    parts = [_rows_part(scan, view, table, select, where, key=(_q(key), _DT))]
    if traffic[0] in wanted:
        groups = (
            _category_traffic(scan, table, where)
            if view == ITEM_VIEW
            else _event_traffic(scan, table, where, full.names)
        )
        parts.append(_counts_part(traffic[0], groups))
    return parts


def feature_parts(
    scan: Scan, start: dt.date, end: dt.date, config: DriftConfig, skip_missing: bool = False
) -> list[Part]:
    """The parts of a side from the features of [start, end]: active users' rows, active items'
    rows, ``traffic_category`` and ``traffic_event`` (each only where the config compares it).

    ``skip_missing`` (the reference window) leaves out days without features: quarantined
    batches and, for a champion trained on the first weeks, days before the first data.
    Features missing otherwise (or on every day) are a :class:`DriftError`.
    """
    wanted = set(config.numeric) | set(config.categorical)
    parts: list[Part] = []
    for view, active in ((USER_VIEW, config.user_active), (ITEM_VIEW, config.item_active)):
        try:
            days = _feature_days(scan.lake, view, start, end, skip_missing)
        except FeatureError as exc:
            raise DriftError(f"drift check needs features for {start}…{end}: {exc}") from None
        parts += _view_parts(scan, view, days, active, wanted)
    return parts


def feature_frame(
    lake: Lake, start: dt.date, end: dt.date, config: DriftConfig, skip_missing: bool = False
) -> pd.DataFrame:
    """Active users' and items' feature rows of [start, end] and the traffic rows, stacked into
    one frame of at most ``config.max_rows`` rows (see the module docstring).

    User rows carry NaN in item columns and the reverse (Evidently drops NaN per column), so one
    report covers both views.
    """
    with Scan(lake) as scan:
        return assemble(feature_parts(scan, start, end, config, skip_missing), config.max_rows).data


# --- served slates -----------------------------------------------------------------------------


def _strings(columns: tuple[str, ...]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(c, pa.string()) for c in columns])


@dataclass
class Slates:
    """Views of the impressions of some days: ``slots`` (one row per recommended slot: request,
    user, item, rank, day) and ``slates`` (the slots with ``clicked``)."""

    slots: str
    slates: str


def _slates(scan: Scan, days: list[dt.date]) -> Slates | None:
    """The slots of the impressions of ``days`` and their feedback; None without impressions.

    Feedback is matched to the slot by request id (``fb:<request_id>:<n>`` event ids) or, for
    events without one, by the same user acting on the shown item that day.
    """
    imp = scan.register(RAW, IMPRESSIONS.name, days, _strings(_IMPRESSION_COLUMNS))
    served = [r[0] for r in scan.con.sql(f"SELECT DISTINCT {_DT} FROM {imp}").fetchall()]
    if not served:
        return None
    events = scan.register(RAW, EVENTS.name, sorted(served), _strings(_CLICK_COLUMNS))
    slots, slates = f"{imp}_slots", f"{imp}_slates"
    scan.con.execute(
        f"""CREATE TEMP VIEW {slots} AS
        WITH imp AS (
            SELECT request_id, user_id, {_DT} AS day, from_json(item_ids, '["VARCHAR"]') AS ids
            FROM {imp} WHERE item_ids IS NOT NULL AND trim(item_ids) <> '')
        SELECT * FROM (
            SELECT request_id, user_id, unnest(ids) AS item_id,
                   generate_subscripts(ids, 1) AS rank, day
            FROM imp)
        WHERE item_id IS NOT NULL"""
    )
    clicked_types = ", ".join(f"'{t}'" for t in CLICK_EVENT_TYPES)
    scan.con.execute(
        f"""CREATE TEMP VIEW {slates} AS
        WITH clicks AS (
            SELECT event_id, user_id, item_id, {_DT} AS day FROM {events}
            WHERE event_type IN ({clicked_types})),
        keyed AS (
            SELECT DISTINCT regexp_extract(event_id, '{_FEEDBACK_ID}', 1) AS request_id, item_id
            FROM clicks WHERE regexp_matches(event_id, '{_FEEDBACK_ID}')),
        loose AS (SELECT DISTINCT user_id, item_id, day FROM clicks)
        SELECT s.*, (k.request_id IS NOT NULL OR l.user_id IS NOT NULL) AS clicked
        FROM {slots} s
        LEFT JOIN keyed k ON k.request_id = s.request_id AND k.item_id = s.item_id
        LEFT JOIN loose l ON l.user_id = s.user_id AND l.item_id = s.item_id AND l.day = s.day"""
    )
    return Slates(slots=slots, slates=slates)


def slate_rows(lake: Lake, days: list[dt.date]) -> pd.DataFrame | None:
    """One row per recommended slot of the impressions of ``days``: user, item, rank, clicked
    (None without impressions). For a few days (inspection, tests): the drift check itself
    aggregates the slots in SQL and samples them."""
    with Scan(lake) as scan:
        views = _slates(scan, days)
        if views is None:
            return None
        return scan.table(
            "SELECT request_id, user_id, item_id, rank, day, clicked "
            f"FROM {views.slates} ORDER BY day, request_id, rank"
        ).to_pandas()


def slate_quality(scan: Scan, slates: Slates) -> dict[str, float]:
    """CTR of slates (share with ≥1 clicked item), MRR of the first click, slates count."""
    ctr, mrr, n = scan.con.sql(
        "SELECT avg(CAST(hit AS DOUBLE)), avg(CASE WHEN first IS NULL THEN 0.0 ELSE 1.0 / first "
        "END), count(*) FROM (SELECT request_id, bool_or(clicked) AS hit, "
        f"min(rank) FILTER (WHERE clicked) AS first FROM {slates.slates} GROUP BY request_id)"
    ).fetchall()[0]
    nan = float("nan")
    return {
        "slate_ctr": float(ctr) if ctr is not None else nan,
        "mrr": float(mrr) if mrr is not None else nan,
        "slates": float(n),
    }


def _prediction_part(scan: Scan, slates: Slates, catalog: str) -> Part:
    """``rec_category`` and ``rec_popularity`` (log1p of the item's 7-day views on day D) per
    slot; a sample is the slots with the smallest stable hash of request and rank."""
    import numpy as np

    sampled = _rows_part(
        scan,
        "predictions",
        slates.slots,
        {"item_id": "item_id", "day": "day"},
        "TRUE",
        key=("request_id", "rank"),
    )

    def read(n: int) -> pd.DataFrame:
        out = sampled.read(n)
        cat = scan.table(f"SELECT item_id, item_category, item_views_7d FROM {catalog}").to_pandas()
        cat = cat.drop_duplicates("item_id").set_index("item_id")
        out[REC_CATEGORY] = out["item_id"].map(cat["item_category"])
        views = out["item_id"].map(cat["item_views_7d"]).astype("float64")
        out[REC_POPULARITY] = np.log1p(views)
        return out[[*PREDICTION_COLUMNS, "day"]]

    return Part("predictions", sampled.rows, read)


@dataclass
class ServedFrames:
    """The served side of a check: prediction rows per slot and slate quality, both sides."""

    reference: Part
    current: Part
    quality: dict[str, float]
    #: Relative drop of slate CTR vs the reference (None when the reference had no click).
    quality_drop: float | None


def served_frames(
    scan: Scan, day: dt.date, reference_window: tuple[dt.date, dt.date], config: DriftConfig
) -> ServedFrames | None:
    """Prediction rows and slate quality of day D against the reference serving days.

    The reference is the impressions of the training window or, for a champion that served only
    after it, its first ``serving_reference_days`` days of serving before D. None when D or the
    reference has no impressions (nothing served, or nothing to compare it with).
    """
    import pyarrow as pa

    start, end = reference_window
    cur = _slates(scan, [day])
    if cur is None:
        return None
    ref = _slates(scan, _days(start, end))
    if ref is None:  # the champion served only after its window: its first days
        served = [d for d in scan.lake.partitions(RAW, IMPRESSIONS.name) if end < d < day]
        ref = _slates(scan, served[: config.serving_reference_days])
    if ref is None:
        return None
    require_partition(scan.lake, ITEM_VIEW, day)
    item_schema = arrow_schema(ITEM_VIEW)
    catalog = scan.register(
        FEATURES,
        ITEM_VIEW,
        [day],
        pa.schema([item_schema.field(c) for c in ("item_id", "item_category", "item_views_7d")]),
    )
    q_ref, q_cur = slate_quality(scan, ref), slate_quality(scan, cur)
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
        reference=_prediction_part(scan, ref, catalog),
        current=_prediction_part(scan, cur, catalog),
        quality=quality,
        quality_drop=drop,
    )
