"""Point-in-time feature joins over the feature partitions, one day at a time, through the engine.

The same rows and values as :func:`features.store.build_training_frame` (Feast's
``get_historical_features`` on the file offline store), out of core: the entity rows of one day
are joined to the one partition per view that Feast would pick for them (read through
:meth:`core.engine.Engine.dataset`, only the feature columns), and nothing bigger than a day and
that partition is ever in memory.

Why one partition per view and day is enough: the values of day D carry ``event_timestamp`` =
:func:`~features.compute.known_at` (D) = D+1 00:00 UTC and every partition is a full daily
snapshot (every entity known by D has a row). Feast gives a row at time t the newest value with
``t - ttl ≤ event_timestamp ≤ t``; for a row of day E that is the newest featurised day in
[E-ttl, E-1] -- or in [E-ttl-1, E-1] for a row at exactly E 00:00, where the TTL's lower bound
still reaches one day further back (:func:`picked_days`). An entity absent from that partition
(a signup of that day) gets nulls, as in Feast (which would look further back only for an
entity missing from a newer snapshot but present in an older one: a snapshot never drops an
entity). Every row stays its own row, in order (rows of the same key and second included).

Public functions (what the training set build and the scale benchmark call):

* :func:`picked_days` -- the partition days a view is read from for rows of one day;
* :func:`join_day` -- feature columns for one day's entity rows (an Arrow table in, out), by an
  Arrow hash lookup of each row's key in the picked partition; :func:`join_day_sql` -- the same
  as a DuckDB ``LEFT JOIN`` (the results are equal; the lookup is several times faster);
* :func:`point_in_time` -- any entity rows (pandas or Arrow) + features, as an Arrow table:
  :func:`~features.store.build_training_frame`'s contract (missing columns, empty rows, a gap
  longer than the TTL are :class:`~features.compute.FeatureError`\\ s unless ``missing_ok``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from core.engine import Engine, get_engine
from core.lake import FEATURES, Lake
from core.names import FEATURE_TTL_DAYS, ITEM_VIEW, USER_VIEW, VIEWS
from features.columns import (
    ITEM_CATEGORICAL,
    ITEM_FEATURES,
    USER_CATEGORICAL,
    USER_FEATURES,
)
from features.compute import FeatureError, arrow_schema, feature_key, require_partition, serving_day

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

JOIN_KEY = {USER_VIEW: "user_id", ITEM_VIEW: "item_id"}
#: The feature columns of each view, in the order ``build_training_frame`` returns them.
VIEW_COLUMNS: dict[str, list[str]] = {
    USER_VIEW: [*USER_FEATURES, *USER_CATEGORICAL],
    ITEM_VIEW: [*ITEM_FEATURES, *ITEM_CATEGORICAL],
}
ENTITY_COLUMNS = ("user_id", "item_id", "event_timestamp")
_DAY = dt.timedelta(days=1)
_US_PER_DAY = 86_400_000_000


def picked_days(lake: Lake, day: dt.date, view: str) -> tuple[dt.date | None, dt.date | None]:
    """(partition day of ``view`` for rows at ``day`` 00:00 exactly, for the day's other rows).

    The newest day with a partition among [day-ttl-1, day-1] and [day-ttl, day-1]; None where
    there is none (those rows get nulls).
    """
    found = [
        d
        for back in range(1, FEATURE_TTL_DAYS + 2)
        if lake.exists(feature_key(view, d := day - dt.timedelta(days=back)))
    ]
    at_midnight = found[0] if found else None
    rest = found[0] if found and found[0] >= day - dt.timedelta(days=FEATURE_TTL_DAYS) else None
    return at_midnight, rest


def require_features(lake: Lake, days: list[dt.date]) -> None:
    """Raise a :class:`FeatureError` naming view and day when rows of a day in ``days`` have no
    features within the TTL (what ``build_training_frame`` checks unless ``missing_ok``)."""
    for view in VIEWS:
        for day in days:
            if serving_day(lake, day, (view,)) is None:
                require_partition(lake, view, day - _DAY)  # raises, naming view and day


def output_schema() -> pa.Schema:
    """Types of the feature columns :func:`join_day` returns (both views, in order)."""
    import pyarrow as pa

    fields = []
    for view in VIEWS:
        schema = arrow_schema(view)
        fields += [schema.field(c) for c in VIEW_COLUMNS[view]]
    return pa.schema(fields)


def _at_midnight(entity: pa.Table, day: dt.date) -> pa.Array:
    """Which rows of ``day`` are at 00:00 exactly (they may read one partition further back)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    midnight = pa.scalar(
        dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC), entity["event_timestamp"].type
    )
    return pc.fill_null(pc.equal(entity["event_timestamp"], midnight), False)


