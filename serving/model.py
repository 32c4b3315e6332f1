"""Champion/challenger models, followed in MLflow and swapped in the background.

A :class:`ModelFollower` polls one alias of the registered model (``champion`` or
``challenger``) every ``poll_s`` seconds. When the alias points to a new version it loads that
version completely (``mlflow.pyfunc.load_model``) in its own thread and only then replaces its
``current`` reference -- one attribute assignment, atomic under the GIL. A request reads
``current`` once and keeps that :class:`LoadedModel` to the end, so requests in flight during a
swap finish on the old version and the next ones use the new version: nothing is dropped.

A version that fails to load is logged and counted, and the old version keeps serving.

MLflow is not needed to start: with a :class:`serving.cache.ModelCache`, every version is loaded
from a local copy that is kept as the alias's last-known version, :meth:`ModelFollower.start_from_cache`
serves that copy at once, and the alias is resolved in the background, each lookup given
``timeout_s`` (a registry that hangs is a failed lookup, not a blocked thread). Errors are kept
and logged with the credentials of URIs redacted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.names import CHAMPION
from serving.cache import ModelCache
from serving.redact import redact
from training.registry import model_absent
from training.request import one_row_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model version; ``predict`` follows the recommender pyfunc contract."""

    alias: str
    version: str
    pyfunc: Any
    loaded_at: float = field(default_factory=time.time)
    source: str = "registry"  # or "cache": the last-known copy loaded at start

    def recommend(
        self,
        user_id: str,
        k: int,
        exclude: Iterable[str] = (),
        features: Mapping[str, Any] | None = None,
        recent: Iterable[str] | None = None,
    ) -> tuple[list[str], list[float]]:
        """Top-``k`` (item ids, scores) for one pseudonymised user; empty if the model has none.

        ``recent``: items the user chose since the model's cutoff, oldest first (the model adds
        them to the history it stored for the user; a new user is personalised by them alone).
        """
        out = self.pyfunc.predict(one_row_request(user_id, k, exclude, features, recent))
        if len(out) == 0:
            return [], []
        first = out.iloc[0]
        items = first["item_ids"]
        scores = first["scores"]
        if items is None or len(items) == 0:
            return [], []
        return [str(i) for i in items], [float(s) for s in scores]


def load_version(name: str, version: str, tracking_uri: str | None = None) -> Any:
    """Load ``models:/<name>/<version>`` as a pyfunc (what serving and smoke tests call)."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}")


def resolve_alias(client: Any, name: str, alias: str) -> str | None:
    """The version an alias points to, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        if model_absent(client, name, exc):  # MLflow auth: 403 for a model not registered yet
            return None
        raise


class ModelFollower:
    """Follows one alias; ``current`` is the loaded model or None (no such alias yet).

    ``loader(version)`` returns a pyfunc (default: :func:`load_version`); ``on_swap(model)`` is
    called in the follower thread after each swap (serving reloads its lake snapshot there).
    ``keep_when_missing``: if the alias disappears, keep serving the last version (champion) or
    stop (challenger: the A/B test ends).
    """

    def __init__(
        self,
        name: str,
        alias: str,
        tracking_uri: str,
        poll_s: float = 30.0,
        *,
        keep_when_missing: bool | None = None,
        loader: Callable[[str], Any] | None = None,
        on_swap: Callable[[LoadedModel | None], None] | None = None,
        cache: ModelCache | None = None,
        timeout_s: float = 10.0,
    ):
        self.name = name
        self.alias = alias
        self.tracking_uri = tracking_uri
        self.poll_s = poll_s
        self.keep_when_missing = (
            alias == CHAMPION if keep_when_missing is None else keep_when_missing
        )
        self.cache = cache
        self.timeout_s = timeout_s
        if loader is None and cache is not None:
            loader = lambda v: cache.fetch(name, v, tracking_uri)  # noqa: E731
        self._loader = loader or (lambda v: load_version(name, v, tracking_uri))
        self._lookup: threading.Thread | None = None  # an alias lookup still waiting on MLflow
        self.last_resolved: float | None = None  # time.time() of the last answer from MLflow
        self._on_swap = on_swap
        self.current: LoadedModel | None = None
        self.swaps = 0
        self.failures = 0
        self.last_error: str | None = None
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    @property
    def version(self) -> str | None:
        m = self.current
        return m.version if m else None

    def _mlflow_client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def start_from_cache(self) -> bool:
        """Serve the cached last-known version until the registry answers; True if loaded."""
        if self.cache is None or self.current is not None:
            return False
        found = self.cache.load()
        if found is None:
            return False
        version, pyfunc = found
        log.info("%s@%s: serving cached version %s", self.name, self.alias, version)
        self._swap(LoadedModel(self.alias, version, pyfunc, source="cache"))
        return True

    def _resolve(self) -> str | None:
        """:func:`resolve_alias` in a helper thread, given :attr:`timeout_s` to answer."""
        if self._lookup is not None and self._lookup.is_alive():
            raise TimeoutError("the previous lookup has not returned yet")
        box: dict[str, Any] = {}

        def lookup() -> None:
            try:
                box["version"] = resolve_alias(self._mlflow_client(), self.name, self.alias)
            except Exception as exc:
                box["error"] = exc

        self._lookup = threading.Thread(target=lookup, name=f"lookup-{self.alias}", daemon=True)
        self._lookup.start()
        self._lookup.join(self.timeout_s)
        if self._lookup.is_alive():
            raise TimeoutError(f"no answer within {self.timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["version"]

    def check(self) -> bool:
        """Resolve the alias once; load and swap if it moved. True when a swap happened."""
        with self._check_lock:
            try:
                version = self._resolve()
            except Exception as exc:  # registry unreachable: keep serving what we have
                self._fail(f"cannot resolve {self.name}@{self.alias} at {self.tracking_uri}: {exc}")
                return False
            self.last_resolved = time.time()
            current = self.current
            if version is None:
                if current is not None and not self.keep_when_missing:
                    log.info("%s@%s removed: no longer serving it", self.name, self.alias)
                    if self.cache is not None:
                        self.cache.forget()
                    self._swap(None)
                    return True
                return False
            if current is not None and current.version == version:
                return False
            try:
                pyfunc = self._loader(version)
            except Exception as exc:
                self._fail(f"cannot load {self.name} version {version} (@{self.alias}): {exc}")
                return False
            log.info("%s@%s -> version %s", self.name, self.alias, version)
            self._swap(LoadedModel(alias=self.alias, version=version, pyfunc=pyfunc))
            return True

    def _swap(self, model: LoadedModel | None) -> None:
        self.current = model  # the atomic swap: readers hold their own reference
        self.swaps += 1
        self.last_error = None
        if self._on_swap is not None:
            try:
                self._on_swap(model)
            except Exception:
                log.exception("after swapping %s@%s", self.name, self.alias)

    def _fail(self, message: str) -> None:
        message = redact(message)
        self.failures += 1
        if message != self.last_error:
            log.warning(message)
        self.last_error = message

    def _run(self) -> None:
        self.check()  # at once: the cached version serves meanwhile
        while not self._stop.wait(self.poll_s):
            self.check()

    def start(self) -> None:
        """Check now and then every ``poll_s`` seconds, in a daemon thread."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"follow-{self.alias}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
