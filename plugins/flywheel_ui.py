"""The Flywheel section of the Airflow 3 UI: drift, data quality, the model leaderboard and A/B.

A FastAPI app that Airflow's API server mounts under ``/flywheel`` (``fastapi_apps``), with a
"Flywheel" entry in the UI's navigation (``external_views``: the page opens inside Airflow).

Airflow does not protect plugin apps: every route here resolves the caller from Airflow's JWT
(``Authorization: Bearer …`` or the UI's ``_token`` cookie) with Airflow's own auth manager →
401 without a token, 403 with an invalid one or without access to the website view.

Pages:

* ``/flywheel/`` — one page, four sections:

  - drift by day: the decision as emitted (retrain triggered / suppressed and why / no drift),
    "nothing compared" for a day that could not be judged, drift share, drifted columns out
    of the compared ones, the day's volume against a reference day, the Evidently report;
  - data quality: failures first (a "failures only" filter), one distinct line per failed
    rule (rule, expectation, column, message) with its offending values and files, the files
    as they now lie in ``quarantine/`` (downloads), the quality report;
  - the leaderboard, newest version first (scores from different holdouts are not ranked):
    window, trigger in words, holdout, NDCG@10 beside the champion's on the same holdout and
    the strongest baseline's, the decision and its reason, links to the MLflow and Airflow
    runs, the other metrics folded away;
  - the A/B test (:func:`serving.ab.ab_report`): per variant the serving model versions,
    impressions, observed and configured traffic share, CTR with its Wilson 95 % interval.
* ``/flywheel/files/<key>`` — a report file from the lake. Only ``.html``/``.json`` under
  ``reports/``, ``quality/`` or ``quarantine/`` (and the data files ``.parquet``/``.csv`` under
  ``quarantine/``); ``..``, absolute paths and anything that resolves outside those folders are
  refused (404), so a link can never escape the reports. The pipeline's own pages (``reports/``,
  ``quality/``) open as pages; everything under ``quarantine/`` came from ``raw/`` (anyone's
  bytes, any name) and is only ever a download (``Content-Disposition: attachment``,
  ``application/octet-stream``; the page links it with ``download``). Every ``/files/`` answer carries ``Content-Security-Policy: sandbox`` (an opaque origin:
  no Airflow cookie, no same-origin requests; Evidently's drift reports, which draw with
  JavaScript, get ``sandbox allow-scripts``) and ``X-Content-Type-Options: nosniff``.
* ``/flywheel/api/{drift,quality,models,ab}`` — the same data as JSON (``ab?days=N``).

Run notes: a listener (:class:`RunNotes`, run by the scheduler when a DAG run finishes) writes
what the run's tasks said they did (their ``run_note`` XCom, e.g. "ingested 2026-02-04: …",
"rejected by the gate: …", "no data for D yet") into the run's note, shown on the run in the
Airflow UI. A note a person wrote is never replaced.

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

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response

from core.contract import IMPRESSIONS
from core.lake import QUALITY, QUARANTINE, RAW, REPORTS, LocalLake, get_lake
from core.names import (
    CHALLENGER,
    CHAMPION,
    RUN_NOTE,
)
from core.privacy import is_personal, pseudonymise
from core.settings import get_settings
from monitoring.decision import decision_label
from monitoring.monitor import REPORT_NAME, report_prefix, summaries
from serving.ab import ab_report
from training.registry import describe_trigger, list_versions
from validation.quarantine import full_result_key
from validation.results import iter_results

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates" / "flywheel"
URL_PREFIX = "/flywheel"
#: Lake folders whose report files the UI may serve, and the file kinds.
REPORT_ROOTS: tuple[str, ...] = tuple(f"{zone}/" for zone in (REPORTS, QUALITY, QUARANTINE))
REPORT_SUFFIXES: dict[str, str] = {".html": "text/html; charset=utf-8", ".json": "application/json"}
#: Under ``quarantine/`` the raw data files (the contract's formats) may be downloaded too.
PAYLOAD_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")
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
SAMPLE_ROWS = 3  # rows of a bad-rows file shown on the quality page
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


# --- run notes ---------------------------------------------------------------------------------

#: XCom key of a task's one-line outcome (pushed by the DAGs' tasks).


def run_note(dag_run, session) -> str | None:
    """The run's ``run_note`` XComs, joined in task order, or None."""
    from airflow.models.xcom import XComModel

    rows = session.scalars(
        XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, key=RUN_NOTE)
    ).all()
    texts = [str(XComModel.deserialize_value(r)) for r in sorted(rows, key=lambda r: r.task_id)]
    return "; ".join(texts)[:1000] or None