def join_day(engine: Engine, entity: pa.Table, day: dt.date) -> pa.Table:
    """The feature columns of both views for ``entity`` (rows of ``day``), row for row, in order.

    ``entity`` has ``user_id``, ``item_id`` and ``event_timestamp`` (a UTC timestamp on ``day``).
    Only the picked partitions are read (:func:`picked_days`), only their feature columns; each
    row's values are looked up by key in them (Arrow's hash lookup and ``take``: the rows keep
    their order without a sort). A partition holds each key once (``features.compute`` writes
    one row per entity; :func:`join_day_sql` checks it). :func:`join_day_sql` is the same join
    in DuckDB SQL.
    """
    import pyarrow as pa

    midnight = _at_midnight(entity, day)
    columns = []
    for view in VIEWS:
        columns += _view_values(engine, entity, midnight, view, day).columns
    return pa.Table.from_arrays(columns, schema=output_schema())


def _view_values(
    engine: Engine, entity: pa.Table, midnight: pa.Array, view: str, day: dt.date
) -> pa.Table:
    """One view's feature columns for ``entity``: the picked partition's row of each key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key, cols = JOIN_KEY[view], VIEW_COLUMNS[view]
    at_midnight, rest = picked_days(engine.lake, day, view)
    days = sorted({d for d in (at_midnight, rest) if d is not None})
    schema = arrow_schema(view)
    if not days:
        return pa.table({c: pa.nulls(entity.num_rows, schema.field(c).type) for c in cols})
    data = engine.dataset(FEATURES, view, days, schema=_with_day(schema))
    parts = {d: data.to_table(columns=[key, *cols], filter=pc.field("dt") == d) for d in days}
    table = pa.concat_tables([parts[d] for d in days])
    offset = {d: sum(parts[e].num_rows for e in days if e < d) for d in days}

    def lookup(d: dt.date | None) -> pa.Array:
        if d is None:
            return pa.nulls(entity.num_rows, pa.int64())
        found = pc.index_in(entity[key], value_set=parts[d][key]).cast(pa.int64())
        return pc.add(found, offset[d])

    index = lookup(rest)
    if at_midnight != rest and pc.any(midnight).as_py():
        index = pc.if_else(midnight, lookup(at_midnight), index)
    return table.select(cols).take(index)


def join_day_sql(
    engine: Engine,
    entity: pa.Table,
    day: dt.date,
    con: duckdb.DuckDBPyConnection | None = None,
) -> pa.Table:
    """:func:`join_day` as DuckDB SQL: ``LEFT JOIN`` of the rows to the picked partitions.

    The same result; slower for wide outputs (the joined columns go through DuckDB and an
    ``ORDER BY`` restores the row order), but every step is out of core.
    """
    import pyarrow as pa

    con = con or engine.connect()
    rows = pa.table(
        {
            "_rn": pa.array(range(entity.num_rows), pa.int64()),
            "user_id": entity["user_id"],
            "item_id": entity["item_id"],
            "_midnight": _at_midnight(entity, day),
        }
    )
    con.register("_pit_rows", rows)
    selects, joins = [], []
    try:
        for k, view in enumerate(VIEWS):
            alias, key = f"f{k}", JOIN_KEY[view]
            selects += [f'{alias}."{c}"' for c in VIEW_COLUMNS[view]]
            joins.append(_view_join(engine, con, lake_day=(view, day), alias=alias, key=key))
        sql = f"SELECT {', '.join(selects)} FROM _pit_rows r {' '.join(joins)} ORDER BY r._rn"
        out = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("_pit_rows")
        for k in range(len(VIEWS)):
            con.execute(f"DROP VIEW IF EXISTS _pit_f{k}")
    if out.num_rows != entity.num_rows:
        raise FeatureError(
            f"feature partitions for {day} hold a key more than once: {out.num_rows} joined rows "
            f"for {entity.num_rows} entity rows"
        )
    return out.cast(output_schema())


def _view_join(
    engine: Engine,
    con: duckdb.DuckDBPyConnection,
    lake_day: tuple[str, dt.date],
    alias: str,
    key: str,
) -> str:
    """``LEFT JOIN`` clause of one view's picked partition(s), registered as ``_pit_<alias>``."""
    view, day = lake_day
    at_midnight, rest = picked_days(engine.lake, day, view)
    days = sorted({d for d in (at_midnight, rest) if d is not None})
    cols = [key, *VIEW_COLUMNS[view]]
    if not days:  # nothing in time: an empty relation of the right columns
        empty = arrow_schema(view).empty_table().select(cols)
        con.register(f"_pit_{alias}_t", empty)
        con.execute(f"CREATE OR REPLACE TEMP VIEW _pit_{alias} AS SELECT * FROM _pit_{alias}_t")
        return f"LEFT JOIN _pit_{alias} {alias} ON {alias}.{key} = r.{key}"
    data = engine.dataset(FEATURES, view, days, schema=_with_day(arrow_schema(view)))
    con.register(f"_pit_{alias}_ds", data)
    names = ", ".join(f'"{c}"' for c in cols)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _pit_{alias} AS SELECT {names}, dt FROM _pit_{alias}_ds"
    )
    on = f"{alias}.{key} = r.{key}"
    if len(days) > 1 or at_midnight != rest:
        # rows at midnight read ``at_midnight``, the others ``rest`` (None: no match)
        pick = f"CASE WHEN r._midnight THEN {_date(at_midnight)} ELSE {_date(rest)} END"
        on += f" AND {alias}.dt = {pick}"
    return f"LEFT JOIN _pit_{alias} {alias} ON {on}"


