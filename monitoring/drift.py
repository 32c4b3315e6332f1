"""Drift monitoring: is today's traffic still the world the champion was trained on?

Reference = the feature rows of the champion's training window (``data_window_start`` …
``data_window_end`` tags of its MLflow run), read from the offline store
(:func:`features.compute.read_features`). Current = the rows of day D. Both sides keep
only the entities *active* on their day (a user or item with at least one view that day), so
windows of a few days compare like with like: one row per active entity per day.

Per column, a method suited to its type (one place, :class:`DriftConfig`):

* numeric → normed Wasserstein distance (distance / reference std) — a distance, not a p-value,
  so 100k-row samples do not flag negligible differences;
* categorical → Jensen-Shannon distance between the category frequencies.

When the serving API wrote impressions (``raw/impressions/dt=D/``) the report adds *prediction
drift* (the category mix and the popularity of what was recommended) and the summary adds
*quality drift*: click-through of the served slates (clicks from ``raw/events`` on a shown item
by the same user that day) against the reference serving days, as a relative drop.

The decision: drift when the share of drifted columns reaches ``drift_share`` or the quality drop
reaches ``quality_drop``; a detected drift only *triggers* retraining outside the cooldown:
no training queued (one that has not started trains on the newest data anyway; one already
running started before the drift was known, so the trigger still goes out and queues behind
it), and ``cooldown_days`` since the last trigger. Everything is
computed with Evidently 0.7's ``Report`` (``ValueDrift`` per column, ``DriftedColumnsCount``),
whose snapshot goes to the Evidently workspace (project ``flywheel``) and whose HTML goes to
``reports/drift/dt=D/report.html`` beside ``summary.json``.

Run it without Airflow::

    python -c "import datetime as d; from monitoring.drift import monitor_day; \
print(monitor_day(d.date(2026, 1, 10)))"
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import FlywheelError
from core.lake import Lake, partition_prefix

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
SUMMARY_NAME = "summary.json"
#: Private (never listed) state of the trigger cooldown, beside the reports.
STATE_KEY = "reports/drift/_trigger_state.json"
PROJECT = "flywheel"
_DAY = dt.timedelta(days=1)


class DriftError(FlywheelError):
    """The drift check cannot run (missing features, bad window); the message names what."""


@dataclass(frozen=True)
class DriftConfig:
    """Every threshold of the drift check and the retraining trigger, with the reason for each.

    Tuned on the simulator (``tests/unit/test_drift_detection.py``): stable 14 days give no
    decision, each shift scenario is decided on its onset day or the next.
    """

    # --- which columns -------------------------------------------------------------------------
    #: Numeric columns compared. Per-day quantities of active entities only, so a young lake
    #: (days with less history) looks like an old one. Left out on purpose: 7/28-day counts and
    #: 28-day rates (they move while the history fills up: rates of 2 events vs 200), per-entity
    #: 1-day rates (ratios of 0–3 events: noise), tenure and item age (they grow with the
    #: calendar), days since last event (≈0 for every active entity).
    numeric: tuple[str, ...] = ("user_views_1d", "item_price")
    #: Categorical columns compared. ``traffic_category``: the category of every item view of
    #: the day (item rows repeated by their 1-day views) — the first thing to move when tastes
    #: shift (a user's 28-day top category lags by days). ``traffic_event``: the type of every
    #: event of the day (from the users' 1-day counts) — click-through and conversion of the
    #: whole traffic, measured on thousands of events instead of per user.
    categorical: tuple[str, ...] = (
        "user_top_category",
        "user_country",
        "user_age_bucket",
        "item_category",
        "traffic_category",
        "traffic_event",
    )
    #: A row counts as active on its day when this column is > 0 (per view).
    user_active: str = "user_views_1d"
    item_active: str = "item_views_1d"

    # --- per-column methods and thresholds -----------------------------------------------------
    #: Distances, not p-values: at 100k rows every test rejects; a distance has a size.
    num_method: str = "wasserstein"
    #: Normed Wasserstein ≥ 0.1 std: Evidently's default; day-to-day noise in stable stays < 0.06.
    num_threshold: float = 0.1
    cat_method: str = "jensenshannon"
    #: Jensen-Shannon distance ≥ 0.1 (Evidently's default); stable noise stays < 0.05.
    cat_threshold: float = 0.1
    #: Overrides by column name (method, threshold), set well above the day-to-day noise
    #: measured on the simulator's stable world (weekday seasonality moves volumes; a 28-day
    #: top category of a user with few events flips easily).
    per_column: dict[str, tuple[str, float]] = field(
        default_factory=lambda: {
            "user_views_1d": ("wasserstein", 0.15),
            "user_top_category": ("jensenshannon", 0.15),
        }
    )

    # --- the decision --------------------------------------------------------------------------
    #: Share of compared columns that must drift: 0.1 = any one of the eight. Every threshold
    #: sits well above stable noise, and a taste shift moves only the traffic's category mix at
    #: first; a larger share would decide it days late.
    drift_share: float = 0.1
    #: Relative drop of slate click-through vs the reference serving days that alone decides.
    quality_drop: float = 0.2
    #: Days after a trigger during which no new trigger is sent (the retrained model needs time).
    cooldown_days: int = 3
    #: Fewer current rows than this: no decision (too little traffic to judge).
    min_rows: int = 30
    #: Rows sampled per side at most (deterministic): bounds time and memory.
    max_rows: int = 200_000
    #: Serving days used as the quality reference when the training window has no impressions.
    serving_reference_days: int = 2

    def method_for(self, column: str) -> tuple[str, float]:
        if column in self.per_column:
            return self.per_column[column]
        if column in self.categorical or column == "rec_category":
            return self.cat_method, self.cat_threshold
        return self.num_method, self.num_threshold

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["per_column"] = {k: list(v) for k, v in self.per_column.items()}
        return d


@dataclass
class DriftResult:
    """The outcome of one day's check; :meth:`summary` is what goes to the lake and the Asset."""

    date: str
    drift_detected: bool
    drift_share: float | None
    drifted_columns: list[str]
    quality_drop: float | None
    reason: str
    report_uri: str | None = None
    candidate: bool = False  # drift seen, before the cooldown
    suppressed_by: str | None = None
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_window: list[str] | None = None
    reference_rows: int = 0
    current_rows: int = 0
    champion_version: str | None = None
    prediction_drift: dict[str, float] | None = None
    quality: dict[str, float] | None = None
    snapshot_id: str | None = None

    def summary(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def no_decision(cls, day: dt.date, reason: str) -> DriftResult:
        """A day that could not be judged (no champion yet, inside its window): no drift."""
        return cls(
            date=day.isoformat(),
            drift_detected=False,
            drift_share=None,
            drifted_columns=[],
            quality_drop=None,
            reason=reason,
        )


# --- the data --------------------------------------------------------------------------------


#: At most this many repeats of one entity in the ``traffic_*`` columns (bounds memory).
_TRAFFIC_CAP = 1_000
#: ``traffic_event`` values and the 1-day user counts they come from.
_EVENT_COUNTS: dict[str, str] = {
    "view": "user_views_1d",
    "click": "user_clicks_1d",
    "add_to_cart": "user_carts_1d",
    "purchase": "user_purchases_1d",
    "rating": "user_ratings_1d",
}


def _active_rows(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df[df[column] > 0] if column in df.columns else df


def _repeat(values, counts, day) -> pd.DataFrame:
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

    from features import ITEM_VIEW, USER_VIEW, FeatureError
    from features.compute import read_features

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


def _impressions(lake: Lake, days: list[dt.date]) -> pd.DataFrame | None:
    import pandas as pd

    parts = []
    for day in days:
        prefix = partition_prefix("raw", "impressions", day)
        if any(k.endswith(".parquet") for k in lake.list(prefix)):
            t = lake.read_parquet(prefix).to_pandas()
            t["day"] = day
            parts.append(t)
    if not parts:
        return None
    return pd.concat(parts, ignore_index=True)


def _clicks(lake: Lake, days: list[dt.date]) -> pd.DataFrame:
    """Positive feedback (click, add to cart, purchase) of ``days`` from ``raw/events``."""
    import pandas as pd

    parts = []
    for day in days:
        for key in lake.list(partition_prefix("raw", "events", day)):
            if key.endswith(".parquet"):
                t = lake.read_parquet(key).to_pandas()
                t = t[t["event_type"].isin(["click", "add_to_cart", "purchase"])]
                parts.append(t[["event_id", "user_id", "item_id"]].assign(day=day))
    if not parts:
        return pd.DataFrame(columns=["event_id", "user_id", "item_id", "day"])
    return pd.concat(parts, ignore_index=True)


def _id_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [str(v) for v in json.loads(value)] if value else []
    return [str(v) for v in value] if value is not None else []


def slate_rows(lake: Lake, days: list[dt.date]) -> pd.DataFrame | None:
    """One row per recommended slot of the impressions of ``days``: user, item, rank, clicked.

    Feedback is matched to the slot by request id (``fb:<request_id>:<n>`` event ids) or, for
    events without one, by the same user acting on the shown item that day.
    """
    imp = _impressions(lake, days)
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


def _prediction_columns(slates: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """``rec_category`` and ``rec_popularity`` (log1p of the item's 7-day views) per slot."""
    import numpy as np

    cat = catalog.set_index("item_id")
    out = slates[["item_id", "day"]].copy()
    out["rec_category"] = out["item_id"].map(cat["item_category"])
    out["rec_popularity"] = np.log1p(out["item_id"].map(cat["item_views_7d"]).astype("float64"))
    return out[["rec_category", "rec_popularity", "day"]]


def _sample(df: pd.DataFrame, n: int) -> pd.DataFrame:
    return df if len(df) <= n else df.sample(n=n, random_state=0)


# --- the report ------------------------------------------------------------------------------


def run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: DriftConfig,
    *,
    timestamp: dt.datetime | None = None,
    metadata: dict[str, Any] | None = None,
    name: str | None = None,
):
    """Evidently ``Report`` of every compared column; returns ``(snapshot, per-column dict, share)``.

    Columns empty on either side are left out (nothing to compare); the share is Evidently's
    ``DriftedColumnsCount`` over the compared columns.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    candidates = [*config.numeric, *config.categorical, "rec_category", "rec_popularity"]
    cols = [
        c
        for c in candidates
        if c in reference.columns
        and c in current.columns
        and reference[c].notna().any()
        and current[c].notna().any()
    ]
    if not cols:
        raise DriftError("no column to compare: reference and current share no non-empty column")
    num = [c for c in cols if c not in config.categorical and c != "rec_category"]
    cat = [c for c in cols if c not in num]
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    ref = _sample(reference[cols], config.max_rows)
    cur = _sample(current[cols], config.max_rows)
    for c in cat:  # one dtype per side, missing stays missing
        ref[c] = ref[c].astype("object")
        cur[c] = cur[c].astype("object")
    methods = {c: config.method_for(c) for c in cols}
    metrics = [
        DriftedColumnsCount(
            columns=cols,
            drift_share=config.drift_share,
            per_column_method={c: m for c, (m, _) in methods.items()},
            per_column_threshold={c: t for c, (_, t) in methods.items()},
        ),
        *[ValueDrift(column=c, method=m, threshold=t) for c, (m, t) in methods.items()],
    ]
    report = Report(metrics, metadata=metadata or {}, tags=["drift"])
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
        timestamp=timestamp,
        name=name,
    )
    per_column: dict[str, dict[str, Any]] = {}
    share = None
    for result in snapshot.dict()["metrics"]:
        conf = result.get("config", {})
        if conf.get("type", "").endswith("DriftedColumnsCount"):
            share = float(result["value"]["share"])
        elif conf.get("type", "").endswith("ValueDrift"):
            c = conf["column"]
            score = float(result["value"])
            per_column[c] = {
                "method": conf["method"],
                "threshold": conf["threshold"],
                "score": round(score, 6),
                "drifted": bool(score >= conf["threshold"]),
            }
    if share is None:  # pragma: no cover - Evidently always returns the count
        share = sum(v["drifted"] for v in per_column.values()) / len(per_column)
    return snapshot, per_column, share


def check_drift(
    lake: Lake,
    day: dt.date,
    reference_window: tuple[dt.date, dt.date],
    config: DriftConfig | None = None,
) -> tuple[DriftResult, Any]:
    """Compare day D with the reference window; returns ``(result, evidently snapshot)``.

    The result's ``drift_detected`` is the drift *decision* before any cooldown (``candidate``).
    """
    config = config or DriftConfig()
    start, end = reference_window
    if end < start:
        raise DriftError(f"reference window is empty: {start} is after {end}")
    reference = feature_frame(lake, start, end, config, skip_missing=True)
    current = feature_frame(lake, day, day, config)
    ref_days = [start + k * _DAY for k in range((end - start).days + 1)]

    # prediction and quality drift: only when the serving API left impressions
    quality = None
    quality_drop = None
    cur_slates = slate_rows(lake, [day])
    if cur_slates is not None:
        ref_slates = slate_rows(lake, ref_days)
        if ref_slates is None:  # the champion served only after its window: its first days
            served = [d for d in lake.partitions("raw", "impressions") if end < d < day]
            ref_slates = slate_rows(lake, served[: config.serving_reference_days])
        if ref_slates is not None:
            catalog = _catalog_for(lake, day)
            reference = _stack(reference, _prediction_columns(ref_slates, catalog))
            current = _stack(current, _prediction_columns(cur_slates, catalog))
            q_ref, q_cur = slate_quality(ref_slates), slate_quality(cur_slates)
            quality = {
                "reference_slate_ctr": q_ref["slate_ctr"],
                "current_slate_ctr": q_cur["slate_ctr"],
                "reference_mrr": q_ref["mrr"],
                "current_mrr": q_cur["mrr"],
                "current_slates": q_cur["slates"],
            }
            if q_ref["slate_ctr"] > 0:
                quality_drop = round(1.0 - q_cur["slate_ctr"] / q_ref["slate_ctr"], 6)

    result = DriftResult(
        date=day.isoformat(),
        drift_detected=False,
        drift_share=None,
        drifted_columns=[],
        quality_drop=quality_drop,
        reason="",
        reference_window=[start.isoformat(), end.isoformat()],
        reference_rows=len(reference),
        current_rows=len(current),
        quality=quality,
    )
    if len(current) < config.min_rows:
        result.reason = (
            f"too little traffic on {day}: {len(current)} active rows < min_rows {config.min_rows}"
        )
        return result, None
    end_of_day = dt.datetime.combine(day + _DAY, dt.time(), tzinfo=dt.UTC)
    snapshot, per_column, share = run_report(
        reference.drop(columns=["day"]),
        current.drop(columns=["day"]),
        config,
        timestamp=end_of_day.replace(tzinfo=None),
        metadata={"date": day.isoformat(), "reference_window": f"{start}..{end}"},
        name=f"drift {day.isoformat()}",
    )
    result.columns = per_column
    result.drift_share = round(share, 6)
    result.drifted_columns = sorted(c for c, v in per_column.items() if v["drifted"])
    rec = {c: per_column[c]["score"] for c in ("rec_category", "rec_popularity") if c in per_column}
    result.prediction_drift = rec or None
    reasons = []
    if share >= config.drift_share:
        reasons.append(
            f"{len(result.drifted_columns)}/{len(per_column)} columns drifted "
            f"(share {share:.2f} ≥ {config.drift_share}): {', '.join(result.drifted_columns)}"
        )
    if quality_drop is not None and quality_drop >= config.quality_drop:
        reasons.append(f"slate CTR dropped {quality_drop:.0%} (≥ {config.quality_drop:.0%})")
    result.candidate = result.drift_detected = bool(reasons)
    if reasons:
        result.reason = "drift: " + "; ".join(reasons)
    else:
        q = (
            ""
            if quality_drop is None
            else f", quality drop {quality_drop:.2f} < {config.quality_drop}"
        )
        result.reason = f"no drift: share {share:.2f} < {config.drift_share}{q}"
    return result, snapshot


def _stack(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    return pd.concat([a, b], ignore_index=True, sort=False)


def _catalog_for(lake: Lake, day: dt.date) -> pd.DataFrame:
    from features import ITEM_VIEW
    from features.compute import read_features

    return read_features(lake, ITEM_VIEW, day, day)[["item_id", "item_category", "item_views_7d"]]


# --- champion, cooldown, storage -------------------------------------------------------------


@dataclass
class Champion:
    version: str
    window: tuple[dt.date, dt.date]
    run_id: str | None = None


def champion_window(settings=None) -> Champion | None:
    """The champion's version and training window (its run's ``data_window_*`` tags), or None."""
    from training.registry import configure_mlflow, current_champion, model_name

    client = configure_mlflow(settings)
    mv = current_champion(client, model_name(settings))
    if mv is None:
        return None
    tags = dict(mv.tags or {})
    if mv.run_id:
        tags = {**client.get_run(mv.run_id).data.tags, **tags}
    try:
        window = (
            dt.date.fromisoformat(tags["data_window_start"][:10]),
            dt.date.fromisoformat(tags["data_window_end"][:10]),
        )
    except (KeyError, ValueError):
        raise DriftError(
            f"champion {mv.name} v{mv.version} (run {mv.run_id}) has no "
            "data_window_start/data_window_end tags: cannot tell its training window"
        ) from None
    return Champion(version=str(mv.version), window=window, run_id=mv.run_id)


def read_trigger_state(lake: Lake) -> dict[str, Any]:
    return json.loads(lake.read_text(STATE_KEY)) if lake.exists(STATE_KEY) else {}


def apply_cooldown(
    result: DriftResult,
    lake: Lake,
    config: DriftConfig,
    trainings_in_flight: int = 0,
) -> DriftResult:
    """Turn a drift candidate into a trigger unless a training is queued or the last is recent."""
    if not result.candidate:
        return result
    day = dt.date.fromisoformat(result.date)
    last = read_trigger_state(lake).get("last_trigger")
    if trainings_in_flight:
        result.suppressed_by = f"{trainings_in_flight} train_recommender run(s) queued"
    elif (
        last
        and day > dt.date.fromisoformat(last)
        and (day - dt.date.fromisoformat(last)).days < config.cooldown_days
    ):
        result.suppressed_by = (
            f"cooldown: last trigger on {last}, {config.cooldown_days} days must pass"
        )
    if result.suppressed_by:
        result.drift_detected = False
        result.reason += f" — not triggering ({result.suppressed_by})"
    return result


def record_trigger(lake: Lake, result: DriftResult) -> None:
    state = read_trigger_state(lake)
    history = [h for h in state.get("history", []) if h != result.date] + [result.date]
    lake.write_text(
        STATE_KEY, json.dumps({"last_trigger": result.date, "history": sorted(history)}, indent=2)
    )


def unchecked_days(lake: Lake, after: dt.date) -> list[str]:
    """Days after ``after`` with features in every view but no drift summary yet, oldest first.

    Features events that arrive while a trigger is already pending are folded into it and not
    handed to the run it creates: those days come after the run's newest event day. Older
    unchecked days are left alone: judging them now would use a champion they never met.
    """
    from features.compute import featurised_days

    return sorted(
        d.isoformat()
        for d in featurised_days(lake)
        if d > after and not lake.exists(report_prefix(d) + "summary.json")
    )


def report_prefix(day: dt.date) -> str:
    return f"reports/drift/dt={day.isoformat()}/"


def store(lake: Lake, day: dt.date, result: DriftResult, snapshot, settings=None) -> DriftResult:
    """Write ``report.html`` + ``summary.json`` (replacing the day's) and add the workspace run."""
    files: dict[str, bytes] = {}
    if snapshot is not None:
        files[REPORT_NAME] = snapshot.get_html_str(as_iframe=False).encode("utf-8")
        result.report_uri = lake.url(report_prefix(day) + REPORT_NAME)
        result.snapshot_id = add_to_workspace(snapshot, day, settings)
    files[SUMMARY_NAME] = json.dumps(result.summary(), indent=2, default=str).encode("utf-8")
    lake.replace_partition(report_prefix(day), files)
    return result


def add_to_workspace(snapshot, day: dt.date, settings=None) -> str:
    """Add the snapshot to project ``flywheel``; an earlier run of the same day is replaced."""
    from evidently.ui.workspace import Workspace

    from core.settings import get_settings

    s = settings or get_settings()
    s.evidently_workspace.mkdir(parents=True, exist_ok=True)
    ws = Workspace(str(s.evidently_workspace))
    projects = ws.search_project(PROJECT)
    if projects:
        project = projects[0]
    else:
        project = ws.create_project(PROJECT, description="Flywheel drift reports (one per day)")
        project.save()
    name = snapshot.get_name()
    for run_id in ws.list_runs(project.id):
        old = ws.get_run(project.id, run_id)
        if old is not None and old.name == name:
            ws.delete_run(project.id, run_id)
    ref = ws.add_run(project.id, snapshot, include_data=False)
    return str(ref.id)


def read_summary(lake: Lake, day: dt.date) -> dict[str, Any] | None:
    key = report_prefix(day) + SUMMARY_NAME
    return json.loads(lake.read_text(key)) if lake.exists(key) else None


def summaries(lake: Lake) -> list[dict[str, Any]]:
    """Every stored day's summary, newest first (for the UI)."""
    out = []
    for day in reversed(lake.partitions("reports", "drift")):
        s = read_summary(lake, day)
        if s is not None:
            out.append(s)
    return out


def monitor_day(
    day: dt.date,
    *,
    lake: Lake | None = None,
    config: DriftConfig | None = None,
    trainings_in_flight: int = 0,
    reference_window: tuple[dt.date, dt.date] | None = None,
    settings=None,
) -> dict[str, Any]:
    """The whole daily check: champion → report → decision with cooldown → stored summary.

    Returns the summary dict (``drift_detected``, ``drift_share``, ``drifted_columns``,
    ``quality_drop``, ``reason``, ``report_uri`` and details). Re-running a day overwrites it.
    """
    from core.lake import get_lake

    config = config or DriftConfig()
    lake = lake or get_lake()
    champion = None
    if reference_window is None:
        champion = champion_window(settings)
        if champion is None:
            result = DriftResult.no_decision(
                day, "no champion model yet: no training window to compare against"
            )
            return store(lake, day, result, None, settings).summary()
        reference_window = champion.window
    if reference_window[1] >= day:  # never compare a day with itself
        reference_window = (reference_window[0], day - _DAY)
        if reference_window[1] < reference_window[0]:
            result = DriftResult.no_decision(
                day, f"{day} lies inside the champion's training window: nothing to compare"
            )
            return store(lake, day, result, None, settings).summary()
    result, snapshot = check_drift(lake, day, reference_window, config)
    result.champion_version = champion.version if champion else None
    apply_cooldown(result, lake, config, trainings_in_flight)
    store(lake, day, result, snapshot, settings)
    if result.drift_detected:
        record_trigger(lake, result)
    return result.summary()
