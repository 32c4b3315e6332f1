"""The native twin: docker-compose.yaml's topology started as processes on one machine.

Docker does not run everywhere (CI, this machine), so the production topology declared in
``deploy/topology.py`` is also started natively:

* Postgres and Redis: the machine's servers; the twin creates its own databases
  (``flywheel_twin_<rand>``, ``…_mlflow``, ``…_feast``) and uses its own Redis DB indexes, and drops /
  flushes them on stop;
* MinIO: moto's S3 server on a free port (bucket created like ``minio-init`` does);
* MLflow: ``mlflow server`` on the Postgres database, artifacts proxied to the S3 bucket;
* Airflow: ``airflow db migrate`` + connections + pool + admin password (``airflow-init``), then
  api-server, scheduler, dag-processor, triggerer and one Celery worker per queue
  (``default``, ``gpu``) with distinct hostnames, CeleryExecutor on Redis, Postgres metadata;
* Feast: the production profile (Redis online store, SQL registry on Postgres).

Every service gets the environment rendered from the same templates as the compose file
(:func:`deploy.topology.render_env`), so the twin and compose cannot drift apart silently.

Shared with :mod:`flywheel.demo`: :class:`ProcessGroup` (background processes with logs and
clean shutdown), :class:`AirflowClient` (Airflow's REST API v2 with a token from ``/auth/token``),
:func:`free_port`, :func:`wait_until`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from flywheel.errors import FlywheelError

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILE = REPO_ROOT / "deploy" / "topology.py"


class TwinError(FlywheelError):
    """A service of the twin (or the demo) did not start, died, or a run did not finish."""


# --- the shared topology ------------------------------------------------------------------------
def load_topology() -> ModuleType:
    """``deploy/topology.py`` as a module (importable from an installed package or a checkout)."""
    name = "deploy.topology"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOPOLOGY_FILE)
    if spec is None or spec.loader is None:
        raise TwinError(f"topology config {TOPOLOGY_FILE} is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def worker_hostname_default() -> str:
    """``core.hostname_callable`` of the twin's ``default`` worker (task instances record it)."""
    return f"{socket.gethostname()}-worker-default"


def worker_hostname_gpu() -> str:
    """``core.hostname_callable`` of the twin's ``gpu`` worker."""
    return f"{socket.gethostname()}-worker-gpu"


# --- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    group: ProcessGroup | None = None,
    interval: float = 1.0,
) -> Any:
    """Poll ``predicate`` until truthy; raise :class:`TwinError` naming ``what`` on timeout.

    With ``group``, a process of the group that died stops the wait at once (its log tail is in
    the error).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if group is not None:
            group.check_alive()
        if time.monotonic() > deadline:
            raise TwinError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen


class ProcessGroup:
    """Background processes, each in its own session with its log under ``log_dir``.

    ``stop()`` (also on ``with`` exit) sends SIGTERM to each process group in reverse start
    order, waits, then SIGKILLs what is left -- nothing outlives the group.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> Proc:
        log = self.log_dir / f"{name}.log"
        fh = log.open("ab")
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=str(cwd or REPO_ROOT),
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        fh.close()
        proc = Proc(name, argv, log, popen)
        self.procs.append(proc)
        return proc

    def tail(self, name: str, lines: int = 15) -> str:
        for p in self.procs:
            if p.name == name and p.log.exists():
                return "\n".join(p.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        for p in self.procs:
            code = p.popen.poll()
            if code is not None:
                raise TwinError(
                    f"{p.name} exited with code {code} (log {p.log}):\n{self.tail(p.name)}"
                )

    def stop(self, timeout: float = 30.0) -> None:
        # a Ctrl-C while stopping must not leave processes behind: finish the cleanup first
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            self._stop(timeout)
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)

    def _stop(self, timeout: float) -> None:
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in reversed(self.procs):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                p.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                pass
            # children of a process that exited (task runners, gunicorn workers) go too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def venv_bin(name: str) -> str:
    """An executable of this interpreter's environment (``airflow``, ``mlflow``, ``moto_server``)."""
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