def set_run_note(dag_run) -> None:
    """Put the tasks' outcome into the run's note, unless a person wrote one.

    Runs inside the transaction that finished the run (the scheduler's, or ``dag.test``'s
    thread-local session) and leaves the commit to it: a second session would wait on the
    run's row that transaction holds.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    session = object_session(dag_run) or settings.Session()
    run = session.scalar(
        select(DagRun).where(DagRun.dag_id == dag_run.dag_id, DagRun.run_id == dag_run.run_id)
    )
    current = run.dag_run_note if run is not None else None
    if run is None or (current is not None and current.user_id is not None):
        return
    note = run_note(run, session)
    if note:
        run.note = note


class RunNotes:
    """Airflow listener: a finished run's note says what its tasks did (see module doc)."""

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str) -> None:
        set_run_note(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str) -> None:
        set_run_note(dag_run)


# --- data --------------------------------------------------------------------------------------


def _lake():
    return get_lake()


def drift_rows(lake) -> list[dict[str, Any]]:
    """Stored drift summaries, newest first, each with a link to its report when there is one."""
    rows = []
    for s in summaries(lake):
        day = dt.date.fromisoformat(s["date"])
        key = report_prefix(day) + REPORT_NAME
        rows.append(
            {
                **s,
                "decision": decision_label(s),  # from the emitted trigger, not drift_detected
                "report_key": key if lake.exists(key) else None,
            }
        )
    return rows


def quality_rows(lake) -> list[dict[str, Any]]:
    """Validation history (``validation.results``: the latest per day and table): failures
    first, then newest day first, tables in name order.

    Each row adds ``failures`` (one distinct line per failed rule, :func:`failure_lines`),
    ``verdict`` in words, and the files as they now lie in ``quarantine/`` (``quarantined``:
    the moved raw files, ``rows_file``: the rows split off a published table) as downloads.
    """
    rows = []
    for key, r in iter_results(lake):
        moved = [_payload_key(lake, k) for k in r.get("quarantined") or []]
        full = full_result_key(str(r["table"]), dt.date.fromisoformat(str(r["date"])[:10]))
        rows.append(
            {
                **r,
                "result_key": key,
                "report_key": _report_key(lake, r.get("report_uri")),
                "verdict": _verdict(r),
                "failures": failure_lines(r.get("failed_expectations") or []),
                "quarantined_files": [k for k in moved if k],
                "rows_file": _payload_key(lake, r.get("quarantined_rows")),
                "sample_rows": sample_rows(lake, _payload_key(lake, r.get("quarantined_rows"))),
                "full_result_key": full if lake.exists(full) else None,
                "data_docs_key": _data_docs_key(lake, r.get("data_docs_key")),
            }
        )
    rows.sort(key=lambda r: str(r["date"]), reverse=True)  # stable: keeps table order
    return sorted(rows, key=lambda r: bool(r.get("success")))  # failures first, still by day


def sample_rows(lake, key: str | None, n: int = SAMPLE_ROWS) -> list[dict[str, str]]:
    """The first ``n`` rows set aside from a published table (``quarantine/<table>_rows/``),
    with their ``reason``; personal columns shown as pseudonyms (as ``validated/`` names the
    user), or ``(hidden)`` where this process has no pseudonym key."""
    if not key or not key.endswith(".parquet"):
        return []
    try:
        rows = lake.read_parquet(key).slice(0, n).to_pylist()
    except Exception as exc:  # a page must render whatever lies in quarantine
        log.warning("cannot read sample rows of %s: %s", key, exc)
        return []

    def shown(column: str, value: Any) -> str:
        if value is None or not is_personal(column):
            return "" if value is None else str(value)
        try:
            return pseudonymise(str(value))
        except Exception:  # no key here (e.g. production without FLYWHEEL_PSEUDONYM_KEY)
            return "(hidden)"

    return [{c: shown(c, v) for c, v in row.items()} for row in rows]