def _with_day(schema: pa.Schema) -> pa.Schema:
    import pyarrow as pa

    return schema.append(pa.field("dt", pa.date32()))


def _date(day: dt.date | None) -> str:
    return "NULL" if day is None else f"DATE '{day.isoformat()}'"


def point_in_time(
    entity: pd.DataFrame | pa.Table,
    missing_ok: bool = False,
    engine: Engine | None = None,
    sql: bool = False,
) -> pa.Table:
    """``entity`` + every feature of both views, point-in-time correct (see the module docstring).

    The contract of :func:`features.store.build_training_frame`: ``user_id``, ``item_id`` and
    ``event_timestamp`` (UTC) required, other columns come back unchanged, every row in order;
    a row's day without features within the TTL is a :class:`FeatureError` unless
    ``missing_ok``. Rows are joined day by day (:func:`join_day`, or :func:`join_day_sql` with
    ``sql``); the result is the caller's (an Arrow table).
    """
    import numpy as np
    import pyarrow as pa

    table = _as_arrow(entity)
    engine = engine or get_engine()
    days_us = table["event_timestamp"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    day_index = np.floor_divide(days_us.to_numpy(zero_copy_only=False), _US_PER_DAY)
    epoch = dt.date(1970, 1, 1)
    days = [epoch + dt.timedelta(days=int(d)) for d in np.unique(day_index)]
    if not missing_ok:
        require_features(engine.lake, days)
    parts, order = [], []
    ordered = bool(np.all(day_index[1:] >= day_index[:-1]))  # rows by day: slices, no copies
    for day in days:
        idx = np.flatnonzero(day_index == (day - epoch).days)
        rows = table.slice(idx[0], len(idx)) if ordered else table.take(pa.array(idx))
        if sql:
            with engine.connect() as con:
                parts.append(join_day_sql(engine, rows, day, con))
        else:
            parts.append(join_day(engine, rows, day))
        order.append(idx)
    feats = pa.concat_tables(parts)
    if not ordered:
        feats = feats.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
    for name in feats.column_names:
        table = table.append_column(name, feats[name])
    return table


def _as_arrow(entity: pd.DataFrame | pa.Table) -> pa.Table:
    """``entity`` as Arrow, checked like ``build_training_frame`` checks it; pandas timestamps
    as ``datetime64[ns, UTC]`` (what it returns)."""
    import pandas as pd
    import pyarrow as pa

    names = entity.column_names if isinstance(entity, pa.Table) else list(entity.columns)
    missing_cols = set(ENTITY_COLUMNS) - set(names)
    if missing_cols:
        raise FeatureError(f"entity rows lack column(s) {sorted(missing_cols)}")
    if len(entity) == 0:
        raise FeatureError("entity rows are empty: nothing to build a training frame from")
    if isinstance(entity, pa.Table):
        return entity
    frame = entity.copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    return pa.Table.from_pandas(frame, preserve_index=False)
