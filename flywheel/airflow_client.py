"""Airflow's REST API v2 from a script: a token from ``/auth/token``, runs, asset events."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from flywheel.processes import ProcessGroup, ServiceError, http_ok, wait_until


class AirflowClient:
    """A small client of Airflow's public REST API v2 (token from the simple auth manager)."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self._token: str | None = None
        self._token_at = 0.0

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ServiceError(f"Airflow API {method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceError(f"Airflow API {method} {path}: {exc}") from None
        return json.loads(raw) if raw else None

    def token(self) -> str:
        # tokens last 24 h by default; refresh hourly anyway
        if self._token is None or time.monotonic() - self._token_at > 3600:
            body = {"username": self.username, "password": self.password}
            self._token = self._request("POST", "/auth/token", body, auth=False)["access_token"]
            self._token_at = time.monotonic()
        return self._token

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(
            {k: v for k, v in params.items() if v is not None}, doseq=True
        )
        return self._request("GET", f"/api/v2{path}" + (f"?{query}" if query else ""))

    def post(self, path: str, body: Any) -> Any:
        return self._request("POST", f"/api/v2{path}", body)

    def patch(self, path: str, body: Any) -> Any:
        return self._request("PATCH", f"/api/v2{path}", body)

    # --- conveniences -----------------------------------------------------------------------
    def healthy(self) -> bool:
        return http_ok(f"{self.base_url}/api/v2/monitor/health")

    def dag_ids(self) -> list[str]:
        return [d["dag_id"] for d in self.get("/dags", limit=100)["dags"]]

    def import_errors(self) -> list[dict]:
        return self.get("/importErrors", limit=100)["import_errors"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.patch(f"/dags/{dag_id}", {"is_paused": paused})

    def trigger(
        self, dag_id: str, logical_date: dt.datetime | None = None, conf: dict | None = None
    ) -> str:
        body: dict[str, Any] = {"logical_date": logical_date.isoformat() if logical_date else None}
        if conf:
            body["conf"] = conf
        return self.post(f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]

    def backfill(self, dag_id: str, start: dt.date, end: dt.date, max_active_runs: int = 1) -> dict:
        """Scheduler-driven catch-up: one run per interval whose logical date is in [start, end]."""
        return self.post(
            "/backfills",
            {
                "dag_id": dag_id,
                "from_date": dt.datetime.combine(start, dt.time(), dt.UTC).isoformat(),
                "to_date": dt.datetime.combine(end, dt.time(), dt.UTC).isoformat(),
                "max_active_runs": max_active_runs,
                "reprocess_behavior": "completed",
            },
        )

    def dag_runs(self, dag_id: str) -> list[dict]:
        runs: list[dict] = []
        while True:
            page = self.get(
                f"/dags/{dag_id}/dagRuns", limit=100, offset=len(runs), order_by="logical_date"
            )
            runs += page["dag_runs"]
            if len(runs) >= page["total_entries"] or not page["dag_runs"]:
                return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        run = urllib.parse.quote(run_id, safe="")
        return self.get(f"/dags/{dag_id}/dagRuns/{run}/taskInstances", limit=100)["task_instances"]

    def all_task_instances(self, dag_id: str = "~") -> list[dict]:
        """Task instances of every run (``~`` = every DAG)."""
        out: list[dict] = []
        while True:
            page = self.get(f"/dags/{dag_id}/dagRuns/~/taskInstances", limit=100, offset=len(out))
            out += page["task_instances"]
            if len(out) >= page["total_entries"] or not page["task_instances"]:
                return out

    def wait_run(
        self, dag_id: str, run_id: str, timeout: float, group: ProcessGroup | None = None
    ) -> str:
        run = urllib.parse.quote(run_id, safe="")

        def finished() -> str | None:
            state = self.get(f"/dags/{dag_id}/dagRuns/{run}")["state"]
            return state if state in ("success", "failed") else None

        return wait_until(finished, timeout, f"DAG run {dag_id}/{run_id}", group, interval=2)


FINISHED = ("success", "failed")