# --- Airflow's REST API ---------------------------------------------------------------------------
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
            raise TwinError(f"Airflow API {method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise TwinError(f"Airflow API {method} {path}: {exc}") from None
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


# --- the twin -----------------------------------------------------------------------------------
def _psql(sql: str, dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


@dataclass
class Twin:
    """The production topology as local processes; ``with Twin(root) as twin: …``.

    ``root`` holds logs, ``AIRFLOW_HOME`` and ``FLYWHEEL_HOME`` of the twin. Postgres and Redis
    are the machine's (``pg_admin_dsn``, ``redis_host``/``redis_port``); the twin's databases and
    Redis DB indexes are its own and are dropped/flushed by :meth:`stop`.
    """

    root: Path
    pg_admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 5  # Celery broker; the Feast online store uses redis_db + 1
    services: tuple[str, ...] = ()  # subset of topology services to start (() = all the twin runs)
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.topology = load_topology()
        for name in (
            "airflow-apiserver",
            "airflow-scheduler",
            "mlflow",
            "minio",
            "feast",
            "serving",
            "evidently-ui",
        ):
            self.ports.setdefault(name, free_port())
        base = f"flywheel_twin_{self.suffix}"
        self.databases = {
            k: base if k == "airflow" else f"{base}_{k}" for k in self.topology.DATABASES
        }
        self.endpoints = self.topology.Endpoints(
            postgres_host="127.0.0.1",
            postgres_port=5432,
            postgres_user="postgres",
            postgres_password="",
            airflow_db=self.databases["airflow"],
            mlflow_db=self.databases["mlflow"],
            feast_db=self.databases["feast"],
            redis_host=self.redis_host,
            redis_port=self.redis_port,
            celery_redis_db=self.redis_db,
            feast_redis_db=self.redis_db + 1,
            s3_endpoint=f"http://127.0.0.1:{self.ports['minio']}",
            airflow_api=f"http://127.0.0.1:{self.ports['airflow-apiserver']}",
            mlflow_url=f"http://127.0.0.1:{self.ports['mlflow']}",
            repo=str(REPO_ROOT),
            airflow_home=str(self.root / "airflow"),
            state=str(self.root / "state"),
        )
        self.secrets = {
            "POSTGRES_PASSWORD": "",
            "AWS_ACCESS_KEY_ID": "twin",
            "AWS_SECRET_ACCESS_KEY": "twin-secret",
            "FLYWHEEL_PSEUDONYM_KEY": os.environ.get(
                "FLYWHEEL_PSEUDONYM_KEY", "twin-pseudonym-key"
            ),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
            "AIRFLOW_ADMIN_USER": "admin",
            "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        }
        self.group = ProcessGroup(self.root / "logs")
        self.client = AirflowClient(
            self.endpoints.airflow_api,
            self.secrets["AIRFLOW_ADMIN_USER"],
            self.secrets["AIRFLOW_ADMIN_PASSWORD"],
        )
        self._created_dbs: list[str] = []
        self._moto = None

    # --- configuration ----------------------------------------------------------------------
    def _interpolate(self, value: str) -> str:
        for key, secret in self.secrets.items():
            value = value.replace("${" + key + "}", secret)
        return value

    def env(self, airflow: bool = True) -> dict[str, str]:
        """The environment of a twin service: compose's templates rendered for loopback."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FLYWHEEL_"))}
        env.update(
            {
                k: self._interpolate(v)
                for k, v in self.topology.render_env(self.endpoints, airflow).items()
            }
        )
        env.update({k: v for k, v in self.secrets.items() if not k.startswith("AIRFLOW_ADMIN")})
        env["FLYWHEEL_FEAST_PROJECT"] = self.key_prefix  # Feast keys of this twin only
        env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] = f"{self.key_prefix}:"
        if not airflow:
            for key in [k for k in env if k.startswith("AIRFLOW__")]:
                del env[key]
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        if airflow:
            api = self.ports["airflow-apiserver"]
            env.update(
                {
                    "AIRFLOW__API__HOST": "127.0.0.1",
                    "AIRFLOW__API__PORT": str(api),
                    "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api}",
                    "AIRFLOW__API__WORKERS": "1",
                    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
                    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                        self.ports["airflow-scheduler"]
                    ),
                    # a small machine: quick parsing, few concurrent task processes per worker
                    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
                    "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                    "AIRFLOW__CORE__PARALLELISM": "4",
                    # a loaded 2-core machine answers the execution API slowly at times
                    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
                    "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "10",
                    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.root / "airflow" / "logs"),
                }
            )
        return env

    def worker_argv(self, queue: str) -> list[str]:
        return [
            venv_bin("airflow"),
            "celery",
            "worker",
            "--queues",
            queue,
            "--celery-hostname",
            f"worker-{queue}@%h",
        ]

    def plan(self) -> dict[str, list[str] | None]:
        """What the twin runs for each topology service (``None``: the machine's server, reused)."""
        api = self.ports["airflow-apiserver"]
        plan: dict[str, list[str] | None] = {
            "postgres": None,
            "redis": None,
            "minio": [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["minio"])],
            "minio-init": ["create-bucket", self.topology.BUCKET],
            "mlflow": [
                venv_bin("mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["mlflow"]),
                "--backend-store-uri",
                self._pg_url(self.databases["mlflow"], "postgresql+psycopg2"),
                "--artifacts-destination",
                f"s3://{self.topology.BUCKET}/mlflow",
                "--workers",
                "1",
            ],
            "airflow-init": [venv_bin("airflow"), "db", "migrate"],
            "airflow-apiserver": [venv_bin("airflow"), "api-server", "--port", str(api)],
            "airflow-scheduler": [venv_bin("airflow"), "scheduler"],
            "airflow-dag-processor": [venv_bin("airflow"), "dag-processor"],
            "airflow-triggerer": [venv_bin("airflow"), "triggerer"],
            "feast": [
                "bash",
                "-c",
                "set -e; cfg=$(python -c 'from flywheel.features.store import render_yaml; "
                "print(render_yaml())'); exec feast --chdir feature_repo --feature-store-yaml "
                f'"$cfg" serve --host 127.0.0.1 --port {self.ports["feast"]}',
            ],
            "serving": [venv_bin("flywheel"), "serve", "--port", str(self.ports["serving"])],
            "evidently-ui": [
                venv_bin("evidently"),
                "ui",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["evidently-ui"]),
                "--workspace",
                str(self.root / "state" / "evidently"),
            ],
        }
        for s in self.topology.SERVICES:
            if s.queue:
                plan[s.name] = self.worker_argv(s.queue)
        return plan

    def _pg_url(self, db: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://postgres@127.0.0.1:5432/{db}"

    @property
    def wanted(self) -> list[str]:
        """Services started by :meth:`start` in topology order (``feast``/``serving``/``evidently-ui``
        only when named in ``services``: the loop needs the Feast *store*, not its HTTP server)."""
        optional = {"feast", "serving", "evidently-ui"}
        names = [s.name for s in self.topology.SERVICES]
        if self.services:
            return [n for n in names if n in self.services or n in ("postgres", "redis")]
        return [n for n in names if n not in optional]

    # --- lifecycle --------------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] = print) -> Twin:
        (self.root / "airflow").mkdir(parents=True, exist_ok=True)
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        plan = self.plan()
        try:
            self._start_backends(plan, progress)
            self._init_airflow(progress)
            for s in self.topology.SERVICES:
                if s.airflow and s.long_running and s.name in self.wanted:
                    argv = plan[s.name]
                    env = self.env()
                    if s.queue:
                        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = (
                            f"flywheel.twin.worker_hostname_{s.queue}"
                        )
                    # log servers (workers, triggerer): one port each, as if on separate hosts
                    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
                    env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
                    self.group.start(s.name, argv, env)
            for name in ("feast", "serving", "evidently-ui"):
                if name in self.wanted:
                    self.group.start(name, plan[name], self.env(airflow=False))
            progress("waiting for the Airflow API server, scheduler and workers")
            wait_until(self.client.healthy, 240, "airflow-apiserver", self.group)
            wait_until(
                lambda: http_ok(f"http://127.0.0.1:{self.ports['airflow-scheduler']}/health"),
                180,
                "airflow-scheduler",
                self.group,
            )
            wait_until(self.workers_ready, 180, "celery workers", self.group, interval=3)
            for name in ("feast", "serving", "evidently-ui"):
                if name in self.wanted:
                    path = self.topology.service(name).health.removeprefix("http:")
                    url = f"http://127.0.0.1:{self.ports[name]}{path}"
                    wait_until(lambda u=url: http_ok(u), 180, name, self.group)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_backends(self, plan: dict, progress: Callable[[str], None]) -> None:
        progress(f"creating Postgres databases {', '.join(self.databases.values())}")
        for db in self.databases.values():
            _psql(f'CREATE DATABASE "{db}"', self.pg_admin_dsn)
            self._created_dbs.append(db)
        self._flush_redis()
        progress(f"starting the S3 endpoint (moto) on :{self.ports['minio']}")
        self.group.start("minio", plan["minio"], self.env(airflow=False))
        s3 = self.endpoints.s3_endpoint
        wait_until(
            lambda: http_ok(f"{s3}/moto-api/"), 60, "minio (moto S3)", self.group, interval=0.5
        )
        self.s3_client().create_bucket(Bucket=self.topology.BUCKET)
        progress(f"starting MLflow on :{self.ports['mlflow']}")
        self.group.start("mlflow", plan["mlflow"], self.env(airflow=False))

    def _init_airflow(self, progress: Callable[[str], None]) -> None:
        progress("airflow-init: migrating the metadata DB, connections, pool, admin user")
        env = self.env()
        airflow = venv_bin("airflow")

        def run(*args: str) -> None:
            log = self.group.log_dir / "airflow-init.log"
            with log.open("ab") as fh:
                code = subprocess.run(
                    [airflow, *args], env=env, stdout=fh, stderr=subprocess.STDOUT
                ).returncode
            if code != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise TwinError(
                    f"airflow-init: `airflow {' '.join(args)}` failed ({code}):\n{tail}"
                )

        run("db", "migrate")
        for conn_id, uri in self.topology.CONNECTIONS.items():
            rendered = self.topology.render(uri, self.endpoints)
            if rendered.startswith("aws://"):
                prefix, _, query = rendered.partition("?")
                params = urllib.parse.parse_qsl(query)
                rendered = prefix + "?" + urllib.parse.urlencode(params)
            run("connections", "add", conn_id, "--conn-uri", rendered)
        for pool, slots in self.topology.POOLS.items():
            run("pools", "set", pool, str(slots), f"{pool} (twin)")
        pw_file = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        pw_file.write_text(
            json.dumps({self.secrets["AIRFLOW_ADMIN_USER"]: self.secrets["AIRFLOW_ADMIN_PASSWORD"]})
        )
        wait_until(
            lambda: http_ok(f"{self.endpoints.mlflow_url}/health"), 120, "mlflow", self.group
        )

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoints.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.secrets["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.secrets["AWS_SECRET_ACCESS_KEY"],
        )

    def workers_ready(self) -> bool:
        """Both Celery workers answer a ping (their names are ``worker-<queue>@host``)."""
        env = self.env()
        out = subprocess.run(
            [
                venv_bin("celery"),
                "--app",
                "airflow.providers.celery.executors.celery_executor.app",
                "inspect",
                "ping",
                "--timeout",
                "5",
            ],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        wanted = [
            f"worker-{s.queue}@"
            for s in self.topology.SERVICES
            if s.queue and s.name in self.wanted
        ]
        return all(w in out for w in wanted)

    @property
    def key_prefix(self) -> str:
        """Celery's Redis keys and the Feast project are the twin's own: several twins (and
        other tests) can share one Redis and its DB indexes without taking each other's tasks."""
        return f"flywheel_twin_{self.suffix}"

    def _flush_redis(self) -> None:
        """Delete the twin's keys only (Celery: prefixed; Feast: keys naming its project)."""
        import redis

        for db, pattern in (
            (self.redis_db, f"{self.key_prefix}*"),
            (self.redis_db + 1, f"*{self.key_prefix}*"),
        ):
            r = redis.Redis(host=self.redis_host, port=self.redis_port, db=db)
            keys = list(r.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 500):
                r.delete(*keys[i : i + 500])

    def stop(self) -> None:
        """Stop every process, flush the twin's Redis DBs, drop its Postgres databases."""
        self.group.stop()
        with contextlib.suppress(Exception):
            self._flush_redis()
        for db in self._created_dbs:
            with contextlib.suppress(Exception):
                _psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', self.pg_admin_dsn)
        self._created_dbs.clear()

    def __enter__(self) -> Twin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- using it ---------------------------------------------------------------------------
    def run_env(self) -> dict[str, str]:
        """Environment for a client process (CLI, simulator) that talks to the twin's backends."""
        return self.env(airflow=False)
