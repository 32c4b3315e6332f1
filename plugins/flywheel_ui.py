"""The Flywheel section of the Airflow 3 UI: drift reports, data quality and the model leaderboard.

A FastAPI app that Airflow's API server mounts under ``/flywheel`` (``fastapi_apps``), with a
"Flywheel" entry in the UI's navigation (``external_views``: the page opens inside Airflow).

Airflow does not protect plugin apps: every route here resolves the caller from Airflow's JWT
(``Authorization: Bearer …`` or the UI's ``_token`` cookie) with Airflow's own auth manager →
401 without a token, 403 with an invalid one or without access to the website view.

Pages:

* ``/flywheel/`` — drift reports by day (share, decision, link to the Evidently report), quality
  results by day (pass/fail, failed expectations, link to the report) and the leaderboard.
* ``/flywheel/files/<key>`` — a report file from the lake. Only ``.html``/``.json`` under
  ``reports/``, ``quality/`` or ``quarantine/``; ``..``, absolute paths and anything that resolves
  outside those folders are refused (404), so a link can never escape the reports. The
  pipeline's own pages (``reports/``, ``quality/``) open as pages; everything under
  ``quarantine/`` came from ``raw/`` (anyone's bytes, any name) and is only ever a download
  (``Content-Disposition: attachment``, ``application/octet-stream``), never linked from the
  page. Every ``/files/`` answer carries ``Content-Security-Policy: sandbox`` (an opaque origin:
  no Airflow cookie, no same-origin requests; Evidently's drift reports, which draw with
  JavaScript, get ``sandbox allow-scripts``) and ``X-Content-Type-Options: nosniff``.
* ``/flywheel/api/{drift,quality,models}`` — the same data as JSON.

One file on purpose: Airflow imports every ``.py`` under ``plugins/`` as a top-level module named
after its stem; templates live in ``plugins/templates/flywheel/``.
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from core.lake import QUALITY, QUARANTINE, REPORTS, LocalLake, get_lake
from core.names import CHAMPION
from monitoring.monitor import REPORT_NAME, report_prefix, summaries
from training.registry import list_versions
from validation.results import iter_results

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates" / "flywheel"
URL_PREFIX = "/flywheel"
#: Lake folders whose report files the UI may serve, and the file kinds.
REPORT_ROOTS: tuple[str, ...] = tuple(f"{zone}/" for zone in (REPORTS, QUALITY, QUARANTINE))
REPORT_SUFFIXES: dict[str, str] = {".html": "text/html; charset=utf-8", ".json": "application/json"}
#: Under this folder every file came from raw/ (quarantined payloads): served only as a download.
PAYLOAD_ROOT = f"{QUARANTINE}/"
#: Drift reports (Evidently) draw with JavaScript: there scripts may run, still sandboxed.
SCRIPTED_ROOT = f"{REPORTS}/"
FILES_PATH = "/files/"
#: Headers on every ``/files/`` answer (``Content-Security-Policy`` unless the route set one).
FILE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": "sandbox",
    "X-Content-Type-Options": "nosniff",
}
COOKIE_NAME = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN


# --- authentication ----------------------------------------------------------------------------


async def require_user(request: Request) -> Any:
    """The Airflow user behind the request's JWT; 401 without one, 403 if invalid or not allowed."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    token = credentials.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE_NAME)
    user = await resolve_user_from_token(token)  # 401 missing/expired, 403 invalid
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: no access to the Airflow UI")
    return user


# --- data --------------------------------------------------------------------------------------


def _lake():
    return get_lake()


def drift_rows(lake) -> list[dict[str, Any]]:
    """Stored drift summaries, newest first, each with a link to its report when there is one."""
    rows = []
    for s in summaries(lake):
        day = dt.date.fromisoformat(s["date"])
        key = report_prefix(day) + REPORT_NAME
        rows.append({**s, "report_key": key if lake.exists(key) else None})
    return rows


def quality_rows(lake) -> list[dict[str, Any]]:
    """Validation history (``validation.results``: the latest per day and table), newest day
    first, tables in name order."""
    rows = [
        {**r, "result_key": key, "report_key": _report_key(lake, r.get("report_uri"))}
        for key, r in iter_results(lake)
    ]
    return sorted(rows, key=lambda r: str(r["date"]), reverse=True)  # stable: keeps table order


def _report_key(lake, uri: str | None) -> str | None:
    """The lake key of a report URI, when it lies in the lake's report folders (else no link)."""
    if not uri:
        return None
    base = lake.url("").rstrip("/") + "/"
    if uri.startswith(base):
        key = uri[len(base) :]
        key = unquote(key) if base.startswith("file:") else key
    elif "://" not in uri:
        key = uri
    else:
        return None
    safe = safe_report_key(key)
    return None if safe is None or safe.startswith(PAYLOAD_ROOT) else safe  # never a payload


