"""The Feast feature store of the active profile, and what the pipeline does with it.

* :func:`get_store` -- a ``feast.FeatureStore`` configured from the settings: the profile's
  ``feature_repo/feature_store*.yaml`` with project, registry and online store rendered from
  :func:`core.settings.get_settings` (embedded: SQLite + file registry under
  ``$FLYWHEEL_HOME/feast``; production: Redis + SQL registry on Postgres; offline: the Parquet
  partitions in the lake, local or S3).
* :func:`apply_if_changed` -- ``feast apply`` of ``feature_repo/definitions.py`` only when
  Feast's own plan against the registry shows a change.
* :func:`compute_day` / :func:`materialize_day` / :func:`check_freshness` -- one day of the
  pipeline (the DAG ``build_features`` and the demo call these); :func:`compute_days` /
  :func:`materialize_range` -- a range of days in one pass (a history: the validated data is
  read once, and only the range's newest snapshot goes online).
* :func:`build_training_frame` -- point-in-time correct training rows through
  ``get_historical_features`` on the feature service ``recommender_v1``.
* :func:`online_features` -- online lookups for serving.

Column names: features are returned with their plain names (``full_feature_names=False``);
they are unique across the views by construction (``user_…`` / ``item_…``), and listed in
:mod:`features.columns` (``USER_FEATURES``, ``ITEM_FEATURES``, ``*_CATEGORICAL``).

Timing: the values of day D carry ``event_timestamp`` = D+1 00:00 UTC. Materializing "the data
interval [D, D+1)" therefore loads the rows stamped in (D 00:00, D+1 00:00] -- exactly day D's
partition -- and a training row at time t gets the values of the last day that ended at or
before t (never later ones).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import runpy
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from core.errors import ConfigError
from core.lake import FEATURES, Lake, LocalLake, get_lake
from core.names import FEATURE_SERVICE, ITEM_VIEW, USER_VIEW, VIEWS
from core.settings import Settings, get_settings
from features.compute import (
    FeatureError,
    compute_features,
    compute_range,
    featurised_days,
    known_at,
    latest_day,
    require_partition,
    serving_day,
)
from features.online import write_day

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore, RepoConfig

log = logging.getLogger(__name__)

YAML_FOR_PROFILE = {"embedded": "feature_store.yaml", "production": "feature_store.production.yaml"}
JOIN_KEY = {USER_VIEW: "user_id", ITEM_VIEW: "item_id"}
_DAY = dt.timedelta(days=1)
_TICK = dt.timedelta(microseconds=1)


def fv_name(view: str) -> str:
    """Feast name of a view: ``user_stats`` → ``user_stats_fv``."""
    return f"{view}_fv"


# --- configuration --------------------------------------------------------------------------


def source_location(view: str, settings: Settings | None = None) -> tuple[str, str | None]:
    """(path, S3 endpoint) of the folder the Feast source of ``view`` reads."""
    s = settings or _cli_settings()
    lake = Lake.from_uri(s.lake_uri, endpoint_url=s.s3_endpoint_url)
    key = f"{FEATURES}/{view}/"
    if isinstance(lake, LocalLake):
        return str(lake.path(key.rstrip("/"))) + "/", None
    _ensure_s3_filesystem()
    return lake.url(key), s.s3_endpoint_url


def _cli_settings() -> Settings:
    """The settings, as seen from the repository root.

    The Feast CLI (``feast -c feature_repo …``) changes into ``feature_repo/`` before it imports
    the definitions, which would move the default, relative ``FLYWHEEL_HOME`` (``./.flywheel``)
    into that folder; the default is meant relative to the repository root, where the
    ``feature_store.yaml`` paths point as well.
    """
    s = get_settings()
    here = Path.cwd().resolve()
    if here.name != "feature_repo" or s.project_dir != here:
        return s
    project = here.parent
    # Feast's file registry creates its own folder but not the parents: make them
    (project / ".flywheel" / "feast").mkdir(parents=True, exist_ok=True)
    default_home = here / ".flywheel"
    if s.home != default_home or s.lake_uri != (default_home / "lake").as_uri():
        return s.model_copy(update={"project_dir": project})  # home chosen explicitly
    return Settings(home=project / ".flywheel", project_dir=project)


def redis_connection_string(url: str) -> str:
    """``redis://[:password@]host:port/db`` → Feast's ``host:port,db=N,password=…,ssl=true``."""
    if "://" not in url:
        return url  # already in Feast's form
    u = urlparse(url)
    if u.scheme not in {"redis", "rediss"}:
        raise ConfigError(f"FLYWHEEL_REDIS_URL={url!r}: expected redis://host:port[/db]")
    parts = [f"{u.hostname or 'localhost'}:{u.port or 6379}"]
    db = u.path.strip("/")
    if db:
        parts.append(f"db={int(db)}")
    if u.password:
        password = unquote(u.password)  # a URL carries it percent-encoded
        if "," in password or "=" in password:
            raise ConfigError(
                "FLYWHEEL_REDIS_URL: the Redis password may not contain ',' or '=' "
                "(Feast's connection string splits on them)"
            )
        parts.append(f"password={password}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def config_dict(settings: Settings | None = None) -> dict[str, Any]:
    """The profile's ``feature_store*.yaml`` with the settings rendered in (a plain dict)."""
    import yaml

    s = settings or get_settings()
    raw = yaml.safe_load((s.feature_repo / YAML_FOR_PROFILE[s.profile]).read_text())
    raw["project"] = s.feast_project
    if s.profile == "embedded":
        feast_dir = s.feast_dir
        raw["registry"]["path"] = str(feast_dir / "registry.db")
        raw["online_store"]["path"] = str(feast_dir / "online_store.db")
    else:
        if not s.feast_registry_url:
            raise ConfigError(
                "production profile needs FLYWHEEL_FEAST_REGISTRY_URL "
                "(postgresql+psycopg://user:pass@host:5432/db) for Feast's SQL registry"
            )
        raw["registry"]["path"] = s.feast_registry_url
        raw["online_store"]["connection_string"] = redis_connection_string(s.redis_url)
    return raw


def repo_config(settings: Settings | None = None) -> RepoConfig:
    from feast import RepoConfig

    s = settings or get_settings()
    if s.profile == "embedded":
        s.feast_dir.mkdir(parents=True, exist_ok=True)
    return RepoConfig(repo_path=s.feature_repo, **config_dict(s))


def render_yaml(settings: Settings | None = None) -> Path:
    """Write the rendered config to ``$FLYWHEEL_HOME/feast/feature_store.yaml`` (for ``feast -f``)."""
    import yaml

    s = settings or get_settings()
    target = s.feast_dir / "feature_store.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = f"# rendered by features.store.render_yaml for profile {s.profile}\n" + yaml.safe_dump(
        config_dict(s), sort_keys=False
    )
    # it holds the Redis password and the registry's database URL: owner-only, from creation
    fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fd, 0o600)
        fh.write(text)
    return target


