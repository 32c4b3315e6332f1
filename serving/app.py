"""The serving API: ``create_app()`` builds the FastAPI app that ``flywheel serve`` runs.

Endpoints (the simulated users and the UI code against these; keep them stable):

* ``GET /recommendations/{user_id}?k=10`` (``k`` in 1..100; ``user_id`` the RAW id, 1-128 of
  letters, digits and ``_ . @ : -``, always hashed into its pseudonym -- also when it looks
  like one, so knowing a pseudonym does not let anyone act as that user) → ``{"request_id", "user_id", "items": [{"item_id",
  "score"}], "model_version", "variant", "fallback"}``. ``variant`` is ``champion``,
  ``challenger`` (A/B share, see :mod:`serving.ab`) or ``fallback``; ``fallback`` is
  null or ``popular_country`` / ``popular_overall`` (see :mod:`serving.fallback`).
  Items the user already purchased are never recommended.
* ``POST /feedback`` ``{"request_id", "item_id", "event_type", "value"}`` (``click``,
  ``add_to_cart``, ``purchase``: value 1.0 or omitted; ``rating``: 0.5-5) → 202 once written to
  the local spool (durable, see :mod:`serving.feedback`); 200 ``"duplicate"`` for the same event
  again (one per impression, item and type); 404 for an unknown request id; 409 for a second
  event of that kind with another value; 422 for an item not in that impression, a bad value or
  feedback later than the window after serving; 503 while the spool is full (the lake is down).
* Simulated clocks, only with ``FLYWHEEL_SERVE_SIMULATED_CLOCK=true`` (refused in production):
  ``?at=<ISO 8601 UTC>`` on recommendations and ``"event_ts"`` in feedback set the impression's
  and the event's time (and so the ``dt=`` partition they land in); by default both are the
  time of arrival, and without the setting a client-set time gets a 422. Times in the future or
  without a time zone get a 422.
* ``GET /health`` → at once, also while MLflow is down: model versions (and whether they came
  from the local cache), buffered rows; ``GET /metrics`` → Prometheus text.
* Bodies over ``FLYWHEEL_SERVE_MAX_BODY_BYTES`` (64 KiB) get 413; a 422 says which field is
  wrong and why, never what was sent.

A user is served by the model when the online feature store (Feast) has features for them -- or,
when no feature store is reachable, when validated data knows them -- and the model returns items;
otherwise the popularity fallback answers and the response says which one.

FastAPI is imported when the app is built (:func:`create_app`), so that the ``flywheel`` CLI,
which imports this module to offer ``flywheel serve``, starts without it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from core.errors import ConfigError
from core.lake import Lake, get_lake
from core.names import (
    CHALLENGER,
    CHAMPION,
    FALLBACK,
    FEATURE_SERVICE,
    FEEDBACK_EVENT_TYPES,
    USER_VIEW,
)
from core.privacy import pseudonym_key, pseudonymise
from core.settings import Settings, get_settings
from features.store import JOIN_KEY, fv_name, get_store
from serving import openapi
from serving.ab import assign_variant
from serving.cache import ModelCache
from serving.fallback import ServingData
from serving.feedback import FeedbackError, FeedbackLog, Impression
from serving.model import LoadedModel, ModelFollower
from serving.redact import redact

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,127}$"
_USER_ID = re.compile(USER_ID_PATTERN)
K_MAX = 100

#: ``features(pseudonym) -> dict | None``: None = the store has no features for this user;
#: raising = the store is unreachable (the model then uses what it stored at training time).
FeatureSource = Callable[[str], Mapping[str, Any] | None]

#: The feedback ``POST /feedback`` accepts, as a type pydantic validates and documents
#: (``Literal[("a", "b")]`` is ``Literal["a", "b"]``).
FeedbackType = Literal[FEEDBACK_EVENT_TYPES]


class FeedbackIn(BaseModel):
    request_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=256)
    event_type: FeedbackType
    value: float | None = None
    event_ts: dt.datetime | None = Field(
        default=None, description="When it happened (simulated clocks); default: on arrival"
    )


def feast_user_features(settings: Settings | None = None) -> FeatureSource:
    """Online user features of the ``recommender_v1`` service from Feast (Redis in production).

    The same read as :func:`features.store.online_features`, except that the feature
    service is resolved once here rather than from the (SQL) registry on every request, and the
    response is read as a dict, not a DataFrame: a few ms per request instead of tens. Raises
    when the store or the feature service is not set up (serving then runs without features).
    """
    store = get_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    view = fv_name(USER_VIEW)
    refs = [
        f"{proj.name}:{f.name}"
        for proj in service.feature_view_projections
        if proj.name == view
        for f in proj.features
    ]
    if not refs:
        raise LookupError(f"feature service {FEATURE_SERVICE} has no {view} features")
    key = JOIN_KEY[USER_VIEW]

    def lookup(user_id: str) -> Mapping[str, Any] | None:
        resp = store.get_online_features(
            features=refs, entity_rows={key: [user_id]}, full_feature_names=False
        ).to_dict()
        found = {
            name: values[0]
            for name, values in resp.items()
            if name != key and values and values[0] is not None and values[0] == values[0]
        }
        return found or None

    return lookup


class Metrics:
    """Prometheus metrics of one app (its own registry, so apps in one process don't clash)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "flywheel_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flywheel_request_latency_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.recommendations = Counter(
            "flywheel_recommendations",
            "Recommendation responses",
            ["variant"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "flywheel_fallbacks", "Responses served by a fallback", ["kind"], registry=self.registry
        )
        self.feedback = Counter(
            "flywheel_feedback", "Feedback events accepted", ["event_type"], registry=self.registry
        )
        self.model_version = Gauge(
            "flywheel_model_version",
            "Registered version served per alias (0 = none)",
            ["alias"],
            registry=self.registry,
        )
        self.model_swaps = Gauge(
            "flywheel_model_swaps", "Model swaps since start", ["alias"], registry=self.registry
        )
        self.buffered = Gauge(
            "flywheel_feedback_buffered_rows",
            "Impressions+feedback not yet written",
            registry=self.registry,
        )
        self.batches = Gauge(
            "flywheel_feedback_batches_written",
            "Batches written to the lake",
            registry=self.registry,
        )
        self.spooled = Gauge(
            "flywheel_feedback_spool_bytes",
            "Bytes in the feedback spool not yet in the lake (503 past the cap)",
            registry=self.registry,
        )


def _route_of(path: str) -> str:
    if path.startswith("/recommendations"):
        return "/recommendations/{user_id}"
    if path in ("/feedback", "/health", "/metrics"):
        return path
    return "other"


class MetricsMiddleware:
    """Pure ASGI middleware: request count and latency per route template and status."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_of(scope.get("path", ""))
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(route, scope.get("method", ""), str(status[0])).inc()


class BodyLimitMiddleware:
    """Pure ASGI middleware: a request body over ``max_bytes`` gets 413 before anything parses it.

    A declared ``Content-Length`` over the limit is answered at once; a body without one
    (chunked) is counted as it arrives, and once over the limit the 413 is sent, the app is
    told the client left, and whatever the app still sends is dropped.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await self._too_large(send)
                    return
        seen = 0
        refused = False

        async def counting_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._too_large(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


class Service:
    """Everything one serving process holds: models, lake snapshot, feedback buffer, metrics."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        lake: Lake | None = None,
        champion: ModelFollower | None = None,
        challenger: ModelFollower | None = None,
        features: FeatureSource | None | Literal["feast"] = "feast",
        data: ServingData | None = None,
        feedback: FeedbackLog | None = None,
        pseudonym_key: bytes | None = None,
    ):
        s = settings or get_settings()
        self.settings = s
        self.lake = lake or get_lake(s.lake_uri)
        self.metrics = Metrics()
        self.champion = champion or self._follower(CHAMPION)
        self.challenger = challenger or self._follower(CHALLENGER)
        for f in (self.champion, self.challenger):
            if f._on_swap is None:
                f._on_swap = self._after_swap
        self._features_spec = features
        self.features: FeatureSource | None = None
        self._features_warned = float("-inf")
        self.data = data
        self._data_given = data is not None
        self.feedback = feedback or FeedbackLog(
            self.lake,
            s.serve_flush_rows,
            s.serve_flush_s,
            spool_dir=s.serve_spool_dir or s.serving_dir / "spool",
            spool_max_bytes=s.serve_spool_max_bytes,
            window=dt.timedelta(seconds=s.serve_feedback_window_s),
        )
        self._key = pseudonym_key
        self._reload_lock = threading.Lock()
        self._features_lock = threading.Lock()
        self._stopped = threading.Event()
        self.started = False

    def _follower(self, alias: str) -> ModelFollower:
        """A follower of ``alias`` that keeps its last-known version under FLYWHEEL_HOME."""
        s = self.settings
        return ModelFollower(
            s.registered_model,
            alias,
            s.mlflow_tracking_uri,
            s.serve_model_poll_s,
            cache=ModelCache(s.serving_dir / "models" / s.registered_model / alias),
            timeout_s=s.serve_registry_timeout_s,
        )

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Open the spool (replaying it), load the snapshot and the cached models, then follow.

        Neither MLflow nor the feature store is waited for: the last-known versions (local
        cache) serve at once and the aliases are resolved in the background
        (``serve_registry_timeout_s`` per lookup); the online store is connected in the
        background too (until then users are judged by validated data).
        """
        if self.settings.serve_simulated_clock and self.settings.profile == "production":
            raise ConfigError(
                "FLYWHEEL_SERVE_SIMULATED_CLOCK lets clients set event times: it is for "
                "simulations and refused in the production profile"
            )
        if self._key is None:
            self._key = pseudonym_key(self.settings)
        self.feedback.start()
        if self.data is None:
            self._load_data_or_retry()
        if self._features_spec == "feast":
            threading.Thread(target=self._init_features, name="features-init", daemon=True).start()
        else:
            self.features = self._features_spec
        for f in self._followed():
            f.start_from_cache()
            f.start()
        self._update_model_metrics()
        self.started = True

    def _followed(self) -> list[ModelFollower]:
        """The champion, and the challenger only while an A/B share is configured."""
        share = self.settings.ab_challenger_share
        return [self.champion, self.challenger] if share > 0 else [self.champion]

    def stop(self) -> None:
        """Stop following models and flush the feedback buffer (nothing acknowledged is lost)."""
        self._stopped.set()
        for f in (self.champion, self.challenger):
            f.stop()
        written = self.feedback.close()
        log.info("serving stopped; flushed %d buffered rows", written)
        self.started = False

    def _init_features(self) -> None:
        """Connect the online store (Feast); one attempt at a time, None when it is not there."""
        if not self._features_lock.acquire(blocking=False):
            return  # another thread is connecting
        try:
            self.features = feast_user_features(self.settings)
        except Exception as exc:  # the features area not set up: model-only serving
            log.warning(
                "no online feature store (%s): users are judged by validated data", redact(str(exc))
            )
            self.features = None
        finally:
            self._features_lock.release()

    def _load_data_or_retry(self, every_s: float = 10.0) -> None:
        """The lake snapshot now, or -- the lake unreachable -- from a background thread that
        retries every ``every_s`` seconds (meanwhile the snapshot is empty: no items to serve)."""
        try:
            self.reload_data()
            return
        except Exception as exc:
            log.error(
                "lake snapshot not loaded (%s); retrying every %g s", redact(str(exc)), every_s
            )

        def retry() -> None:
            while self.data is None and not self._stopped.wait(every_s):
                try:
                    self.reload_data()
                    log.info("lake snapshot loaded")
                except Exception as exc:
                    log.warning("lake snapshot still not loaded: %s", redact(str(exc)))

        threading.Thread(target=retry, name="snapshot-retry", daemon=True).start()

    def reload_data(self) -> None:
        with self._reload_lock:
            fresh = ServingData.from_lake(self.lake, self.settings.serve_history_days)
            if self.data is not None:
                fresh.carry_purchases_from(self.data)
            self.data = fresh

    def _after_swap(self, model: LoadedModel | None) -> None:
        if self.started:
            if not self._data_given:
                self.reload_data()
            if self.features is None and self._features_spec == "feast":
                self._init_features()  # features may have been applied since we started
        self._update_model_metrics()

    def _update_model_metrics(self) -> None:
        for f in (self.champion, self.challenger):
            v = f.version
            self.metrics.model_version.labels(f.alias).set(float(v) if v and v.isdigit() else 0)
            self.metrics.model_swaps.labels(f.alias).set(f.swaps)

    # --- requests -----------------------------------------------------------------------------
    def pseudonym(self, user_id: str) -> str:
        return pseudonymise(user_id, self._key)

    def _user_features(
        self, pseudo: str, data: ServingData
    ) -> tuple[bool, Mapping[str, Any] | None]:
        """(known, features): known from the feature store, else from validated users."""
        if self.features is not None:
            try:
                feats = self.features(pseudo)
                return feats is not None, feats
            except Exception as exc:
                now = time.monotonic()
                if now - self._features_warned > 30:  # one line per 30 s, not per request
                    self._features_warned = now
                    log.warning("online features unavailable (%s); serving without them", exc)
        return pseudo in data.user_country or pseudo in data.purchased, None

    def _pick_model(self, pseudo: str) -> tuple[LoadedModel | None, str]:
        """The model that serves this user, and its variant (the A/B split, see serving.ab)."""
        challenger = self.challenger.current
        if (
            challenger is not None
            and assign_variant(pseudo, self.settings.ab_challenger_share) == CHALLENGER
        ):
            return challenger, CHALLENGER
        return self.champion.current, CHAMPION

    def _model_items(
        self, model: LoadedModel, pseudo: str, k: int, purchased: set[str], data: ServingData
    ) -> tuple[list[str], list[float]]:
        """The model's (items, scores) for a known user; empty when it cannot serve them."""
        known, feats = self._user_features(pseudo, data)
        if not known:
            return [], []
        try:
            items, scores = model.recommend(pseudo, k, purchased, feats)
        except Exception:  # a broken model must not take serving down
            log.exception("model %s@%s failed; serving the fallback", model.version, model.alias)
            return [], []
        if data.catalog:
            # only catalogued, unpurchased items: their feedback must pass the gate
            kept = [
                (i, s)
                for i, s in zip(items, scores, strict=False)
                if i in data.catalog and i not in purchased
            ]
            items, scores = [i for i, _ in kept], [s for _, s in kept]
        return items, scores

    def recommend(self, user_id: str, k: int, at: dt.datetime | None = None) -> dict[str, Any]:
        data = self.data or ServingData()
        pseudo = self.pseudonym(user_id)
        purchased = data.purchased_by(pseudo)
        model, variant = self._pick_model(pseudo)
        items: list[str] = []
        scores: list[float] = []
        fallback = None
        if model is not None:
            items, scores = self._model_items(model, pseudo, k, purchased, data)
        if not items:
            items, scores, fallback = data.fallback(pseudo, k, purchased)
            variant = FALLBACK
            self.metrics.fallbacks.labels(fallback).inc()
        model_version = model.version if (model is not None and fallback is None) else "popularity"
        request_id = uuid.uuid4().hex
        items, scores = items[:k], scores[:k]
        self.feedback.record_impression(  # False (not logged) only while the spool is full
            Impression(
                request_id=request_id,
                user_id=user_id,
                item_ids=tuple(items),
                scores=tuple(scores),
                model_version=model_version,
                variant=variant,
                served_ts=at or dt.datetime.now(dt.UTC),
            )
        )
        self.metrics.recommendations.labels(variant).inc()
        return {
            "request_id": request_id,
            "user_id": user_id,
            "items": [
                {"item_id": i, "score": round(float(s), 6)}
                for i, s in zip(items, scores, strict=True)
            ],
            "model_version": model_version,
            "variant": variant,
            "fallback": fallback,
        }

    def client_clock(self, value: dt.datetime | None, name: str) -> dt.datetime | None:
        """A client-set time: only with the simulated clock on; UTC and not in the future."""
        if value is None:
            return None
        if not self.settings.serve_simulated_clock:
            raise ValueError(
                f"{name} sets a simulated time; this service takes the time of arrival "
                f"(FLYWHEEL_SERVE_SIMULATED_CLOCK is off)"
            )
        return _clock(value, name)

    def record_feedback(self, body: FeedbackIn) -> dict[str, Any]:
        """Accept one event (durable on return); ``duplicate`` when it was accepted before."""
        try:
            when = self.client_clock(body.event_ts, "event_ts")
        except ValueError as exc:
            raise FeedbackError(str(exc)) from None
        event = self.feedback.record_feedback(
            body.request_id, body.item_id, body.event_type, body.value, now=when
        )
        if event["duplicate"]:
            return {"status": "duplicate", "event_id": event["event_id"]}
        if body.event_type == "purchase" and self.data is not None:
            self.data.add_purchase(self.pseudonym(event["user_id"]), body.item_id)
        self.metrics.feedback.labels(body.event_type).inc()
        return {"status": "accepted", "event_id": event["event_id"]}

    def health(self) -> dict[str, Any]:
        """Answered from memory at once (MLflow, the lake and Feast are not asked); redacted."""
        data = self.data
        fb = self.feedback
        return {
            "status": "ok",
            "champion": self.champion.version,
            "challenger": self.challenger.version,
            "models": {
                f.alias: {
                    "version": f.version,
                    "source": f.current.source if f.current else None,
                    "registry_answered": f.last_resolved is not None,
                }
                for f in (self.champion, self.challenger)
            },
            "challenger_share": self.settings.ab_challenger_share,
            "features": self.features is not None,
            "catalog_items": len(data.catalog) if data else 0,
            "data_as_of": data.as_of.isoformat() if data and data.as_of else None,
            "buffered_rows": fb.buffered,
            "batches_written": fb.batches_written,
            "spool": {
                "bytes": fb.spooled_bytes,
                "max_bytes": fb.spool_max_bytes,
                "pending_batches": fb.pending_batches,
                "write_failures": fb.write_failures,
                "replayed_rows": fb.replayed_rows,
                "impressions_dropped": fb.impressions_dropped,
            },
            "model_errors": [
                redact(e) for e in (self.champion.last_error, self.challenger.last_error) if e
            ],
        }


def _clock(value: dt.datetime, name: str) -> dt.datetime:
    """A client-given time (simulated clock): UTC, and not in the future."""
    if value.tzinfo is None:
        raise ValueError(f"{name} has no time zone: give UTC, e.g. 2026-01-01T10:00:00Z")
    value = value.astimezone(dt.UTC)
    if value > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5):
        raise ValueError(f"{name} is in the future")
    return value


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"detail": message}, headers=headers)