def model_rows() -> list[dict[str, Any]]:
    """Registered versions (``training.registry.list_versions``), best NDCG@10 first."""
    rows = []
    for v in list_versions():
        tags, created = v.get("tags", {}), v.get("created")
        rows.append(
            {
                **v,
                "champion": CHAMPION in v.get("aliases", []),
                "created": dt.datetime.fromtimestamp(created / 1000, dt.UTC).strftime(
                    "%Y-%m-%d %H:%M"
                )
                if created
                else "",
                "window": f"{tags.get('data_window_start', '?')[:10]} … "
                f"{tags.get('data_window_end', '?')[:10]}",
                "trigger": tags.get("trigger", ""),
                "decision": tags.get("promotion_decision", ""),
            }
        )
    rows.sort(
        key=lambda r: (-r["metrics"].get("holdout_ndcg_at_10", float("-inf")), -int(r["version"]))
    )
    return rows


# --- safe report paths -------------------------------------------------------------------------


def safe_report_key(key: str) -> str | None:
    """``key`` normalised if it names a report file inside the report folders, else None."""
    if not key or "\\" in key or "\x00" in key or key.startswith("/"):
        return None
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts) or any(p.startswith((".", "_")) for p in parts):
        return None
    norm = posixpath.normpath(key)
    if norm != key or not norm.startswith(REPORT_ROOTS):
        return None
    if posixpath.splitext(norm)[1] not in REPORT_SUFFIXES:
        return None
    return norm


def read_report(lake, key: str) -> bytes:
    """A report file's bytes; 404 unless it is a report inside the report folders."""
    safe = safe_report_key(key)
    if safe is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
    if isinstance(lake, LocalLake):  # belt and braces: symlinks must not lead out either
        root = lake.path("").resolve()
        target = lake.path(safe).resolve()
        if not any(target.is_relative_to(root / r) for r in REPORT_ROOTS):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
    if not lake.exists(safe):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
    return lake.read_bytes(safe)


def file_response(key: str, data: bytes) -> Response:
    """A served file: a quarantined payload as a download, a pipeline report as itself."""
    name = posixpath.basename(key)
    if key.startswith(PAYLOAD_ROOT):
        plain = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
        disposition = f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"
        return Response(
            content=data,
            media_type="application/octet-stream",
            headers={"Content-Disposition": disposition},
        )
    media = REPORT_SUFFIXES[posixpath.splitext(key)[1]]
    csp = "sandbox allow-scripts" if key.startswith(SCRIPTED_ROOT) else "sandbox"
    return Response(content=data, media_type=media, headers={"Content-Security-Policy": csp})


def _is_files_request(scope: dict[str, Any]) -> bool:
    """Whether the request is for ``/files/…`` (its path with or without the mount prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.startswith(FILES_PATH)


# --- the app -----------------------------------------------------------------------------------


def _render(name: str, **ctx: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.0f}%"
    env.filters["num"] = lambda v: "–" if v is None else f"{float(v):.4f}"
    return env.get_template(name).render(**ctx)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Flywheel",
        description="Drift reports, data quality and the model leaderboard (Airflow plugin).",
        dependencies=[Depends(require_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, user: Any = Depends(require_user)) -> HTMLResponse:
        lake = _lake()
        base = request.scope.get("root_path", URL_PREFIX).rstrip("/")
        return HTMLResponse(
            _render(
                "index.html",
                base=base,
                user=getattr(user, "get_name", lambda: "")(),
                drift=drift_rows(lake),
                quality=quality_rows(lake),
                models=model_rows(),
                lake=lake.url(""),
            )
        )

    @app.middleware("http")
    async def file_headers(request: Request, call_next):
        response = await call_next(request)
        if _is_files_request(request.scope):  # every answer: the file, 404, 401, 403
            for name, value in FILE_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @app.get(FILES_PATH + "{key:path}")
    def report_file(key: str) -> Response:
        return file_response(key, read_report(_lake(), key))

    @app.get("/api/drift")
    def api_drift() -> JSONResponse:
        return JSONResponse(drift_rows(_lake()))

    @app.get("/api/quality")
    def api_quality() -> JSONResponse:
        return JSONResponse(quality_rows(_lake()))

    @app.get("/api/models")
    def api_models() -> JSONResponse:
        return JSONResponse(model_rows())

    return app


flywheel_app = create_app()


class FlywheelPlugin(AirflowPlugin):
    """Registers the app and a "Flywheel" entry in the Airflow UI's navigation."""

    name = "flywheel"
    fastapi_apps = [{"app": flywheel_app, "url_prefix": URL_PREFIX, "name": "Flywheel"}]
    external_views = [
        {
            "name": "Flywheel",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "flywheel",
        }
    ]