def _data_docs_key(lake, key: str | None) -> str | None:
    """The GX Data Docs page of the result (``validation.docs``), when it may be served."""
    safe = safe_report_key(key) if key else None
    return safe if safe and safe.startswith(f"{QUALITY}/") and lake.exists(safe) else None


def _verdict(r: dict[str, Any]) -> str:
    """A quality result in words: passed; failed and quarantined; or published without the
    files or rows that failed (the rest of the day passed)."""
    if r.get("success"):
        return "Passed"
    if r.get("withdrawn"):
        return "Failed — withdrawn, quarantined"
    if not r.get("published"):
        return "Failed — quarantined"
    parts = [
        f"{n} {what}{'s' if n != 1 else ''}"
        for n, what in (
            (len(r.get("quarantined") or []), "quarantined file"),
            (r.get("rows_quarantined") or 0, "bad row"),
        )
        if n
    ]
    return "Published without " + " and ".join(parts) if parts else "Published, checks failed"


def failure_lines(failed: list[Any]) -> list[dict[str, Any]]:
    """One entry per failed rule, each with a ``line`` no other rule prints: the rule id, the
    expectation, the column and the message; the same rule failing in several files is one
    entry with every file. Offending values (``examples``) are kept for the page."""
    out: dict[str, dict[str, Any]] = {}
    for f in failed:
        f = f if isinstance(f, dict) else {"expectation": str(f)}
        rule, exp = f.get("rule") or "", f.get("expectation") or ""
        where = f"column {f['column']}" if f.get("column") else "table"
        head = f"{rule} — {exp}" if rule and rule != exp else (rule or exp or "check")
        if f.get("title"):  # the expectation with its column and distinguishing settings
            head, where = f"{rule} — {f['title']}" if rule else f["title"], ""
        line = f"{head}{f' on {where}' if where else ''}" + (
            f": {f['message']}" if f.get("message") else ""
        )
        entry = out.setdefault(
            line, {**f, "line": line, "examples": list(f.get("examples") or []), "files": []}
        )
        entry["files"] += [x for x in f.get("files") or [] if x not in entry["files"]]
    return list(out.values())


def _lake_key(lake, ref: str | None) -> str | None:
    """The safe lake key of ``ref`` (a key, or a URI inside this lake), else None."""
    if not ref:
        return None
    base = lake.url("").rstrip("/") + "/"
    if ref.startswith(base):
        key = ref[len(base) :]
        key = unquote(key) if base.startswith("file:") else key
    elif "://" not in ref:
        key = ref
    else:
        return None
    return safe_report_key(key)


def _payload_key(lake, ref: str | None) -> str | None:
    """The lake key of a quarantined file (a key or a lake URI), when it lies in
    ``quarantine/`` and may be served as a download; else None (no link)."""
    safe = _lake_key(lake, ref)
    return safe if safe is not None and safe.startswith(PAYLOAD_ROOT) else None


def _report_key(lake, uri: str | None) -> str | None:
    """The lake key of a report URI, when it lies in the lake's report folders (else no link)."""
    safe = _lake_key(lake, uri)
    return None if safe is None or safe.startswith(PAYLOAD_ROOT) else safe  # never a payload


#: Metrics a leaderboard row shows in its columns; the others are folded away.
HEADLINE_METRICS = (
    "holdout_ndcg_at_10",
    "holdout_ndcg_at_10_lo",
    "holdout_ndcg_at_10_hi",
    "holdout_users",
    "champion_ndcg_at_10",
    "strongest_baseline_ndcg_at_10",
)


