"""The native twin: docker-compose.yaml's topology started as processes on one machine.

Docker does not run everywhere (CI, this machine), so the production topology declared in
``deploy/topology.py`` is also started natively:

* Postgres: the machine's server; the twin creates its own databases (``flywheel_twin_<rand>``,
  ``…_mlflow``, ``…_mlflow_auth``, ``…_feast``) and drops them on stop;
* Redis: a private ``redis-server`` on a free loopback port with ``requirepass`` (as compose),
  when ``redis-server`` is on PATH; else the machine's Redis with the twin's own DB indexes and
  key prefixes, flushed on stop;
* MinIO: moto's S3 server on a free port (bucket created like ``minio-init`` does);
* MLflow: ``python -m deploy.mlflow_server`` (MLflow's basic-auth app, the same users as
  compose) on the Postgres databases, artifacts proxied to the S3 bucket; the Airflow services
  authenticate as ``flywheel-airflow``, serving as ``flywheel-serving``;
* Airflow: ``airflow db migrate`` + connections + pool + admin password (``airflow-init``), then
  api-server, scheduler, dag-processor, triggerer and one Celery worker per queue
  (``default``, ``gpu``) with distinct hostnames, CeleryExecutor on Redis, Postgres metadata;
* Feast: the production profile (Redis online store, SQL registry on Postgres);
* Ray (``deploy.topology.TWIN_RAY``): ``ray start --head`` on free ports and one worker node
  joining it, token authentication on (a fresh token in the twin's folder); the Celery workers
  get ``FLYWHEEL_ENGINE=ray`` and submit to it over Ray Client, as in compose.

Every service gets the environment rendered from the same templates as the compose file
(:func:`deploy.topology.render_env`) and the secrets ``deploy.topology.SERVICE_SECRETS`` gives
it, so the twin and compose cannot drift apart silently.

Where the twin differs from compose (docs/SECURITY.md), knowingly: Postgres is the machine's,
with trust authentication on loopback (no password; compose: a 32+ character one); without
``redis-server`` on PATH, Redis is the machine's, shared with other tests, so it cannot have a
password (``Twin.redis_password`` is then empty); moto accepts any S3 key and enforces no
policy (each service still gets its own key id, as in compose); MLflow's basic-auth app needs
Flask-WTF (``mlflow[auth]``): without it the twin's MLflow runs without auth
(``Twin.mlflow_auth``); every port is on 127.0.0.1 and free, not the published numbers.

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
import shutil
import socket
import subprocess
import sys
import tempfile
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
def _mlflow_auth_available() -> bool:
    """MLflow's basic-auth app imports Flask-WTF (the ``mlflow[auth]`` extra)."""
    return importlib.util.find_spec("flask_wtf") is not None


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
    #: run a private redis-server with requirepass (else: the machine's Redis, no password)
    private_redis: bool = field(default_factory=lambda: shutil.which("redis-server") is not None)
    #: MLflow behind its basic-auth app (needs Flask-WTF)
    mlflow_auth: bool = field(default_factory=_mlflow_auth_available)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.topology = load_topology()
        self.redis_password = ""
        if self.private_redis:
            self.redis_port = free_port()
            self.redis_password = secrets.token_urlsafe(32)
        for name in (
            "airflow-apiserver",
            "airflow-scheduler",
            "mlflow",
            "minio",
            "feast",
            "serving",
            "evidently-ui",
            "ray-head",
            "ray-client",
        ):
            self.ports.setdefault(name, free_port())
        # Ray's sockets live under its temp folder: a short path (Unix sockets: 107 bytes)
        self.ray_temp = Path(tempfile.gettempdir()) / f"fwtwin-ray-{self.suffix}"
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
            mlflow_auth_db=self.databases["mlflow_auth"],
            feast_db=self.databases["feast"],
            redis_host=self.redis_host,
            redis_port=self.redis_port,
            redis_auth=f":{self.redis_password}@" if self.redis_password else "",
            celery_redis_db=self.redis_db,
            feast_redis_db=self.redis_db + 1,
            s3_endpoint=f"http://127.0.0.1:{self.ports['minio']}",
            airflow_api=f"http://127.0.0.1:{self.ports['airflow-apiserver']}",
            mlflow_url=f"http://127.0.0.1:{self.ports['mlflow']}",
            repo=str(REPO_ROOT),
            airflow_home=str(self.root / "airflow"),
            state=str(self.root / "state"),
            ray_gcs=f"127.0.0.1:{self.ports['ray-head']}",
            ray_address=f"ray://127.0.0.1:{self.ports['ray-client']}",
            ray_token_file=str(self.root / "ray-auth" / "token"),
        )
        self.secrets = {  # .env of the twin: every SECRET_ENV name, fresh keys
            **{name: secrets.token_urlsafe(32) for name in self.topology.SECRET_ENV},
            "POSTGRES_PASSWORD": "",  # the machine's Postgres: trust on loopback
            "REDIS_PASSWORD": self.redis_password,
            "MINIO_ROOT_USER": "twin",
            "FLYWHEEL_PSEUDONYM_KEY": os.environ.get(
                "FLYWHEEL_PSEUDONYM_KEY", "twin-pseudonym-key-0123456789abcdef"
            ),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW_ADMIN_USER": "admin",
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

    def env(self, airflow: bool = True, service: str | None = None) -> dict[str, str]:
        """The environment of a twin service: compose's templates rendered for loopback, and the
        secrets compose gives ``service`` (default: an Airflow worker's, also for CLI clients)."""
        ours = ("AIRFLOW", "FLYWHEEL_", "AWS_", "MLFLOW_TRACKING_", "MLFLOW_AUTH_", "RAY_AUTH_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
        env.update(
            {
                k: self._interpolate(v)
                for k, v in self.topology.render_env(self.endpoints, airflow).items()
            }
        )
        for key, value in self.topology.SERVICE_SECRETS[service or "airflow-worker"].items():
            env[key] = self._interpolate(value)
        if service and (service.startswith("ray-") or self.topology.service(service).queue):
            if service.startswith("ray-") or self.topology.TWIN_RAY:
                env.update(self.topology.service_env(service, self.endpoints))
        if service and service.startswith("ray-"):
            # a loaded machine starts a Ray Client server (per driver) slowly at times
            env["RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S"] = "120"
        if service == "mlflow":
            env.update(
                {
                    k: self.topology.render(v, self.endpoints)
                    for k, v in self.topology.MLFLOW_ENV.items()
                }
            )
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
        # compose: python -m deploy.mlflow_server (basic auth); stores from MLFLOW_ENV
        mlflow = [venv_bin("python"), "-m", "deploy.mlflow_server"]
        if not self.mlflow_auth:
            mlflow = [venv_bin("mlflow"), "server"]
        plan: dict[str, list[str] | None] = {
            "postgres": None,
            "redis": [shutil.which("redis-server") or "redis-server", str(self.redis_conf)]
            if self.private_redis
            else None,
            "minio": [venv_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["minio"])],
            "minio-init": ["create-bucket", self.topology.BUCKET],
            "mlflow": [
                *mlflow,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["mlflow"]),
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
        plan.update(self.ray_plan())
        return plan

    def ray_plan(self) -> dict[str, list[str]]:
        """ray-head and ray-worker as compose runs them, on free loopback ports; the head runs
        no tasks (``--num-cpus 0``), the worker node all of them."""
        ray = venv_bin("ray")
        common = ["--block", "--disable-usage-stats"]
        return {
            "ray-head": [
                *(ray, "start", "--head", *common, "--num-cpus", "0"),
                *("--port", str(self.ports["ray-head"])),
                *("--ray-client-server-port", str(self.ports["ray-client"])),
                *("--include-dashboard", "false", "--temp-dir", str(self.ray_temp / "head")),
            ],
            "ray-worker": [
                *(ray, "start", "--address", self.endpoints.ray_gcs, *common),
                *("--temp-dir", str(self.ray_temp / "worker")),
            ],
        }

    @property
    def redis_conf(self) -> Path:
        return self.root / "redis" / "redis.conf"

    def _start_redis(self) -> None:
        """The private Redis: loopback, a free port, requirepass, nothing persisted."""
        import redis

        folder = self.redis_conf.parent
        folder.mkdir(parents=True, exist_ok=True)
        conf = (
            f"port {self.redis_port}\nbind 127.0.0.1\nrequirepass {self.redis_password}\n"
            f'save ""\nappendonly no\ndir {folder}\n'
        )
        fd = os.open(self.redis_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(conf)
        self.group.start("redis", self.plan()["redis"], self.env(airflow=False, service="redis"))

        def up() -> bool:
            with contextlib.suppress(Exception):
                return redis.Redis(**self._redis_kwargs(0)).ping()
            return False

        wait_until(up, 30, "redis", self.group, interval=0.3)

    def _redis_kwargs(self, db: int) -> dict:
        return {
            "host": self.redis_host,
            "port": self.redis_port,
            "db": db,
            "password": self.redis_password or None,
        }

    @property
    def wanted(self) -> list[str]:
        """Services started by :meth:`start` in topology order (``feast``/``serving``/``evidently-ui``
        only when named in ``services``: the loop needs the Feast *store*, not its HTTP server)."""
        optional = {"feast", "serving", "evidently-ui"}
        names = [s.name for s in self.topology.SERVICES]
        if not self.topology.TWIN_RAY:
            names = [n for n in names if not n.startswith("ray-")]
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
                        env = self.env(service=s.name)  # + the engine (Ray) when the twin has it
                        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = (
                            f"deploy.twin.worker_hostname_{s.queue}"
                        )
                    # log servers (workers, triggerer): one port each, as if on separate hosts
                    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
                    env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
                    self.group.start(s.name, argv, env)
            for name in ("feast", "serving", "evidently-ui"):
                if name in self.wanted:
                    self.group.start(name, plan[name], self.env(airflow=False, service=name))
            progress("waiting for the Airflow API server, scheduler and workers")
            wait_until(self.client.healthy, 240, "airflow-apiserver", self.group)
            wait_until(
                lambda: http_ok(f"http://127.0.0.1:{self.ports['airflow-scheduler']}/health"),
                180,
                "airflow-scheduler",
                self.group,
            )
            wait_until(self.workers_ready, 180, "celery workers", self.group, interval=3)
            if "ray-worker" in self.wanted:
                wait_until(self.ray_ready, 180, "ray-worker", self.group, interval=2)
            for name in ("feast", "serving", "evidently-ui"):
                if name in self.wanted:
                    path = self.topology.service(name).health.removeprefix("http:")
                    url = f"http://127.0.0.1:{self.ports[name]}{path}"
                    wait_until(lambda u=url: http_ok(u), 180, name, self.group)
        except BaseException:
            self.stop()
            raise
        self._use_mlflow_reader()
        return self

    def _use_mlflow_reader(self) -> None:
        """MLflow clients in the caller's process (a test's ``MlflowClient``) authenticate as
        the reader, like serving, until :meth:`stop`; the twin's processes get their own."""
        keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        self._saved_env = {k: os.environ.get(k) for k in keys}
        reader = self.env(airflow=False, service="serving")
        os.environ.update({k: reader[k] for k in keys})

    def _restore_env(self) -> None:
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    def _start_backends(self, plan: dict, progress: Callable[[str], None]) -> None:
        progress(f"creating Postgres databases {', '.join(self.databases.values())}")
        for db in self.databases.values():
            _psql(f'CREATE DATABASE "{db}"', self.pg_admin_dsn)
            self._created_dbs.append(db)
        if self.private_redis:
            progress(f"starting a private Redis (requirepass) on :{self.redis_port}")
            self._start_redis()
        self._flush_redis()
        progress(f"starting the S3 endpoint (moto) on :{self.ports['minio']}")
        self.group.start("minio", plan["minio"], self.env(airflow=False))
        s3 = self.endpoints.s3_endpoint
        wait_until(
            lambda: http_ok(f"{s3}/moto-api/"), 60, "minio (moto S3)", self.group, interval=0.5
        )
        self.s3_client().create_bucket(Bucket=self.topology.BUCKET)
        if "ray-head" in self.wanted:
            self._start_ray(plan, progress)
        auth = "basic auth" if self.mlflow_auth else "NO auth: Flask-WTF missing"
        progress(f"starting MLflow ({auth}) on :{self.ports['mlflow']}")
        self.group.start("mlflow", plan["mlflow"], self.env(airflow=False, service="mlflow"))

    def _start_ray(self, plan: dict, progress: Callable[[str], None]) -> None:
        """A fresh token (as ray-head writes it in compose), the head, then the worker node."""
        token = Path(self.endpoints.ray_token_file)
        token.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        self.ray_temp.mkdir(parents=True, exist_ok=True)
        progress(
            f"starting Ray: head on :{self.ports['ray-head']}, client on :{self.ports['ray-client']}"
        )
        self.group.start("ray-head", plan["ray-head"], self.env(airflow=False, service="ray-head"))
        wait_until(
            lambda: self._ray_cli("health-check").returncode == 0, 120, "ray-head", self.group
        )
        self.group.start(
            "ray-worker", plan["ray-worker"], self.env(airflow=False, service="ray-worker")
        )

    def _ray_cli(self, *args: str) -> subprocess.CompletedProcess:
        env = self.env(airflow=False, service="ray-head")
        argv = [venv_bin("ray"), *args, "--address", self.endpoints.ray_gcs]
        return subprocess.run(argv, env=env, capture_output=True, text=True)

    def ray_ready(self) -> bool:
        """The worker node has joined the head (two alive nodes)."""
        return self._ray_cli("status").stdout.count(" 1 node_") >= 2

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
        fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # like airflow-init
        with os.fdopen(fd, "w") as fh:
            fh.write(
                json.dumps(
                    {self.secrets["AIRFLOW_ADMIN_USER"]: self.secrets["AIRFLOW_ADMIN_PASSWORD"]}
                )
            )
        wait_until(  # the auth app migrates its own store first: slow on a loaded machine
            lambda: http_ok(f"{self.endpoints.mlflow_url}/health"), 240, "mlflow", self.group
        )

    def s3_client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoints.s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.secrets["MINIO_ROOT_USER"],
            aws_secret_access_key=self.secrets["MINIO_ROOT_PASSWORD"],
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
            r = redis.Redis(**self._redis_kwargs(db))
            keys = list(r.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 500):
                r.delete(*keys[i : i + 500])

    def stop(self) -> None:
        """Stop every process, flush the twin's Redis DBs, drop its Postgres databases."""
        self._restore_env()
        self.group.stop()  # the private Redis (if any) goes with it: nothing was persisted
        if not self.private_redis:
            with contextlib.suppress(Exception):
                self._flush_redis()
        for db in self._created_dbs:
            with contextlib.suppress(Exception):
                _psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', self.pg_admin_dsn)
        self._created_dbs.clear()
        shutil.rmtree(self.ray_temp, ignore_errors=True)

    def __enter__(self) -> Twin:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- using it ---------------------------------------------------------------------------
    def run_env(self) -> dict[str, str]:
        """Environment for a client process (CLI, simulator) that talks to the twin's backends."""
        return self.env(airflow=False)