_STORES: dict[str, FeatureStore] = {}  # one store per settings (also caches its registry)


def get_store(settings: Settings | None = None) -> FeatureStore:
    """The ``feast.FeatureStore`` of the profile chosen by the settings (cached per settings)."""
    from feast import FeatureStore

    s = settings or get_settings()
    if (s.lake_uri or "").startswith("s3://"):
        _ensure_s3_filesystem()  # any process reading the offline store, not only `apply`
    key = s.model_dump_json()
    if key not in _STORES:
        _STORES[key] = FeatureStore(config=repo_config(s))
    return _STORES[key]


def _ensure_s3_filesystem() -> None:
    """Let Feast's file offline store (Dask → fsspec) read ``s3://`` without ``s3fs``.

    fsspec needs an implementation for ``s3``; ``s3fs`` is not part of our dependency set, but
    pyarrow ships an S3 client. This registers a thin fsspec wrapper over
    ``pyarrow.fs.S3FileSystem`` for ``s3://`` (only when ``s3fs`` is not installed), honouring
    the ``client_kwargs={"endpoint_url": …}`` that Feast passes for ``s3_endpoint_override``.
    """
    import importlib.util

    import fsspec

    if importlib.util.find_spec("s3fs") is not None or "s3" in fsspec.registry:
        return
    from fsspec.implementations.arrow import ArrowFSWrapper

    class ArrowS3(ArrowFSWrapper):
        protocol = ("s3", "s3a")
        root_marker = ""

        def __init__(self, client_kwargs=None, key=None, secret=None, token=None, **kwargs):
            from pyarrow.fs import S3FileSystem

            opts: dict[str, Any] = {}
            endpoint = (client_kwargs or {}).get("endpoint_url")
            if endpoint:
                u = urlparse(endpoint)
                opts["endpoint_override"] = u.netloc or endpoint
                opts["scheme"] = u.scheme or "https"
            if key:
                opts.update(access_key=key, secret_key=secret, session_token=token)
            opts.setdefault("region", "us-east-1")
            super().__init__(S3FileSystem(**opts), **kwargs)

        @classmethod
        def _strip_protocol(cls, path):
            path = super()._strip_protocol(path)
            for p in ("s3://", "s3a://"):
                if isinstance(path, str) and path.startswith(p):
                    path = path[len(p) :]
            return path

    fsspec.register_implementation("s3", ArrowS3, clobber=False)
    fsspec.register_implementation("s3a", ArrowS3, clobber=False)