def model_rows(mlflow_ui: str | None = None, airflow_ui: str = "") -> list[dict[str, Any]]:
    """Registered versions (``training.registry.list_versions``), newest first: each version's
    scores were taken on its own holdout, so they are compared within a row (candidate, the
    champion of the day on the same holdout, the strongest baseline), never sorted across rows.

    ``mlflow_ui``/``airflow_ui``: where a browser reaches the MLflow and Airflow UIs (links).
    """
    rows = []
    for v in list_versions():
        tags, metrics, created = v.get("tags", {}), v.get("metrics", {}), v.get("created")
        run_id = v.get("run_id")
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
                "window_start": tags.get("data_window_start", "?")[:10],
                "window_end": tags.get("data_window_end", "?")[:10],
                "trigger": trigger_words(tags.get("trigger", "")),
                "trigger_tag": tags.get("trigger", ""),
                "holdout": _holdout_days(tags),
                "holdout_users": metrics.get("holdout_users"),
                "ndcg": metrics.get("holdout_ndcg_at_10"),
                "ndcg_lo": metrics.get("holdout_ndcg_at_10_lo"),
                "ndcg_hi": metrics.get("holdout_ndcg_at_10_hi"),
                "champion_ndcg": metrics.get("champion_ndcg_at_10"),
                "champion_note": tags.get("champion_evaluation", ""),
                "baseline": tags.get("strongest_baseline", ""),
                "baseline_ndcg": metrics.get("strongest_baseline_ndcg_at_10"),
                "decision": tags.get("promotion_decision", ""),
                "reason": tags.get("promotion_reason", ""),
                "other_metrics": {k: m for k, m in metrics.items() if k not in HEADLINE_METRICS},
                "mlflow_url": f"{mlflow_ui}/#/runs/{run_id}" if mlflow_ui and run_id else None,
                "airflow_url": _airflow_run_url(airflow_ui, tags),
            }
        )
    rows.sort(key=lambda r: -int(r["version"]))
    return rows


def trigger_words(tag: str) -> str:
    """The ``trigger`` tag in words: "manual", "drift on 01-16", "new features 01-20"."""
    return describe_trigger(tag, short=True) if (tag or "").strip() else "–"


def _holdout_days(tags: dict[str, str]) -> str:
    """The holdout's days (``holdout_start`` … the window's end), as far as they are tagged."""
    start, end = tags.get("holdout_start", "")[:10], tags.get("data_window_end", "")[:10]
    return (start if start == end else f"{start} … {end}") if start else "–"


def _airflow_run_url(airflow_ui: str, tags: dict[str, str]) -> str | None:
    """The Airflow UI page of the DAG run that trained the version (``airflow_dag_run`` tag; the
    DAG id from ``run_key`` = ``<dag_id>/<run_id>``), or None for a run outside Airflow."""
    run_id, run_key = tags.get("airflow_dag_run"), tags.get("run_key", "")
    if not run_id or "/" not in run_key:
        return None
    dag_id = run_key.split("/", 1)[0]
    return f"{airflow_ui}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def drift_view(s: dict[str, Any]) -> dict[str, Any]:
    """A drift summary as the page shows it: the decision in words (the summary's ``decision``
    label when it has one) and its tone, whether anything was compared at all, the drifted
    columns as a share of the compared ones, and the day's volume against a reference day."""
    compared = s.get("drift_share") is not None
    label = str(s.get("decision") or "")
    held = any(w in label for w in ("suppressed", "pending"))
    tone = "muted" if not compared else "warn" if held else "ok" if label == "no drift" else "bad"
    cols = s.get("columns") or {}
    drifted = s.get("drifted_columns") or []
    ref = s.get("reference_window") or []
    volume = None
    if len(ref) == 2 and s.get("reference_rows"):
        ref_days = (dt.date.fromisoformat(ref[1][:10]) - dt.date.fromisoformat(ref[0][:10])).days
        per_day = s["reference_rows"] / max(ref_days + 1, 1)
        volume = (s.get("current_rows") or 0) / per_day if per_day else None
    return {
        **s,
        "compared": compared,
        # e.g. "nothing compared: 3 users active, at least 20 needed" (monitoring.decision)
        "label": label if compared or label.startswith("nothing compared") else "nothing compared",
        "tone": tone,
        "drifted_of": f"{len(drifted)} of {len(cols)}" if cols else str(len(drifted) or "–"),
        "reference": f"{ref[0][:10]} … {ref[1][:10]}" if len(ref) == 2 else "–",
        "volume": volume,
    }


