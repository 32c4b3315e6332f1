"""MLflow: tracking setup, registration, aliases, the promotion gate and infra-validation.

Registered model ``settings.registered_model`` (``flywheel-recommender``) with two aliases and no
stages. ``champion`` is what serving loads; only a promotion moves it (:func:`record_decision`).
``challenger`` is the version serving's A/B test sends ``FLYWHEEL_AB_CHALLENGER_SHARE`` of users
to; training never moves it (a new version, promoted or rejected, leaves it where it was): it is
set on purpose by whoever starts an A/B test (MLflow UI, or ``MlflowClient.
set_registered_model_alias``) and deleted to end the test.

The gate (:func:`decide`): a candidate becomes champion only when its holdout NDCG@10 beats the
champion's by more than ``promotion.margin``, its Recall@20 drops by at most
``promotion.recall_tolerance``, and its NDCG@10 beats the strongest baseline's (popularity,
recent popularity, implicit ALS/BPR/item-kNN with a popularity fallback -- all evaluated on the same
holdout requests, :mod:`training.evaluation`) times ``1 - promotion.baseline_tolerance``; with no
champion (or a champion whose artifact is gone or corrupt) only the baseline rule applies. A
registry or artifact store that does not answer is never read as "no champion": the champion is
looked up and loaded :data:`ATTEMPTS` times (:func:`load_champion`), then the step fails. Before
any promotion the candidate is loaded exactly as serving loads it (:func:`load_recommender`) and
answers a sample of requests (:func:`infra_validate`); a failure blocks the promotion. Candidate
and champion are scored on the holdout in :mod:`training.evaluation`.

Crash consistency: :func:`register` is idempotent by MLflow run id (a retry finds the version
registered for the run instead of adding one); :func:`record_decision` moves ``champion`` first
and writes the ``promotion_decision`` tags after, so a failure between the two never leaves a
version tagged ``promoted`` that is not champion, and a retry completes it.

MLflow is imported inside the functions: the CLI, the Airflow UI plugin and drift monitoring
import this module to read the registry and must stay fast.
"""

from __future__ import annotations

import fcntl
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.errors import FlywheelError
from core.names import CHAMPION, DRIFT_URI, FEATURES_URI, VALIDATED_EVENTS_URI
from core.settings import Settings, get_settings
from training.request import one_row_request

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

    from training.data import TrainingSet

log = logging.getLogger(__name__)

EXPERIMENT = "flywheel-recommender"
#: MLflow 3 opens an experiment in the view its kind names (model training, not GenAI traces).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: Asset URIs in words, for run names and the leaderboard's trigger column.
TRIGGER_WORDS = {
    DRIFT_URI: "drift on",
    FEATURES_URI: "new features",
    VALIDATED_EVENTS_URI: "new data",
}
LINEAGE_TAGS = (
    "data_window_start",
    "data_window_end",
    "feature_service",
    "validation_ids",
    "git_commit",
    "trigger",
    "run_key",
    "promotion_decision",
    "promotion_reason",
    "strongest_baseline",
    "holdout_start",
    "champion_evaluation",
    "airflow_dag_run",
)
#: Run metrics :func:`list_versions` returns (the model, champion and baselines on the holdout).
METRIC_PREFIXES = (
    "holdout_",
    "popularity_",
    "oracle_",
    "ndcg_to",
    "baseline_",
    "strongest_baseline_",
    "vs_strongest_baseline_",
    "champion_",
)


class InfraValidationError(FlywheelError):
    """The candidate could not be loaded or served as serving would; promotion is blocked."""


class RegistryError(FlywheelError):
    """The model registry cannot be reached or holds something unexpected."""


