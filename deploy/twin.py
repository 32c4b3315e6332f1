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

The process tooling it shares with the demo lives in :mod:`flywheel.processes` and
:mod:`flywheel.airflow_client`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from flywheel.airflow_client import AirflowClient
from flywheel.processes import ProcessGroup, ServiceError, free_port, http_ok, venv_bin, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY_FILE = REPO_ROOT / "deploy" / "topology.py"


TwinError = ServiceError  # a service of the twin did not start, died, or a run did not finish


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
                "FLYWHEEL_PSEUDONYM_KEY", "twin-pseudonym-key-0123456789abcdef"
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
        feature_repo = f"{self.endpoints.repo}/feature_repo"  # compose: {repo}/feature_repo too
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
                "set -e; cfg=$(python -c 'from features.store import render_yaml; "
                f"print(render_yaml())'); exec feast --chdir {shlex.quote(feature_repo)} "
                f'--feature-store-yaml "$cfg" serve --host 127.0.0.1 --port {self.ports["feast"]}',
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
                            f"deploy.twin.worker_hostname_{s.queue}"
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