#: Days of impressions the A/B section shows by default (ending at the newest served day).
AB_DAYS = 14


def ab_rows(lake, models: list[dict[str, Any]], share: float, days: int = AB_DAYS) -> dict:
    """The A/B test of the last ``days`` served days (``serving.ab.ab_report``): per variant the
    impressions, their observed share, CTR with its Wilson 95 % interval, the model versions that
    served it, and the version each arm's alias points at now; the configured split beside it."""
    served = lake.partitions(RAW, IMPRESSIONS.name)
    end = max(served, default=None)
    start = min(d for d in served if d > end - dt.timedelta(days=days)) if end else None
    report = ab_report(lake, start, end) if end else {"start": None, "end": None, "variants": []}
    total = sum(r["impressions"] for r in report["variants"])
    alias_of = {a: m["version"] for m in models for a in m.get("aliases", [])}
    testing = CHALLENGER in alias_of and share > 0
    configured = {CHAMPION: 1.0 - share if testing else 1.0, CHALLENGER: share if testing else 0.0}
    variants = [
        {
            **r,
            "observed_share": r["impressions"] / total if total else None,
            "configured_share": configured.get(r["variant"]),
            "alias_version": alias_of.get(r["variant"]),
        }
        for r in report["variants"]
    ]
    return {**report, "variants": variants, "challenger_share": share, "running": testing}


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
    suffix = posixpath.splitext(norm)[1]
    payload = norm.startswith(PAYLOAD_ROOT) and suffix in PAYLOAD_SUFFIXES
    if suffix not in REPORT_SUFFIXES and not payload:
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


def _ui_links(request: Request) -> tuple[str, str]:
    """(MLflow UI, Airflow UI) as the browser reaches them: MLflow on its port of the host the
    page was asked from (``settings.mlflow_port``), Airflow at the root this app is mounted in."""
    base = request.scope.get("root_path", URL_PREFIX).rstrip("/")
    airflow = base[: -len(URL_PREFIX)] if base.endswith(URL_PREFIX) else ""
    host = request.url.hostname or "127.0.0.1"
    return f"{request.url.scheme}://{host}:{get_settings().mlflow_port}", airflow


def _render(name: str, **ctx: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * float(v):.0f}%"
    env.filters["num"] = lambda v: "–" if v is None else f"{float(v):.4f}"
    env.filters["pct1"] = lambda v: "–" if v is None else f"{100 * float(v):.1f}%"
    env.filters["signed"] = lambda v: "–" if v is None else f"{float(v):+.4f}"
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
        lake, settings = _lake(), get_settings()
        base = request.scope.get("root_path", URL_PREFIX).rstrip("/")
        models = model_rows(*_ui_links(request))
        return HTMLResponse(
            _render(
                "index.html",
                base=base,
                user=getattr(user, "get_name", lambda: "")(),
                drift=[drift_view(s) for s in drift_rows(lake)],
                quality=quality_rows(lake),
                models=models,
                ab=ab_rows(lake, models, settings.ab_challenger_share),
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
    def api_models(request: Request) -> JSONResponse:
        return JSONResponse(model_rows(*_ui_links(request)))

    @app.get("/api/ab")
    def api_ab(days: int = Query(AB_DAYS, ge=1, le=366)) -> JSONResponse:
        models = model_rows()
        return JSONResponse(ab_rows(_lake(), models, get_settings().ab_challenger_share, days))

    return app


flywheel_app = create_app()


class FlywheelPlugin(AirflowPlugin):
    """Registers the app and a "Flywheel" entry in the Airflow UI's navigation."""

    name = "flywheel"
    listeners = [RunNotes()]
    fastapi_apps = [{"app": flywheel_app, "url_prefix": URL_PREFIX, "name": "Flywheel"}]
    external_views = [
        {
            "name": "Flywheel",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "flywheel",
        }
    ]