T = TypeVar("T")
#: Tries of a registry or artifact read that failed transiently, before the step fails.
ATTEMPTS = 3
RETRY_WAIT_S = 1.0  # doubles after each try
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_TRANSIENT_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED")
_TRANSIENT_NAMES = (
    "ConnectionError",  # requests, botocore, builtins
    "Timeout",
    "MaxRetryError",
    "NewConnectionError",
    "EndpointConnectionError",
    "OperationalError",  # SQLAlchemy: database locked or unreachable
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the registry or artifact store did not answer,
    rather than that something is missing or broken: worth another try."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError | TimeoutError):
            return True
        if any(n in c.__name__ for c in type(seen).__mro__ for n in _TRANSIENT_NAMES):
            return True
        code = str(getattr(seen, "error_code", ""))
        if code in _TRANSIENT_CODES or (
            code == "INTERNAL_ERROR" and str(seen).startswith("API request to")
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def retrying(what: str, fn: Callable[[], T], attempts: int | None = None) -> T:
    """``fn()``, tried again on a transient error (:func:`is_transient`) up to ``attempts``
    times in all; then a :class:`RegistryError` naming ``what``. Other errors pass through."""
    attempts = attempts or ATTEMPTS
    wait = RETRY_WAIT_S
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            if attempt == attempts:
                raise RegistryError(
                    f"{what}: the registry did not answer after {attempts} tries "
                    f"({type(exc).__name__}: {msg})"
                ) from None
            log.warning(
                "%s: try %d/%d failed (%s), again in %.0f s", what, attempt, attempts, msg, wait
            )
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


# --- setup ----------------------------------------------------------------------------------


def configure_mlflow(settings: Settings | None = None) -> MlflowClient:
    """Point MLflow at the profile's tracking/registry URI (explicitly; never at import)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    s = settings or get_settings()
    uri = s.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    # a new SQLite store migrates its tables on first open; two processes doing it at once (the
    # first drift check and the first training, both started by one features event) leave
    # alembic's temporary table behind and every later open fails: one opener at a time
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)  # the registry store migrates too
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def experiment_id(client: MlflowClient, settings: Settings | None = None) -> str:
    """The training experiment (created with the profile's artifact root when missing)."""
    s = settings or get_settings()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    local = not s.mlflow_tracking_uri.startswith(("http://", "https://"))
    return client.create_experiment(
        EXPERIMENT,
        artifact_location=s.mlflow_artifact_root if local else None,
        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},  # MLflow 3 opens it in the training view
    )


def describe_trigger(trigger: str | None, short: bool = False) -> str:
    """A run's ``trigger`` tag in words: ``manual``, ``drift on 2026-01-16``, ``new features
    2026-01-20``, ``new data 2026-01-20`` (``short``: the day as ``01-16``).

    The tag is ``manual`` or ``asset: <uri> <event metadata as JSON>``, possibly cut at the tag
    limit, so the day is found by pattern rather than by parsing the JSON.
    """
    tag = (trigger or "").strip()
    if not tag.startswith("asset:"):
        return tag or "manual"
    words = tag.removeprefix("asset:").split()
    uri = words[0].rstrip("/") if words else ""  # Airflow normalises flywheel://drift to …drift/
    label = TRIGGER_WORDS.get(uri, uri.removeprefix("flywheel://").strip("/") or "asset")
    day = re.search(r'"(?:date|day)":\s*"(\d{4})-(\d{2}-\d{2})', tag)
    if not day:
        return label.removesuffix(" on")
    return f"{label} {day.group(2) if short else day.group(1) + '-' + day.group(2)}"


def model_name(settings: Settings | None = None) -> str:
    """The registered model's name in this profile (``flywheel-recommender``)."""
    return (settings or get_settings()).registered_model


def load_recommender(uri: str) -> PyFuncModel:
    """Load a registered or logged recommender exactly as serving does (pyfunc)."""
    import mlflow.pyfunc

    configure_mlflow()
    return mlflow.pyfunc.load_model(uri)


# --- the gate -------------------------------------------------------------------------------


@dataclass
class Decision:
    promote: bool
    reason: str
    candidate: dict[str, float] = field(default_factory=dict)
    champion: dict[str, float] | None = None
    baseline: dict[str, float] | None = None
    champion_version: str | None = None
    baseline_name: str = "popularity"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def beats_baseline(
    c_ndcg: float, baseline: dict[str, float], name: str, tolerance: float = 0.0
) -> tuple[bool, str]:
    """(whether ``c_ndcg`` beats the baseline's NDCG@10, the sentence saying so)."""
    b = baseline["ndcg_at_10"]
    bar = b * (1.0 - tolerance)
    what = f"{name} {b:.4f} (the strongest baseline it must beat)"
    if c_ndcg > b:
        return True, f"candidate NDCG@10 {c_ndcg:.4f} beats {what}"
    if c_ndcg > bar:
        return True, (
            f"candidate NDCG@10 {c_ndcg:.4f} is within promotion.baseline_tolerance "
            f"{tolerance:.0%} of {what}"
        )
    return False, f"candidate NDCG@10 {c_ndcg:.4f} does not beat {what}" + (
        f" less tolerance {tolerance:.0%}" if tolerance else ""
    )


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    baseline: dict[str, float],
    margin: float,
    recall_tolerance: float,
    champion_note: str = "",
    baseline_name: str = "popularity",
    baseline_tolerance: float = 0.0,
) -> Decision:
    """Promotion decision (pure): see the module docstring for the rule. ``baseline`` is the
    strongest baseline's metrics on the same holdout, ``baseline_name`` its name."""
    c_ndcg, c_rec = candidate["ndcg_at_10"], candidate["recall_at_20"]
    ok, vs_base = beats_baseline(c_ndcg, baseline, baseline_name, baseline_tolerance)

    def verdict(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, candidate, champion, baseline, None, baseline_name)

    if champion is None:
        prefix = f"{champion_note}; " if champion_note else "no champion yet; "
        return verdict(ok, prefix + vs_base)
    h_ndcg, h_rec = champion["ndcg_at_10"], champion["recall_at_20"]
    gain, drop = c_ndcg - h_ndcg, h_rec - c_rec
    if not gain > margin:
        return verdict(
            False,
            f"NDCG@10 {c_ndcg:.4f} vs champion {h_ndcg:.4f}: gain {gain:+.4f} does not exceed the margin {margin:.4f}",
        )
    if drop > recall_tolerance:
        return verdict(
            False,
            f"NDCG@10 gain {gain:+.4f} but Recall@20 {c_rec:.4f} vs champion {h_rec:.4f} drops {drop:.4f} > tolerance {recall_tolerance:.4f}",
        )
    if not ok:
        return verdict(False, f"NDCG@10 {c_ndcg:.4f} beats champion {h_ndcg:.4f}, but {vs_base}")
    return verdict(
        True,
        f"NDCG@10 {c_ndcg:.4f} beats champion {h_ndcg:.4f} by {gain:+.4f} > margin {margin:.4f}; Recall@20 {c_rec:.4f} vs {h_rec:.4f} within tolerance {recall_tolerance:.4f}; {vs_base}",
    )


def model_absent(client: MlflowClient, name: str, exc: BaseException) -> bool:
    """Whether ``exc`` (from a lookup of ``name``) only means the registered model does not
    exist yet. Behind MLflow's basic-auth app a non-admin user gets 403 PERMISSION_DENIED, not
    404, for a model nobody has registered (existence is not revealed); the search, which lists
    only what the user may read, tells the two apart."""
    if str(getattr(exc, "error_code", "")) != "PERMISSION_DENIED":
        return False
    return not client.search_registered_models(filter_string=f"name = '{name}'")


def current_champion(client: MlflowClient, name: str | None = None):
    """The champion's ModelVersion, or ``None`` when the alias is not set (or no model yet).

    A registry that does not answer is not "no champion": transient errors are retried, then
    raise :class:`RegistryError`.
    """
    from mlflow.exceptions import MlflowException

    def lookup():
        try:
            return client.get_model_version_by_alias(name or model_name(), CHAMPION)
        except MlflowException as exc:
            if str(getattr(exc, "error_code", "")) in _NOT_FOUND and not is_transient(exc):
                return None
            if model_absent(client, name or model_name(), exc):
                return None
            raise

    return retrying("looking up the champion", lookup)


def load_champion(
    client: MlflowClient, name: str | None = None
) -> tuple[PyFuncModel | None, str | None, str]:
    """(model, version, note) of the champion to compare a candidate with.

    ``model`` is None with no champion, or when its artifact is gone or corrupt (the note says
    so: the candidate is then judged against the baselines, with that reason). A registry or
    artifact store that does not answer is retried, then raises :class:`RegistryError`: the
    step fails rather than lowering the bar.
    """
    name = name or model_name()
    mv = current_champion(client, name)
    if mv is None:
        return None, None, "no champion yet"
    try:
        model = retrying(
            f"loading champion v{mv.version}",
            lambda: load_recommender(f"models:/{name}@{CHAMPION}"),
        )
    except RegistryError:
        raise
    except Exception as exc:  # a missing/corrupt artifact must not block the pipeline
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        log.warning("champion v%s cannot be loaded: %s", mv.version, msg)
        return (
            None,
            str(mv.version),
            f"champion v{mv.version} cannot be loaded ({type(exc).__name__}: {msg}), "
            "candidate judged against the baselines",
        )
    return model, str(mv.version), f"champion v{mv.version}"


# --- infra validation -----------------------------------------------------------------------


def infra_validate(
    model_uri: str, ts: TrainingSet, n_requests: int = 20, k: int = 10
) -> dict[str, Any]:
    """Load ``model_uri`` as serving does and answer a sample of requests; raise on failure.

    The sample mixes known users (with exclusions), a cold user and, when the set has user
    features, a request carrying them. Checks: one row per request, ``k`` unique catalog items per
    row (fewer only when the catalog is smaller), finite scores in descending order.
    """
    import pandas as pd

    t0 = time.perf_counter()
    try:
        model = retrying(f"loading candidate {model_uri}", lambda: load_recommender(model_uri))
    except RegistryError:
        raise  # the registry did not answer: the step fails, the candidate is not judged
    except Exception as exc:
        raise InfraValidationError(
            f"candidate {model_uri} cannot be loaded as serving loads it: {type(exc).__name__}: {exc}"
        ) from None
    load_s = time.perf_counter() - t0
    users = sorted(set(ts.holdout["user_id"]))[: max(1, n_requests - 2)]
    seen = ts.seen()
    requests = pd.DataFrame(
        {
            "user_id": [*users, "cold-start-probe"],
            "k": [k] * (len(users) + 1),
            "exclude_item_ids": [sorted(seen.get(u, ()))[:50] for u in users] + [[]],
        }
    )
    catalog = set(ts.items["item_id"])
    t1 = time.perf_counter()
    try:
        out = model.predict(requests)
        feature_cols = [c for c in ts.users.columns if c != "user_id"]
        if feature_cols and len(ts.users):
            row = ts.users.head(1).to_dict("records")[0]
            user = row.pop("user_id")
            served = model.predict(one_row_request(user, k, (), row))  # as serving sends it
            out = pd.concat([out, served], ignore_index=True)
            requests = pd.concat(
                [requests, pd.DataFrame({"user_id": [user], "k": [k]})], ignore_index=True
            )
    except Exception as exc:
        raise InfraValidationError(
            f"candidate {model_uri} failed to answer requests: {type(exc).__name__}: {exc}"
        ) from None
    predict_s = time.perf_counter() - t1
    problems = []
    if len(out) != len(requests) or list(out["user_id"]) != list(requests["user_id"].astype(str)):
        problems.append(f"{len(out)} answers for {len(requests)} requests")
    excluded = list(requests.get("exclude_item_ids", pd.Series([None] * len(requests))))
    for row, ex in zip(out.itertuples(), excluded, strict=False):
        items, scores = list(row.item_ids), list(row.scores)
        ex = ex if isinstance(ex, list) else []
        expected = min(k, len(catalog - set(ex)))
        if len(items) != expected:
            problems.append(
                f"user {row.user_id}: {len(items)} items for k={k} (expected {expected})"
            )
        if len(set(items)) != len(items) or not set(items) <= catalog or set(items) & set(ex):
            problems.append(f"user {row.user_id}: duplicate, excluded or unknown item ids")
        if any(not math.isfinite(s) for s in scores) or scores != sorted(scores, reverse=True):
            problems.append(f"user {row.user_id}: scores not finite or not sorted")
        if len(problems) > 3:
            break
    if problems:
        raise InfraValidationError(
            f"candidate {model_uri} answered wrongly: " + "; ".join(problems[:3])
        )
    return {"requests": len(requests), "load_s": round(load_s, 3), "predict_s": round(predict_s, 3)}


# --- registry -------------------------------------------------------------------------------


def register(
    client: MlflowClient, model_uri: str, run_id: str, tags: dict[str, str] | None = None
) -> str:
    """The version of ``model_uri`` registered for MLflow run ``run_id``: found when a previous
    try registered it (idempotent by run id), else registered now. Moves no alias."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = model_name()
    tags = {k: str(v) for k, v in (tags or {}).items()} | {"run_id": run_id}
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if is_transient(exc):
            raise
        client.create_registered_model(
            name, description="Flywheel two-tower recommender (training/)"
        )
    mv = registered_for_run(client, name, run_id)
    if mv is None:
        mv = mlflow.register_model(model_uri, name, tags=tags)
    else:
        log.info("run %s is already registered as %s v%s (a retry)", run_id, name, mv.version)
    for key, value in tags.items():  # a retry completes tags a crash left out
        if (mv.tags or {}).get(key) != value:
            client.set_model_version_tag(name, mv.version, key, value)
    return str(mv.version)


def registered_for_run(client: MlflowClient, name: str, run_id: str):
    """The oldest version of ``name`` registered from MLflow run ``run_id`` (None if none)."""
    found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return min(found, key=lambda m: int(m.version), default=None)


def record_decision(client: MlflowClient, version: str, run_id: str, decision: Decision) -> None:
    """The alias ``champion`` (only when promoted) first, then the decision's tags on the
    version and the run: a crash in between leaves no version tagged ``promoted`` that is not
    champion, and running it again completes the promotion. ``challenger`` is never moved."""
    name = model_name()
    verdict = "promoted" if decision.promote else "rejected"
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    reason = decision.reason[:5000]
    for key, value in (("promotion_reason", reason), ("promotion_decision", verdict)):
        client.set_model_version_tag(name, version, key, value)
        client.set_tag(run_id, key, value)
    # what the registry's version page shows first
    client.update_model_version(name, version, description=f"{verdict.upper()}: {reason}")
    log.info("promotion of %s v%s: %s — %s", name, version, verdict, decision.reason)


def list_versions(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every registered version, newest first: version, aliases, metrics, lineage tags."""
    from mlflow.exceptions import MlflowException

    client = configure_mlflow(settings)
    name = model_name(settings)
    try:
        versions = client.search_model_versions(f"name='{name}'")
        aliases = client.get_registered_model(name).aliases if versions else {}
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
            return []
        raise RegistryError(
            f"model registry at {client.tracking_uri} cannot be read: {exc}"
        ) from None
    by_version: dict[str, list[str]] = {}
    for alias, v in (aliases or {}).items():
        by_version.setdefault(str(v), []).append(alias)
    rows = []
    for mv in sorted(versions, key=lambda m: int(m.version), reverse=True):
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        if mv.run_id:
            try:
                run = client.get_run(mv.run_id)
                metrics = {
                    k: v for k, v in run.data.metrics.items() if k.startswith(METRIC_PREFIXES)
                }
                tags = {k: v for k, v in run.data.tags.items() if k in LINEAGE_TAGS}
            except MlflowException:
                pass
        tags.update({k: v for k, v in (mv.tags or {}).items() if k in LINEAGE_TAGS})
        rows.append(
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "run_id": mv.run_id,
                "created": mv.creation_timestamp,
                "source": mv.source,
                "metrics": dict(sorted(metrics.items())),
                "tags": dict(sorted(tags.items())),
            }
        )
    return rows