# --- definitions and apply ------------------------------------------------------------------


def repo_contents(project: str):
    """The Feast objects of ``feature_repo/definitions.py``, freshly evaluated.

    The file is executed (not imported) so that its source locations follow the current
    settings, in the same process, across settings changes.
    """
    from feast import Entity, FeatureService, FeatureView, Project
    from feast.data_source import DataSource
    from feast.repo_contents import RepoContents

    definitions = get_settings().feature_repo / "definitions.py"
    ns = runpy.run_path(str(definitions), run_name="flywheel_feature_repo")
    objs = list(ns.values())
    return RepoContents(
        projects=[Project(name=project, description="Flywheel recommender features")],
        data_sources=[o for o in objs if isinstance(o, DataSource)],
        entities=[o for o in objs if isinstance(o, Entity)],
        feature_views=[o for o in objs if isinstance(o, FeatureView)],
        feature_services=[o for o in objs if isinstance(o, FeatureService)],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )


def plan_changes(store: FeatureStore | None = None) -> list[str]:
    """What ``apply`` would change in the registry, as ``"<type> <name>: <transition>"`` lines.

    Feast's own plan (the diff between the registry and the definitions); its internal
    ``__dummy`` entity is not ours and is ignored.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME

    store = get_store() if store is None else store
    repo = repo_contents(store.project)
    registry_diff, _, _ = store.plan(repo)
    return [
        f"{d.feast_object_type.name.lower()} {d.name}: {d.transition_type.name.lower()}"
        for d in registry_diff.feast_object_diffs
        if d.transition_type != TransitionType.UNCHANGED
        and d.name != DUMMY_ENTITY_NAME
        and (
            d.transition_type != TransitionType.UPDATE
            or any(_really_differs(p) for p in d.feast_object_property_diffs)
        )
    ]


def _really_differs(prop) -> bool:
    """A property diff that is more than bookkeeping.

    Feast stamps a freshly loaded data source with new ``meta`` timestamps, so its plan reports
    every view's ``batch_source`` as updated on every run; timestamps are not a change.
    """
    old, new = prop.val_existing, prop.val_declared
    if (
        type(old) is type(new)
        and hasattr(old, "DESCRIPTOR")
        and "meta" in old.DESCRIPTOR.fields_by_name
    ):
        old, new = (
            type(old).FromString(old.SerializeToString()),
            type(new).FromString(new.SerializeToString()),
        )
        old.ClearField("meta")
        new.ClearField("meta")
    return old != new


def apply_if_changed(store: FeatureStore | None = None) -> dict[str, Any]:
    """``feast apply`` the definitions when the registry differs from them; a no-op otherwise.

    Returns ``{"applied": bool, "changes": [...]}`` (what Feast's plan found).
    """
    from feast.repo_operations import extract_objects_for_apply_delete

    store = get_store() if store is None else store
    changes = plan_changes(store)
    if not changes:
        return {"applied": False, "changes": []}
    repo = repo_contents(store.project)
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
        store.project, store.registry, repo
    )
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    log.info("feast apply: %s", "; ".join(changes))
    return {"applied": True, "changes": changes}


# --- one day of the pipeline ----------------------------------------------------------------


def compute_day(day: dt.date) -> dict[str, Any]:
    """Write day D's feature partitions from validated data (idempotent); returns a summary."""
    return compute_features(get_lake(), day).as_dict()


def interval_of(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """Event-timestamp window that holds exactly day D's rows: (D 00:00, D+1 00:00]."""
    end = known_at(day)
    return end - _DAY + _TICK, end


def materialize_day(day: dt.date, store: FeatureStore | None = None) -> dict[str, Any]:
    """Load day D's rows of every view into the online store (Feast ``materialize``).

    Requires D's partitions (a :class:`FeatureError` names the missing one). Re-running is
    idempotent: the same rows with the same timestamps overwrite themselves.
    """
    lake = get_lake()
    for view in VIEWS:
        require_partition(lake, view, day)
    store = get_store() if store is None else store
    start, end = interval_of(day)
    store.materialize(start_date=start, end_date=end, feature_views=[fv_name(v) for v in VIEWS])
    rows = {v: _rows(lake, v, day) for v in VIEWS}
    return {
        "day": day.isoformat(),
        "interval": [start.isoformat(), end.isoformat()],
        "rows": rows,
    }


def materialize_days(
    days: list[dt.date], store: FeatureStore | None = None
) -> list[dict[str, Any]]:
    """Materialize each day, oldest first; then keep the online store on the newest day.

    Re-running an old day (a backfill, a cleared task) would roll the SQLite online store back
    to that day's values (it overwrites unconditionally; Redis keeps the newer timestamp). When
    the lake holds a newer computed day than those given, it is materialized again last, so the
    online store always ends on the newest day. Its summary is marked ``"restored": True``.
    """
    store = get_store() if store is None else store
    out = [materialize_day(d, store=store) for d in sorted(days)]
    newest = latest_day(get_lake())
    if newest is not None and newest > max(days):
        out.append({**materialize_day(newest, store=store), "restored": True})
    return out


def materialize_day_fast(day: dt.date, store: FeatureStore | None = None) -> dict[str, Any]:
    """Same result as :func:`materialize_day`, reading only day D's partition.

    Feast's file offline store scans every partition of the source folder and filters by
    timestamp; this path streams the one partition of D per view in record batches into the
    online store in Feast's own format (:func:`features.online.write_day`: conversion of the
    next batch overlapped with the pipelined write of this one), then records the interval in
    the registry like ``materialize`` does.
    """
    lake = get_lake()
    for view in VIEWS:
        require_partition(lake, view, day)
    store = get_store() if store is None else store
    start, end = interval_of(day)
    rows = {}
    for view in VIEWS:
        result = write_day(store, fv_name(view), view, day, lake=lake)
        fv = store.get_feature_view(fv_name(view))
        store.registry.apply_materialization(fv, store.project, start, end)
        rows[view] = result.rows
        log.info(
            "materialized %s %s: %d rows (%d kept newer online) at %.0f rows/s",
            view,
            day,
            result.rows,
            result.skipped,
            result.rows_per_s,
        )
    return {"day": day.isoformat(), "interval": [start.isoformat(), end.isoformat()], "rows": rows}


def compute_days(days: list[dt.date]) -> dict[str, Any]:
    """Write the feature partitions of ``days`` (one day as :func:`compute_day`, more in one pass).

    Several days read the validated data once (:func:`features.compute.compute_range`); the
    summary is compact either way: ``days`` built, ``first``/``last``, the newest day's ``rows``
    and the days whose 28-day window had days without validated events (``with_gaps``).
    """
    if not days:
        raise FeatureError("no day to compute")
    lake = get_lake()
    days = sorted(set(days))
    if len(days) == 1:
        summaries = [compute_features(lake, days[0])]
    else:
        summaries = compute_range(lake, days[0], days[-1], days=days)
    return {
        "days": len(summaries),
        "first": summaries[0].day,
        "last": summaries[-1].day,
        "rows": summaries[-1].rows,
        "with_gaps": sum(1 for s in summaries if s.missing_event_days),
    }


def materialize_range(
    start: dt.date, end: dt.date, store: FeatureStore | None = None
) -> list[dict[str, Any]]:
    """Bring the online store to the end of [start, end] in one pass.

    The online store keeps one value per entity, the newest; each day's partition is a full
    snapshot (every entity known by then), so the newest computed day of the range holds exactly
    what Feast's ``materialize`` over the whole range would leave online. That one partition per
    view is written (as :func:`materialize_day_fast` does) and the range's interval recorded in
    the registry. A newer computed day than ``end`` is written again last, like
    :func:`materialize_days` does, so the online store never rolls back.
    """
    lake = get_lake()
    in_range = [d for d in featurised_days(lake) if start <= d <= end]
    if not in_range:
        raise FeatureError(
            f"no computed features between {start} and {end} "
            f"({lake.url(f'{FEATURES}/')}); compute that range first"
        )
    newest = max(in_range)
    store = get_store() if store is None else store
    first, _ = interval_of(min(in_range))
    last = known_at(newest)
    rows = {}
    for view in VIEWS:
        require_partition(lake, view, newest)
        rows[view] = write_day(store, fv_name(view), view, newest, lake=lake).rows
        fv = store.get_feature_view(fv_name(view))
        store.registry.apply_materialization(fv, store.project, first, last)
    out = [
        {
            "day": newest.isoformat(),
            "interval": [first.isoformat(), last.isoformat()],
            "rows": rows,
            "range": [min(in_range).isoformat(), newest.isoformat()],
            "range_days": len(in_range),
        }
    ]
    latest = latest_day(lake)
    if latest is not None and latest > newest:
        out.append({**materialize_day(latest, store=store), "restored": True})
    return out


def _rows(lake: Lake, view: str, day: dt.date) -> int:
    """Rows of day D's partition of ``view`` (reads only the join key)."""
    table = lake.read(view, [day], columns=[JOIN_KEY[view]], zone=FEATURES)
    return table.num_rows if table is not None else 0


def _entity_key(join_key: str, value: str):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])


