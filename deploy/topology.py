"""The production topology, declared once: read by the compose checks and by the native twin.

``docker-compose.yaml`` spells this topology for Docker; :mod:`deploy.twin` starts the same
services as processes on one machine. ``tests/integration/test_topology_compose.py`` checks that
the two agree: service names, start-up order, health checks, Celery queues, environment variable
names and ports. Change a service here and in the compose file together.

Values in ``AIRFLOW_ENV`` / ``FLYWHEEL_ENV`` are templates: ``{name}`` placeholders are filled by
:func:`render_env` from :class:`Endpoints` (compose: service DNS names and fixed ports; twin:
loopback and free ports). Secrets are never here: they come from ``.env`` (``SECRET_ENV``), and
``SERVICE_SECRETS`` says which service gets which (least privilege: the MinIO root key only in
``minio``/``minio-init``, one S3 key and one MLflow user per client service).

The production engine (``core.engine``, ``FLYWHEEL_ENGINE=ray``) is a Ray cluster: ``ray-head``
and ``ray-worker`` (scale the workers). Airflow's Celery workers get ``ENGINE_ENV``: they submit
their pieces over Ray Client (``ray://ray-head:10001``) and stay thin. Ray's token authentication
is on: ``ray-head`` writes a random token into the ``ray-auth`` volume on first start, every Ray
process and client reads it (``RAY_AUTH_TOKEN_PATH``). The twin starts the same pair as
processes unless :data:`TWIN_RAY` is off.

Network exposure (docs/SECURITY.md): backends (Postgres, Redis, the MinIO API, MLflow's API
clients, Feast) are reached on the compose network only. ``Service.publish`` lists the ports a
person opens in a browser (or the product calls); compose binds them to ``${<bind_var>:-127.0.0.1}``
so nothing is reachable from other hosts unless the operator says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from core import names

#: Celery queues: every task goes to ``default`` except training, which asks for ``gpu``.
QUEUES: tuple[str, ...] = names.QUEUES

#: Databases in the one Postgres server (compose: created by deploy/postgres-init.sql).
DATABASES: dict[str, str] = {
    "airflow": "airflow",
    "mlflow": "mlflow",
    "mlflow_auth": "mlflow_auth",  # MLflow basic-auth's users and permissions
    "feast": "feast",
}

#: Redis logical databases: Celery broker and Feast online store never share keys.
REDIS_DBS: dict[str, int] = {"celery": 0, "feast": 1}

#: Shortest accepted secret: keys and machine passwords / human passwords (airflow-init and the
#: MLflow launcher refuse shorter ones, and any value containing "change-me").
MIN_KEY_LENGTH = 32
MIN_PASSWORD_LENGTH = 16

#: MLflow basic-auth users besides the admin (username → (password variable, role)). The writer
#: creates (and so MANAGEs) the experiments and the registered model; the reader only reads.
MLFLOW_USERS: dict[str, tuple[str, str]] = {
    "flywheel-airflow": ("MLFLOW_AIRFLOW_PASSWORD", "writer"),
    "flywheel-serving": ("MLFLOW_SERVING_PASSWORD", "reader"),
}

#: The bucket in the S3-compatible store that holds the lake and MLflow's artifacts.
BUCKET = "flywheel"


@dataclass(frozen=True)
class Service:
    """One service of the topology.

    ``port`` is what it listens on (in the container and, in the twin, on loopback unless the
    twin picks a free one); ``health`` is ``http:<path>`` (GET must answer 2xx) or ``cmd`` (a
    command, spelled in the compose file); ``depends_on`` maps a service to the compose
    condition that must hold before this one starts.
    """

    name: str
    role: str
    long_running: bool = True
    port: int | None = None
    health: str | None = None
    depends_on: dict[str, str] = field(default_factory=dict)
    queue: str | None = None  # Celery workers only
    gpu: bool = False  # reserves NVIDIA GPUs
    airflow: bool = False  # built on the x-airflow-common anchor
    publish: tuple[int, ...] = ()  # host ports (same number), bound to ${bind_var:-127.0.0.1}
    bind_var: str | None = None  # .env variable holding the host address they bind to
    exposure: str = "internal: compose network only"  # why it is (not) published


#: The twin (deploy/twin.py) starts ray-head + ray-worker and its Celery workers submit to them
#: (FLYWHEEL_ENGINE=ray). Off: the twin starts no Ray and its workers use the embedded engine.
TWIN_RAY: bool = True

HEALTHY = "service_healthy"
COMPLETED = "service_completed_successfully"
_AIRFLOW_DEPS = {"postgres": HEALTHY, "redis": HEALTHY, "airflow-init": COMPLETED}
_APP_DEPS = {"minio-init": COMPLETED, "postgres": HEALTHY}

SERVICES: tuple[Service, ...] = (
    Service("postgres", "metadata: Airflow, MLflow, Feast registry", port=5432, health="cmd"),
    Service("redis", "Celery broker and Feast online store (requirepass)", port=6379, health="cmd"),
    Service(
        "minio",
        "S3-compatible store: the lake and MLflow artifacts",
        port=9000,
        health="http:/minio/health/live",
        publish=(9001,),
        bind_var="MINIO_CONSOLE_BIND",
        exposure="console (9001) on loopback for the operator (root login); the S3 API internal",
    ),
    Service(
        "minio-init",
        "one-shot: the bucket, one user and policy per client service",
        long_running=False,
        depends_on={"minio": HEALTHY},
    ),
    Service(
        "mlflow",
        "MLflow tracking server and model registry",
        port=5000,
        health="http:/health",
        depends_on={"postgres": HEALTHY, "minio-init": COMPLETED},
        publish=(5000,),
        bind_var="MLFLOW_BIND",
        exposure="UI on loopback, behind MLflow's basic-auth app (every request but /health)",
    ),
    Service(
        "ray-head",
        "Ray head of the production engine: GCS (6379), Ray Client server (10001), no tasks",
        port=6379,
        health="cmd",
    ),
    Service(
        "ray-worker",
        "Ray worker node: runs the engine's tasks (docker compose up --scale ray-worker=N)",
        health="cmd",
        depends_on={"ray-head": HEALTHY},
    ),
    Service(
        "airflow-init",
        "one-shot: migrate the metadata DB, connections, admin user",
        long_running=False,
        depends_on={"postgres": HEALTHY, "redis": HEALTHY},
        airflow=True,
    ),
    Service(
        "airflow-apiserver",
        "Airflow UI, REST API and execution API",
        port=8080,
        health="http:/api/v2/monitor/health",
        depends_on=_AIRFLOW_DEPS,
        airflow=True,
        publish=(8080,),
        bind_var="AIRFLOW_BIND",
        exposure="UI and REST API on loopback, behind Airflow's login",
    ),
    Service(
        "airflow-scheduler",
        "Airflow scheduler",
        port=8974,
        health="http:/health",
        depends_on=_AIRFLOW_DEPS,
        airflow=True,
    ),
    Service(
        "airflow-dag-processor",
        "parses dags/",
        health="cmd",
        depends_on=_AIRFLOW_DEPS,
        airflow=True,
    ),
    Service(
        "airflow-triggerer", "deferred tasks", health="cmd", depends_on=_AIRFLOW_DEPS, airflow=True
    ),
    Service(
        "airflow-worker",
        "Celery worker for every task but training",
        health="cmd",
        depends_on={**_AIRFLOW_DEPS, "airflow-apiserver": HEALTHY, "ray-head": HEALTHY},
        queue=names.DEFAULT_QUEUE,
        airflow=True,
    ),
    Service(
        "airflow-worker-gpu",
        "Celery worker for training, on the GPU host",
        health="cmd",
        depends_on={**_AIRFLOW_DEPS, "airflow-apiserver": HEALTHY, "ray-head": HEALTHY},
        queue=names.GPU_QUEUE,
        gpu=True,
        airflow=True,
    ),
    Service(
        "feast",
        "Feast feature server (online features over HTTP)",
        port=6566,
        health="http:/health",
        depends_on={"redis": HEALTHY, **_APP_DEPS},
    ),
    Service(
        "serving",
        "Flywheel serving API (recommendations, feedback)",
        port=8000,
        health="http:/health",
        depends_on={"redis": HEALTHY, "mlflow": HEALTHY, **_APP_DEPS},
        publish=(8000,),
        bind_var="SERVING_BIND",
        exposure="the product's API on loopback: expose it only behind the product's gateway",
    ),
    Service(
        "evidently-ui",
        "Evidently UI over the drift workspace",
        port=8001,
        health="http:/",
        depends_on=_APP_DEPS,
        publish=(8001,),
        bind_var="EVIDENTLY_BIND",
        exposure="UI on loopback only: Evidently's UI has no login",
    ),
)


def service(name: str) -> Service:
    for s in SERVICES:
        if s.name == name:
            return s
    raise KeyError(name)


@dataclass(frozen=True)
class Endpoints:
    """Where each backend is reached from inside the topology."""

    postgres_host: str = "postgres"
    postgres_port: int = 5432
    postgres_user: str = "flywheel"
    postgres_password: str = "${POSTGRES_PASSWORD}"
    airflow_db: str = DATABASES["airflow"]
    mlflow_db: str = DATABASES["mlflow"]
    mlflow_auth_db: str = DATABASES["mlflow_auth"]
    feast_db: str = DATABASES["feast"]
    redis_host: str = "redis"
    redis_port: int = 6379
    redis_auth: str = ":${REDIS_PASSWORD}@"  # userinfo of the Redis URLs ("" without a password)
    celery_redis_db: int = REDIS_DBS["celery"]
    feast_redis_db: int = REDIS_DBS["feast"]
    s3_endpoint: str = "http://minio:9000"
    bucket: str = BUCKET
    airflow_api: str = "http://airflow-apiserver:8080"
    mlflow_url: str = "http://mlflow:5000"
    repo: str = "/opt/flywheel"  # where dags/, plugins/, feature_repo/ live
    airflow_home: str = "/opt/airflow"
    state: str = "/opt/flywheel/state"  # FLYWHEEL_HOME: Feast repo config, Evidently workspace
    ray_gcs: str = "ray-head:6379"  # where Ray nodes join
    ray_address: str = "ray://ray-head:10001"  # where drivers (Airflow's workers) submit
    ray_token_file: str = "/opt/ray-auth/token"  # Ray's auth token (ray-auth volume)

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: Airflow's production configuration (every airflow-* service; ``x-airflow-common`` env).
AIRFLOW_ENV: dict[str, str] = {
    "AIRFLOW_HOME": "{airflow_home}",
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    "AIRFLOW__CORE__DAGS_FOLDER": "{repo}/dags",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "{repo}/plugins",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    # ingest_events catches up from its start_date: unpause it once raw data is there
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "{airflow_api}/execution/",
    "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"(airflow|flywheel)\..*",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "${AIRFLOW_ADMIN_USER}:admin",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "{airflow_home}/simple_auth_manager_passwords.json",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
        "postgresql+psycopg2://{postgres_user}:{postgres_password}@{postgres_host}:{postgres_port}/{airflow_db}"
    ),
    "AIRFLOW__CELERY__RESULT_BACKEND": (
        "db+postgresql://{postgres_user}:{postgres_password}@{postgres_host}:{postgres_port}/{airflow_db}"
    ),
    "AIRFLOW__CELERY__BROKER_URL": "redis://{redis_auth}{redis_host}:{redis_port}/{celery_redis_db}",
    "AIRFLOW__CELERY__DEFAULT_QUEUE": names.DEFAULT_QUEUE,
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
}

#: Flywheel's production profile (Airflow services and the application services alike).
FLYWHEEL_ENV: dict[str, str] = {
    "FLYWHEEL_PROFILE": "production",
    "FLYWHEEL_HOME": "{state}",
    "FLYWHEEL_PROJECT_DIR": "{repo}",
    "FLYWHEEL_LAKE_URI": "s3://{bucket}/lake",
    "AWS_ENDPOINT_URL": "{s3_endpoint}",
    "MLFLOW_S3_ENDPOINT_URL": "{s3_endpoint}",
    "AWS_DEFAULT_REGION": "us-east-1",
    "FLYWHEEL_MLFLOW_TRACKING_URI": "{mlflow_url}",
    "FLYWHEEL_REDIS_URL": "redis://{redis_auth}{redis_host}:{redis_port}/{feast_redis_db}",
    "FLYWHEEL_FEAST_REGISTRY_URL": (
        "postgresql+psycopg://{postgres_user}:{postgres_password}@{postgres_host}:{postgres_port}/{feast_db}"
    ),
}

#: Ray's token authentication, for every Ray node and every client of the cluster.
RAY_AUTH_ENV: dict[str, str] = {
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN_PATH": "{ray_token_file}",
}

#: The Ray nodes (ray-head, ray-worker): no usage statistics sent anywhere.
RAY_NODE_ENV: dict[str, str] = {**RAY_AUTH_ENV, "RAY_USAGE_STATS_ENABLED": "0"}

#: Celery workers (services with a queue): offline stages run on the Ray cluster (core.engine).
ENGINE_ENV: dict[str, str] = {
    "FLYWHEEL_ENGINE": "ray",
    "FLYWHEEL_RAY_ADDRESS": "{ray_address}",
    **RAY_AUTH_ENV,
}

#: The MLflow server's stores (its own service only; read by ``mlflow server`` and the launcher).
MLFLOW_ENV: dict[str, str] = {
    "MLFLOW_BACKEND_STORE_URI": (
        "postgresql+psycopg2://{postgres_user}:{postgres_password}@{postgres_host}:{postgres_port}/{mlflow_db}"
    ),
    "MLFLOW_AUTH_DB_URL": (
        "postgresql+psycopg2://{postgres_user}:{postgres_password}@{postgres_host}:{postgres_port}/{mlflow_auth_db}"
    ),
}

#: Secrets: only from ``.env`` (``.env.example`` lists them with placeholder values); compose
#: spells each ``${VAR:?…}`` so a missing one stops ``docker compose`` before anything starts.
#: Value: the shortest length accepted (airflow-init, minio-init and the MLflow launcher refuse
#: shorter values and "change-me" placeholders, naming the variable).
SECRET_ENV: dict[str, int] = {
    "POSTGRES_PASSWORD": MIN_KEY_LENGTH,
    "REDIS_PASSWORD": MIN_KEY_LENGTH,
    "MINIO_ROOT_USER": 3,
    "MINIO_ROOT_PASSWORD": MIN_KEY_LENGTH,
    "S3_AIRFLOW_SECRET_KEY": MIN_KEY_LENGTH,
    "S3_MLFLOW_SECRET_KEY": MIN_KEY_LENGTH,
    "S3_SERVING_SECRET_KEY": MIN_KEY_LENGTH,
    "S3_FEAST_SECRET_KEY": MIN_KEY_LENGTH,
    "MLFLOW_ADMIN_PASSWORD": MIN_PASSWORD_LENGTH,
    "MLFLOW_AIRFLOW_PASSWORD": MIN_KEY_LENGTH,
    "MLFLOW_SERVING_PASSWORD": MIN_KEY_LENGTH,
    "MLFLOW_FLASK_SERVER_SECRET_KEY": MIN_KEY_LENGTH,
    "FLYWHEEL_PSEUDONYM_KEY": MIN_KEY_LENGTH,
    "AIRFLOW__CORE__FERNET_KEY": MIN_KEY_LENGTH,
    "AIRFLOW__API_AUTH__JWT_SECRET": MIN_KEY_LENGTH,
    "AIRFLOW__API__SECRET_KEY": MIN_KEY_LENGTH,
    "AIRFLOW_ADMIN_USER": 1,
    "AIRFLOW_ADMIN_PASSWORD": MIN_PASSWORD_LENGTH,
}

#: Secrets that travel inside URLs (Postgres DSNs, Redis URLs): URL-safe characters only.
URL_SAFE_SECRETS: tuple[str, ...] = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")

#: One MinIO user (= S3 access key id) per client service, its secret's variable and its policy
#: (``deploy/minio/<user>.json``, created and attached by ``deploy/minio-init.sh``).
S3_USERS: dict[str, str] = {
    "flywheel-airflow": "S3_AIRFLOW_SECRET_KEY",  # read-write on lake/
    "flywheel-mlflow": "S3_MLFLOW_SECRET_KEY",  # read-write on mlflow/ (artifacts, proxied)
    "flywheel-serving": "S3_SERVING_SECRET_KEY",  # reads lake/validated/, writes its raw/ files
    "flywheel-feast": "S3_FEAST_SECRET_KEY",  # reads lake/features/
}

#: The MLflow admin (created by the MLflow launcher; for the operator, never for a client).
MLFLOW_ADMIN = "admin"


def _s3(user: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": user, "AWS_SECRET_ACCESS_KEY": "${" + S3_USERS[user] + "}"}


def _mlflow_client(user: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": "${" + MLFLOW_USERS[user][0] + "}",
    }


_AIRFLOW_SECRETS: dict[str, str] = {
    "AIRFLOW__CORE__FERNET_KEY": "${AIRFLOW__CORE__FERNET_KEY}",
    "AIRFLOW__API_AUTH__JWT_SECRET": "${AIRFLOW__API_AUTH__JWT_SECRET}",
    "AIRFLOW__API__SECRET_KEY": "${AIRFLOW__API__SECRET_KEY}",
    "FLYWHEEL_PSEUDONYM_KEY": "${FLYWHEEL_PSEUDONYM_KEY}",  # ingestion pseudonymises
    **_s3("flywheel-airflow"),
    **_mlflow_client("flywheel-airflow"),
}

#: Which secret (or identity) each service gets, as environment name → ``${VAR}`` (from .env)
#: or a literal (S3 access key ids and MLflow user names are names, not secrets). Secrets inside
#: URLs (the Postgres and Redis passwords in ``AIRFLOW_ENV``/``FLYWHEEL_ENV``) are not repeated.
SERVICE_SECRETS: dict[str, dict[str, str]] = {
    "postgres": {"POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}"},
    "redis": {"REDIS_PASSWORD": "${REDIS_PASSWORD}"},
    "minio": {
        "MINIO_ROOT_USER": "${MINIO_ROOT_USER}",
        "MINIO_ROOT_PASSWORD": "${MINIO_ROOT_PASSWORD}",
    },
    "minio-init": {
        "MINIO_ROOT_USER": "${MINIO_ROOT_USER}",
        "MINIO_ROOT_PASSWORD": "${MINIO_ROOT_PASSWORD}",
        **{var: "${" + var + "}" for var in S3_USERS.values()},
    },
    "mlflow": {
        **_s3("flywheel-mlflow"),
        "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_ADMIN,
        "MLFLOW_AUTH_ADMIN_PASSWORD": "${MLFLOW_ADMIN_PASSWORD}",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "${MLFLOW_FLASK_SERVER_SECRET_KEY}",
        **{var: "${" + var + "}" for var, _ in MLFLOW_USERS.values()},
    },
    "airflow-init": {
        **_AIRFLOW_SECRETS,
        "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",  # checked by airflow-init only
        "REDIS_PASSWORD": "${REDIS_PASSWORD}",
        "AIRFLOW_ADMIN_USER": "${AIRFLOW_ADMIN_USER}",
        "AIRFLOW_ADMIN_PASSWORD": "${AIRFLOW_ADMIN_PASSWORD}",
    },
    **{
        name: _AIRFLOW_SECRETS
        for name in (
            "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
            "airflow-worker",
            "airflow-worker-gpu",
        )
    },
    # the Ray nodes hold no S3 key: a task runs with its submitter's (core.engine.task_env)
    "ray-head": {},
    "ray-worker": {},
    "feast": _s3("flywheel-feast"),
    "serving": {
        "FLYWHEEL_PSEUDONYM_KEY": "${FLYWHEEL_PSEUDONYM_KEY}",  # hashes ids from outside
        **_s3("flywheel-serving"),
        **_mlflow_client("flywheel-serving"),
    },
    "evidently-ui": {},
}

#: Environment names that carry a secret or an identity (checked against SERVICE_SECRETS).
SECRET_NAMES: frozenset[str] = frozenset(
    {k for env in SERVICE_SECRETS.values() for k in env} | set(SECRET_ENV)
)

#: Airflow connections that airflow-init creates (id → URI template).
CONNECTIONS: dict[str, str] = {
    "flywheel_s3": "aws://?endpoint_url={s3_endpoint}&region_name=us-east-1",
    "flywheel_mlflow": "{mlflow_url}",
}

#: Airflow pools (name → slots): one training run at a time per GPU worker.
POOLS: dict[str, int] = {name: slots for name, (slots, _) in names.POOLS.items()}


def render(template: str, endpoints: Endpoints) -> str:
    """Fill ``{name}`` placeholders; ``${VAR}`` (compose interpolation) is left as it is."""
    out = template
    for key, value in endpoints.as_dict().items():
        out = out.replace("{" + key + "}", str(value))
    return out


def render_env(endpoints: Endpoints, airflow: bool = True) -> dict[str, str]:
    """The non-secret environment of a service (Airflow services get ``AIRFLOW_ENV`` as well)."""
    env = {k: render(v, endpoints) for k, v in FLYWHEEL_ENV.items()}
    if airflow:
        env.update({k: render(v, endpoints) for k, v in AIRFLOW_ENV.items()})
    return env


def service_env(name: str, endpoints: Endpoints) -> dict[str, str]:
    """What ``name`` gets besides :func:`render_env`: the engine for Celery workers, Ray's
    settings for the Ray nodes."""
    svc = service(name)
    extra = ENGINE_ENV if svc.queue else RAY_NODE_ENV if name.startswith("ray-") else {}
    return {k: render(v, endpoints) for k, v in extra.items()}