def _validation_errors(errors: list[dict]) -> list[dict[str, Any]]:
    """Pydantic's errors without ``input`` and ``ctx``: which field and why, never what was sent."""
    return [
        {
            "loc": [str(part)[:64] for part in e.get("loc", ())],
            "msg": str(e.get("msg", ""))[:200],
            "type": str(e.get("type", "")),
        }
        for e in errors[:20]
    ]


def create_app(settings: Settings | None = None, *, service: Service | None = None) -> FastAPI:
    """The FastAPI app; the service starts (models, snapshot) in the lifespan and stops with it."""
    from fastapi import FastAPI, Path, Query
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    svc = service or Service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.start()
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(
        title=openapi.TITLE,
        description=openapi.DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # openapi.install_docs: Swagger UI without a CDN
        redoc_url=None,
    )
    openapi.install_docs(app)
    app.state.service = svc
    app.add_middleware(BodyLimitMiddleware, max_bytes=svc.settings.serve_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)  # outermost: counts 413s too

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _validation_errors(exc.errors())})

    @app.get("/recommendations/", include_in_schema=False)
    def recommendations_empty():
        return _error(400, "user_id is empty: use /recommendations/{user_id}")

    @app.get("/recommendations/{user_id}", responses=openapi.RECOMMENDATION_RESPONSES)
    def recommendations(
        user_id: str = Path(..., description="Raw user id"),
        k: int = Query(10, ge=1, le=K_MAX, description="How many items (1-100)"),
        at: dt.datetime | None = Query(
            None, description="Serving time for simulated clocks (ISO 8601); default: now"
        ),
    ):
        if not _USER_ID.match(user_id):
            return _error(
                400, "malformed user_id: 1-128 characters of letters, digits and _ . @ : -"
            )
        try:
            when = svc.client_clock(at, "at")
        except ValueError as exc:
            return _error(422, str(exc))
        return svc.recommend(user_id, k, when)

    @app.post("/feedback", status_code=202, responses=openapi.FEEDBACK_RESPONSES)
    def feedback(body: FeedbackIn):
        try:
            result = svc.record_feedback(body)
        except FeedbackError as exc:
            retry = {"Retry-After": "30"} if exc.status == 503 else None
            return _error(exc.status, str(exc), retry)
        if result["status"] == "duplicate":
            return JSONResponse(status_code=200, content=result)
        return result

    @app.get("/health", responses={200: {"model": openapi.Health, "description": "At once"}})
    async def health():
        return svc.health()

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        svc._update_model_metrics()
        svc.metrics.buffered.set(svc.feedback.buffered)
        svc.metrics.batches.set(svc.feedback.batches_written)
        svc.metrics.spooled.set(svc.feedback.spooled_bytes)
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory serving.app:app_factory``."""
    return create_app()