def check_freshness(
    day: dt.date, sample: int = 200, store: FeatureStore | None = None
) -> dict[str, Any]:
    """Fail unless the online store holds day D's values (or newer) for sampled entities.

    Samples up to ``sample`` entities of each view's partition for D and reads their online
    timestamps. Any entity missing online, or older than D+1 00:00 UTC, is stale: a
    :class:`FeatureError` says which view, how many, and the oldest timestamp found.
    Returns, per view, the number checked and the oldest online timestamp.
    """
    lake = get_lake()
    store = get_store() if store is None else store
    provider = store._get_provider()
    expected = known_at(day)
    report: dict[str, Any] = {"day": day.isoformat(), "expected_timestamp": expected.isoformat()}
    for view in VIEWS:
        key = JOIN_KEY[view]
        require_partition(lake, view, day)
        ids = lake.read(view, [day], columns=[key], zone=FEATURES).column(key).to_pylist()
        step = max(1, len(ids) // sample)
        picked = ids[::step][:sample]
        fv = store.get_feature_view(fv_name(view))
        rows = provider.online_read(
            config=store.config, table=fv, entity_keys=[_entity_key(key, i) for i in picked]
        )
        missing = [i for i, (ts, _) in zip(picked, rows, strict=True) if ts is None]
        stamps = [_as_utc(ts) for ts, _ in rows if ts is not None]
        oldest = min(stamps) if stamps else None
        stale = [s for s in stamps if s < expected]
        if missing or stale:
            raise FeatureError(
                f"stale online features for view {fv_name(view)!r} on {day}: "
                f"{len(missing)} of {len(picked)} sampled {key}s missing online, {len(stale)} older "
                f"than {expected.isoformat()} (oldest {oldest.isoformat() if oldest else 'none'}); "
                f"materialize {day} again"
            )
        report[view] = {
            "checked": len(picked),
            "oldest": oldest.isoformat() if oldest else None,
            "lag_seconds": (expected - oldest).total_seconds() if oldest else None,
        }
    return report


def _as_utc(ts: dt.datetime) -> dt.datetime:
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


# --- training and serving -------------------------------------------------------------------


def build_training_frame(
    entity_df: pd.DataFrame, store: FeatureStore | None = None, missing_ok: bool = False
) -> pd.DataFrame:
    """Entity rows + every feature of ``recommender_v1``, point-in-time correct.

    ``entity_df`` has ``user_id`` (pseudonym), ``item_id``, ``event_timestamp`` (UTC) and any
    other columns (labels…), which come back unchanged. A row at time t gets, per view, the
    values of the last day whose end is ≤ t (Feast ``get_historical_features`` on the file
    offline store, TTL 2 days). Features use their plain names (see :mod:`features.columns`).

    Every row comes back, in order, as its own row: Feast is asked per view for the distinct
    (key, timestamp) pairs (it collapses rows sharing them and drops those with no value in
    time) and the values are joined back onto the rows, so same-second events stay distinct and
    an entity unknown at that time (a signup that day) gets nulls.

    Every row's day must have features within the TTL (the day before, or the one before that
    when that day was quarantined): a longer gap is a :class:`FeatureError` naming the view and
    day, never rows of nulls -- unless ``missing_ok`` (the first days of a history, which have
    no features before them), where those rows get nulls too.
    """
    import pandas as pd

    missing_cols = {"user_id", "item_id", "event_timestamp"} - set(entity_df.columns)
    if missing_cols:
        raise FeatureError(f"entity rows lack column(s) {sorted(missing_cols)}")
    if entity_df.empty:
        raise FeatureError("entity rows are empty: nothing to build a training frame from")
    out = entity_df.copy()
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype(
        "datetime64[ns, UTC]"
    )
    lake = get_lake()
    if not missing_ok:
        row_days = sorted({t.date() for t in out["event_timestamp"].dt.floor("D").unique()})
        for view in VIEWS:
            for day in row_days:
                if serving_day(lake, day, (view,)) is None:
                    require_partition(lake, view, day - _DAY)  # raises, naming view and day
    store = get_store() if store is None else store
    refs = _service_refs(store)
    for view in VIEWS:
        key = JOIN_KEY[view]
        keys = out[[key, "event_timestamp"]].drop_duplicates().reset_index(drop=True)
        values = store.get_historical_features(
            entity_df=keys, features=refs[view], full_feature_names=False
        ).to_df()
        values["event_timestamp"] = pd.to_datetime(values["event_timestamp"], utc=True).astype(
            "datetime64[ns, UTC]"
        )
        feats = [r.split(":", 1)[1] for r in refs[view]]
        values = values[[key, "event_timestamp", *feats]].drop_duplicates([key, "event_timestamp"])
        out = out.merge(values, on=[key, "event_timestamp"], how="left", validate="many_to_one")
    return out


def _service_refs(store: FeatureStore) -> dict[str, list[str]]:
    """Feature refs of ``recommender_v1`` by view (``user_stats`` → ``["user_stats_fv:…"]``).

    Read from the registry once per store object (rebuilding the service from its proto costs
    tens of milliseconds, more than the online read itself).
    """
    cached = getattr(store, "_flywheel_refs", None)
    if cached is not None:
        return cached
    service = store.get_feature_service(FEATURE_SERVICE)
    refs: dict[str, list[str]] = {}
    for proj in service.feature_view_projections:
        view = proj.name.removesuffix("_fv")
        refs[view] = [f"{proj.name}:{f.name}" for f in proj.features]
    store._flywheel_refs = refs
    return refs


def online_features(
    user_ids: list[str] | None = None,
    item_ids: list[str] | None = None,
    store: FeatureStore | None = None,
) -> dict[str, pd.DataFrame]:
    """Online values of ``recommender_v1`` for users and/or items (for serving).

    Returns ``{"users": DataFrame, "items": DataFrame}`` (only the kinds asked for), one row per
    id in the order given, the id column first, features with their plain names. Ids unknown
    to the online store come back with nulls; :func:`require_online` turns that into an error.
    """
    import pandas as pd

    store = get_store() if store is None else store
    refs = _service_refs(store)
    out: dict[str, pd.DataFrame] = {}
    for kind, view, ids in (("users", USER_VIEW, user_ids), ("items", ITEM_VIEW, item_ids)):
        if ids is None:
            continue
        key = JOIN_KEY[view]
        resp = store.get_online_features(
            features=refs[view], entity_rows={key: list(ids)}, full_feature_names=False
        )
        values = resp.to_dict()
        feats = [r.split(":", 1)[1] for r in refs[view]]
        out[kind] = pd.DataFrame({c: values[c] for c in (key, *feats)})
    return out


def require_online(frame: pd.DataFrame, key: str) -> None:
    """Raise a :class:`FeatureError` naming the ids of ``frame`` with no online values."""
    feats = [c for c in frame.columns if c != key]
    empty = frame[frame[feats].isna().all(axis=1)][key].tolist()
    if empty:
        raise FeatureError(
            f"no online features for {key} {', '.join(map(str, empty[:5]))}"
            f"{' …' if len(empty) > 5 else ''}: unknown id, or its features were never materialized"
        )
