"""docker-compose.yaml, the shared topology (deploy/topology.py) and the native twin agree, and
the compose file exposes nothing it should not (docs/SECURITY.md).

Docker does not run here, so the compose file is checked statically: every service of the
topology is there with a health check, a restart policy and the start-up order the topology
declares; workers consume the declared queues; environment names, values and ports are the ones
the twin renders from the same templates; only browser UIs (and the serving API) are published,
on loopback by default; every secret is a required ``${VAR:?}`` from .env, each service holds only
its own (one S3 key and one MLflow user per client, the MinIO root key in minio/minio-init only);
MLflow runs behind its basic-auth app and Redis with requirepass. The secret checker of
airflow-init/minio-init and the MLflow launcher run for real.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.twin import REPO_ROOT, Twin, load_topology

topology = load_topology()
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
COMPOSE_TEXT = (REPO_ROOT / "docker-compose.yaml").read_text()
SERVICES = COMPOSE["services"]
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (REPO_ROOT / ".env.example").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)
CHECK_SECRETS = REPO_ROOT / "deploy" / "check-secrets.sh"
#: ``${VAR}``, ``${VAR:-default}`` or ``${VAR:?message}`` (compose interpolation; not ``$${…}``)
REFERENCE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}")


def _normal(value: str) -> str:
    """``${VAR:?message}`` → ``${VAR}`` (the form the topology's templates use)."""
    return REFERENCE.sub(
        lambda m: "${" + m.group(1) + "}" if m.group(2) != "-" else m.group(0), value
    )


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict), "environment must be a mapping"
    return {k: _normal(str(v)) for k, v in env.items()}


def _health_text(svc: dict) -> str:
    test = svc["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def _command(svc: dict) -> str:
    cmd = svc.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def test_same_services():
    assert list(SERVICES) == [s.name for s in topology.SERVICES]


@pytest.mark.parametrize("svc", topology.SERVICES, ids=lambda s: s.name)
def test_health_restart_and_start_order(svc):
    spec = SERVICES[svc.name]
    if svc.long_running:
        assert "healthcheck" in spec, f"{svc.name}: long-running service without healthcheck"
        assert spec.get("restart") in ("always", "unless-stopped"), f"{svc.name}: no restart policy"
        for key in ("interval", "retries"):
            assert key in spec["healthcheck"], f"{svc.name}: healthcheck without {key}"
    else:
        assert spec.get("restart", "no") == "no", f"{svc.name}: one-shot service must not restart"
    deps = {name: d["condition"] for name, d in (spec.get("depends_on") or {}).items()}
    assert deps == svc.depends_on, f"{svc.name}: depends_on differs from deploy/topology.py"
    for name, condition in deps.items():
        other = topology.service(name)
        expected = topology.HEALTHY if other.long_running else topology.COMPLETED
        assert condition == expected, f"{svc.name} waits on {name} with {condition}"


@pytest.mark.parametrize("svc", [s for s in topology.SERVICES if s.health], ids=lambda s: s.name)
def test_health_checks_probe_the_declared_port(svc):
    text = _health_text(SERVICES[svc.name])
    if svc.health.startswith("http:"):
        assert f"localhost:{svc.port}{svc.health.removeprefix('http:')}" in text
    elif svc.queue:
        assert "inspect ping" in text and f"worker-{svc.queue}@" in text


# --- network exposure ---------------------------------------------------------------------------
@pytest.mark.parametrize("svc", topology.SERVICES, ids=lambda s: s.name)
def test_only_uis_are_published_and_on_loopback_by_default(svc):
    spec = SERVICES[svc.name]
    ports = [str(p) for p in spec.get("ports", [])]
    assert not spec.get("network_mode"), f"{svc.name}: network_mode bypasses the compose network"
    if not svc.publish:
        assert not ports, f"{svc.name} is internal ({svc.exposure}) but publishes {ports}"
        if svc.port:  # reached on the compose network (service:port), probed or listened on
            used = _health_text(spec) + _command(spec) if "healthcheck" in spec else ""
            assert f"{svc.name}:{svc.port}" in COMPOSE_TEXT or str(svc.port) in used
        return
    assert svc.bind_var and svc.bind_var in ENV_EXAMPLE, f"{svc.name}: bind variable undocumented"
    assert ENV_EXAMPLE[svc.bind_var] == "127.0.0.1"
    expected = [f"${{{svc.bind_var}:-127.0.0.1}}:{p}:{p}" for p in svc.publish]
    assert ports == expected, f"{svc.name}: publish {ports}, topology says {expected}"
    if svc.port not in svc.publish:  # e.g. MinIO: console published, S3 API internal
        assert all(f":{svc.port}" not in p for p in ports)


def test_backends_stay_internal():
    for name in ("postgres", "redis", "feast", "minio-init", "airflow-worker", "airflow-scheduler"):
        assert not SERVICES[name].get("ports"), f"{name} publishes a port"
    assert "9000" not in " ".join(str(p) for p in SERVICES["minio"].get("ports", []))
    assert all(not s.get("expose") for s in SERVICES.values())


def test_ports_match_settings_defaults():
    from core.settings import Settings

    s = Settings()
    assert s.airflow_port == topology.service("airflow-apiserver").port
    assert s.mlflow_port == topology.service("mlflow").port
    assert s.evidently_port == topology.service("evidently-ui").port
    assert s.serve_port == topology.service("serving").port


def test_queues_and_gpu_reservation():
    queues = {}
    for s in topology.SERVICES:
        spec = SERVICES[s.name]
        m = re.search(r"celery worker --queues (\S+)", _command(spec))
        if s.queue:
            assert m, f"{s.name}: not a celery worker"
            queues[m.group(1)] = s.name
        devices = spec.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        if s.gpu:
            assert (
                devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
            )
        else:
            assert not devices, f"{s.name} reserves GPUs"
    assert set(queues) == set(topology.QUEUES)
    assert topology.service(queues["gpu"]).gpu


@pytest.mark.parametrize("svc", [s for s in topology.SERVICES if s.airflow], ids=lambda s: s.name)
def test_airflow_env_matches_templates(svc):
    env = _env(SERVICES[svc.name])
    expected = topology.render_env(topology.Endpoints(), airflow=True)
    for key, value in expected.items():
        assert env.get(key) == value, f"{svc.name}: {key}={env.get(key)!r}, topology says {value!r}"


@pytest.mark.parametrize("name", ["mlflow", "feast", "serving", "evidently-ui"])
def test_app_env_matches_templates(name):
    env = _env(SERVICES[name])
    for key, value in topology.render_env(topology.Endpoints(), airflow=False).items():
        assert env.get(key) == value, f"{name}: {key}"
    if name == "mlflow":
        for key, value in topology.MLFLOW_ENV.items():
            assert env.get(key) == topology.render(value, topology.Endpoints()), key


# --- secrets ------------------------------------------------------------------------------------
def test_every_secret_is_required_and_documented():
    referenced = {m.group(1) for m in REFERENCE.finditer(COMPOSE_TEXT)}
    assert referenced <= set(ENV_EXAMPLE), f"not in .env.example: {referenced - set(ENV_EXAMPLE)}"
    assert set(topology.SECRET_ENV) <= referenced, set(topology.SECRET_ENV) - referenced
    for m in REFERENCE.finditer(COMPOSE_TEXT):
        if m.group(1) in topology.SECRET_ENV:
            assert m.group(2) == "?" and m.group(3), f"{m.group(0)}: a secret must be ${{VAR:?msg}}"
    header = COMPOSE_TEXT.split("\nx-", 1)[0]
    for var in ENV_EXAMPLE:
        assert var in header, f"{var} is not documented in the compose header comment"


def test_no_secret_on_a_command_line():
    """Compose-interpolated secrets in ``command`` would show in ``ps`` and ``docker inspect``."""
    for name, spec in SERVICES.items():
        cmd = _command(spec) + " " + _health_text(spec) if "healthcheck" in spec else _command(spec)
        used = {m.group(1) for m in REFERENCE.finditer(cmd)} & set(topology.SECRET_ENV)
        assert not used, f"{name}: {used} interpolated into its command"


@pytest.mark.parametrize("svc", topology.SERVICES, ids=lambda s: s.name)
def test_each_service_holds_only_its_own_secrets(svc):
    env = _env(SERVICES[svc.name])
    held = {k: v for k, v in env.items() if k in topology.SECRET_NAMES}
    assert held == topology.SERVICE_SECRETS[svc.name], f"{svc.name}: secrets differ from topology"
    for key, value in env.items():
        if key.endswith(("PASSWORD", "_SECRET", "_KEY")) or "SECRET" in key:
            assert "${" in value, f"{svc.name}: {key} is not taken from .env"
        if key not in held:  # URLs carry the Postgres/Redis password; Airflow's user list
            names = {m.group(1) for m in REFERENCE.finditer(value)} & set(topology.SECRET_ENV)
            assert names <= {*topology.URL_SAFE_SECRETS, "AIRFLOW_ADMIN_USER"}, (svc.name, key)


def test_minio_root_and_per_service_s3_keys():
    root_holders = {n for n, s in SERVICES.items() if "MINIO_ROOT_PASSWORD" in _env(s)}
    assert root_holders == {"minio", "minio-init"}
    assert COMPOSE_TEXT.count("${MINIO_ROOT_PASSWORD") == 2
    keys: dict[str, set[str]] = {}
    for name, spec in SERVICES.items():
        env = _env(spec)
        if "AWS_ACCESS_KEY_ID" in env:
            user = env["AWS_ACCESS_KEY_ID"]
            assert user in topology.S3_USERS, f"{name}: S3 key {user} has no MinIO user"
            assert env["AWS_SECRET_ACCESS_KEY"] == "${" + topology.S3_USERS[user] + "}"
            keys.setdefault(user, set()).add(name)
    assert {u: sorted(n) for u, n in keys.items()} == {
        "flywheel-airflow": sorted(s.name for s in topology.SERVICES if s.airflow),
        "flywheel-mlflow": ["mlflow"],
        "flywheel-serving": ["serving"],
        "flywheel-feast": ["feast"],
    }
    assert "evidently-ui" not in {n for ns in keys.values() for n in ns}
    assert ENV_EXAMPLE["MINIO_ROOT_USER"] not in topology.S3_USERS
    assert len(set(topology.S3_USERS.values())) == len(topology.S3_USERS)  # distinct secrets


def test_minio_init_creates_each_user_with_a_narrow_policy():
    script = (REPO_ROOT / "deploy" / "minio-init.sh").read_text()
    assert "/flywheel/deploy/minio-init.sh" in _command(SERVICES["minio-init"])
    assert f"mc mb --ignore-existing lake/{topology.BUCKET}" in script
    for user, var in topology.S3_USERS.items():
        assert f"user {user} {var}" in script and f"{var}:{topology.MIN_KEY_LENGTH}" in script
    lake = f"arn:aws:s3:::{topology.BUCKET}/lake/"
    allowed = {  # user → (actions, object resources each must start with)
        "flywheel-airflow": (None, (lake,)),
        "flywheel-mlflow": (None, (f"arn:aws:s3:::{topology.BUCKET}/mlflow/",)),
        "flywheel-serving": (
            {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"},
            (lake + "validated/", lake + "raw/events/", lake + "raw/impressions/"),
        ),
        "flywheel-feast": ({"s3:GetObject"}, (lake + "features/",)),
    }
    for user, (actions, prefixes) in allowed.items():
        policy = json.loads((REPO_ROOT / "deploy" / "minio" / f"{user}.json").read_text())
        for st in policy["Statement"]:
            assert st["Effect"] == "Allow"
            assert all(a.startswith("s3:") and "*" not in a for a in st["Action"]), (user, st)
            for res in st["Resource"]:
                if res == f"arn:aws:s3:::{topology.BUCKET}":  # bucket-level: list, location
                    assert set(st["Action"]) <= {"s3:ListBucket", "s3:GetBucketLocation"}
                    continue
                assert res.startswith(prefixes), (user, res)
                if actions is not None:
                    assert set(st["Action"]) <= actions, (user, st["Action"])


def test_minio_init_script_runs_mc_for_each_user(tmp_path: Path):
    """deploy/minio-init.sh under sh with a stand-in ``mc`` that logs its calls (and answers
    "already in effect" to a repeated attach, as MinIO does)."""
    log = tmp_path / "mc.log"
    mc = tmp_path / "mc"
    mc.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'if [ "$2" = policy ] && [ "$3" = attach ] && [ -n "$MC_ATTACHED" ]; then\n'
        '  echo "mc: <ERROR> The specified policy change is already in effect." >&2; exit 1\n'
        "fi\n"
    )
    mc.chmod(0o755)
    secrets = {var: f"{var.lower()}-" + "x" * 32 for var in topology.S3_USERS.values()}
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "MINIO_ROOT_USER": "root-user",
        "MINIO_ROOT_PASSWORD": "r" * 32,
        **secrets,
    }
    script = str(REPO_ROOT / "deploy" / "minio-init.sh")
    for attached in ("", "1"):  # first run, then a re-run
        out = subprocess.run(
            ["sh", script], env={**env, "MC_ATTACHED": attached}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == f"alias set lake http://minio:9000 root-user {'r' * 32}"
    assert f"mb --ignore-existing lake/{topology.BUCKET}" in calls
    for user, var in topology.S3_USERS.items():
        assert f"admin user add lake {user} {secrets[var]}" in calls
        policy = f"{REPO_ROOT / 'deploy' / 'minio'}/{user}.json"
        assert f"admin policy create lake {user} {policy}" in calls
        assert f"admin policy attach lake {user} --user {user}" in calls
    short = subprocess.run(
        ["sh", script],
        env={**env, "S3_SERVING_SECRET_KEY": "short"},
        capture_output=True,
        text=True,
    )
    assert short.returncode == 1 and "S3_SERVING_SECRET_KEY has 5 characters" in short.stderr
    same = subprocess.run(
        ["sh", script],
        env={**env, "MINIO_ROOT_USER": "flywheel-airflow"},
        capture_output=True,
        text=True,
    )
    assert same.returncode == 1 and "must differ" in same.stderr


def test_serving_may_write_only_its_feedback_and_impression_files():
    from serving.feedback import EVENTS_FILE_PREFIX, IMPRESSIONS_FILE_PREFIX

    policy = json.loads((REPO_ROOT / "deploy" / "minio" / "flywheel-serving.json").read_text())
    writes = {
        res
        for st in policy["Statement"]
        if "s3:PutObject" in st["Action"]
        for res in st["Resource"]
    }
    lake = f"arn:aws:s3:::{topology.BUCKET}/lake/raw"
    assert writes == {
        f"{lake}/events/dt=*/{EVENTS_FILE_PREFIX}*",
        f"{lake}/impressions/dt=*/{IMPRESSIONS_FILE_PREFIX}*",
    }
    assert not any("s3:DeleteObject" in st["Action"] for st in policy["Statement"])


def _check(env: dict[str, str], *specs: str, shell: str = "sh") -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which(shell) or shell, str(CHECK_SECRETS), "airflow-init", *specs],
        env={"PATH": "/nonexistent", **env},  # built-ins only (the minio/mc image has no grep)
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("shell", ["sh", "bash"])  # dash (Debian's sh) and bash alike
def test_check_secrets_refuses_placeholders_short_and_unsafe_values(shell):
    good = "k" * 40
    ok = _check({"A": good, "B": good}, "A:32", "B:32:url", shell=shell)
    assert ok.returncode == 0, ok.stderr
    bad = {
        "PLACEHOLDER": "change-me-" + "x" * 40,
        "UPPER": "CHANGEME" + "x" * 40,
        "SHORT": "s3cr3t",
        "UNSAFE": "a/b@c:" + "x" * 40,
        "EMPTY": "",
    }
    specs = [f"{k}:32" for k in bad if k != "UNSAFE"]
    out = _check(bad, *specs, "UNSAFE:32:url", "UNSET:1", shell=shell)
    assert out.returncode == 1
    for name in (*bad, "UNSET"):
        assert f"airflow-init: {name} " in out.stderr, (name, out.stderr)
    assert "placeholder" in out.stderr and "needs at least 32" in out.stderr
    for value in bad.values():
        if value:
            assert value not in out.stderr + out.stdout  # never echoes a secret


def test_init_services_check_every_secret_they_hold():
    init = _command(SERVICES["airflow-init"])
    held = topology.SERVICE_SECRETS["airflow-init"]
    for key, value in held.items():
        m = REFERENCE.fullmatch(value)
        if m:  # a secret from .env, under the name the container sees
            minimum = topology.SECRET_ENV[m.group(1)]
            assert re.search(rf"\b{key}:{minimum}\b", init), f"airflow-init does not check {key}"
    for var in topology.URL_SAFE_SECRETS:
        assert f"{var}:{topology.SECRET_ENV[var]}:url" in init
    assert init.index("check-secrets.sh") < init.index("airflow db migrate")
    # .env.example as shipped is refused: every secret there is a placeholder
    example = {k: v for k, v in ENV_EXAMPLE.items() if k in topology.SECRET_ENV}
    specs = [
        f"{k}:{n}" for k, n in topology.SECRET_ENV.items() if n >= topology.MIN_PASSWORD_LENGTH
    ]
    out = _check(example, *specs)
    assert out.returncode == 1
    assert out.stderr.count("placeholder") == len(specs), out.stderr


def test_passwords_file_is_private():
    init = _command(SERVICES["airflow-init"])
    assert (
        "umask 077" in init
        and 'chmod 600 "$${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"' in init
    )


# --- MLflow behind auth, Redis with a password ----------------------------------------------------
def test_mlflow_runs_behind_basic_auth_and_clients_have_users():
    cmd = _command(SERVICES["mlflow"])
    assert cmd.startswith("python -m deploy.mlflow_server ")
    assert "--backend-store-uri" not in cmd  # MLFLOW_BACKEND_STORE_URI, off the command line
    env = _env(SERVICES["mlflow"])
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == topology.MLFLOW_ADMIN
    for user, (var, _role) in topology.MLFLOW_USERS.items():
        assert env[var] == "${" + var + "}", f"mlflow cannot create {user}"
    clients = {
        n: _env(s)["MLFLOW_TRACKING_USERNAME"]
        for n, s in SERVICES.items()
        if "MLFLOW_TRACKING_USERNAME" in _env(s)
    }
    assert clients == {
        **{s.name: "flywheel-airflow" for s in topology.SERVICES if s.airflow},
        "serving": "flywheel-serving",
    }
    for name, user in clients.items():
        var = topology.MLFLOW_USERS[user][0]
        assert _env(SERVICES[name])["MLFLOW_TRACKING_PASSWORD"] == "${" + var + "}"
        assert "@" not in _env(SERVICES[name])["FLYWHEEL_MLFLOW_TRACKING_URI"]


def test_mlflow_launcher_refuses_bad_secrets_and_writes_a_private_config(tmp_path: Path):
    from deploy import mlflow_server

    for value in ("", "change-me-please-change-me-please-x", "short"):
        with pytest.raises(SystemExit, match="MLFLOW_SERVING_PASSWORD"):
            mlflow_server.check_secret("MLFLOW_SERVING_PASSWORD", value, topology.MIN_KEY_LENGTH)
    env = {
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a" * 16,
        "MLFLOW_AIRFLOW_PASSWORD": "w" * 32,
        "MLFLOW_SERVING_PASSWORD": "r" * 32,
    }
    users = mlflow_server.wanted_users(env)
    assert users == {
        "admin": ("a" * 16, True),
        "flywheel-airflow": ("w" * 32, False),
        "flywheel-serving": ("r" * 32, False),
    }
    ini = mlflow_server.write_auth_config(
        tmp_path, "postgresql+psycopg2://u:p%40ss@db:5432/mlflow_auth"
    )
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ini)
    assert cfg["mlflow"]["default_permission"] == "READ"
    assert cfg["mlflow"]["database_uri"] == "postgresql+psycopg2://u:p%40ss@db:5432/mlflow_auth"


def test_mlflow_launcher_creates_and_rotates_users(tmp_path: Path):
    """The auth store for real (SQLite here, Postgres in compose): users created, then rotated."""
    try:
        import flask_wtf  # noqa: F401  (MLflow's basic-auth app imports it)
    except ImportError:
        pytest.fail("MLflow's basic-auth app needs Flask-WTF: install mlflow[auth] (pyproject)")
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    from deploy import mlflow_server

    db = f"sqlite:///{tmp_path / 'auth.db'}"
    users = {"admin": ("a" * 16, True), "flywheel-serving": ("r" * 32, False)}
    assert mlflow_server.ensure_users(db, users) == ["created admin", "created flywheel-serving"]
    users["flywheel-serving"] = ("n" * 32, False)
    assert mlflow_server.ensure_users(db, users) == ["kept admin", "rotated flywheel-serving"]
    store = SqlAlchemyStore()
    store.init_db(db)
    assert store.authenticate_user("flywheel-serving", "n" * 32)
    assert not store.authenticate_user("flywheel-serving", "r" * 32)
    assert store.get_user("admin").is_admin and not store.get_user("flywheel-serving").is_admin


def test_redis_requires_a_password_and_every_client_sends_it():
    spec = SERVICES["redis"]
    assert "requirepass $${REDIS_PASSWORD}" in _command(spec)  # $$: expanded in the container
    assert _env(spec)["REDIS_PASSWORD"] == "${REDIS_PASSWORD}"
    assert "REDISCLI_AUTH" in _health_text(spec)
    urls = {
        (name, key): value
        for name, s in SERVICES.items()
        for key, value in _env(s).items()
        if value.startswith("redis")
    }
    assert urls
    for where, url in urls.items():
        assert url.startswith("redis://:${REDIS_PASSWORD}@redis:6379/"), where
    from features.store import redis_connection_string

    url = topology.render(
        topology.FLYWHEEL_ENV["FLYWHEEL_REDIS_URL"], topology.Endpoints(redis_auth=":s3cr3t-_x@")
    )
    assert redis_connection_string(url).split(",")[1:] == [
        f"db={topology.REDIS_DBS['feast']}",
        "password=s3cr3t-_x",
    ]


def test_init_creates_connections_pools_and_databases():
    init = _command(SERVICES["airflow-init"])
    assert "airflow db migrate" in init
    for conn_id in topology.CONNECTIONS:
        assert f"connections add {conn_id}" in init
    for pool, slots in topology.POOLS.items():
        assert f"pools set {pool} {slots}" in init
    assert "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in init
    sql = (REPO_ROOT / "deploy" / "postgres-init.sql").read_text()
    assert SERVICES["postgres"]["environment"]["POSTGRES_DB"] == topology.DATABASES["airflow"]
    for db in set(topology.DATABASES.values()) - {topology.DATABASES["airflow"]}:
        assert f"CREATE DATABASE {db}" in sql


def test_dockerfile_pins_and_cuda_variant():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in text and "ARG TORCH_INDEX=" in text
    assert "COPY deploy/ deploy/" in text  # the MLflow launcher and airflow-init's checker
    gpu_build = SERVICES["airflow-worker-gpu"]["build"]
    assert "TORCH_INDEX" in gpu_build["args"] and "cu" in gpu_build["args"]["TORCH_INDEX"]
    assert (REPO_ROOT / ".dockerignore").exists()


# --- the twin -------------------------------------------------------------------------------------
def test_twin_runs_every_service_with_the_same_config(tmp_path: Path):
    twin = Twin(tmp_path)
    plan = twin.plan()
    assert set(plan) == set(SERVICES)
    for s in topology.SERVICES:
        if s.queue:
            argv = plan[s.name]
            assert argv[argv.index("--queues") + 1] == s.queue
            assert hasattr(__import__("deploy.twin").twin, f"worker_hostname_{s.queue}")
        spec = SERVICES[s.name]
        if s.airflow and s.long_running:  # same airflow sub-command as in compose
            sub = _command(spec).split()[1]
            assert sub in plan[s.name], f"{s.name}: twin runs {plan[s.name]}, compose runs {sub}"
    env = twin.env()
    compose_env = _env(SERVICES["airflow-scheduler"])
    missing = set(compose_env) - set(env)
    assert not missing, f"the twin's Airflow lacks {missing}"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    auth = f":{twin.redis_password}@" if twin.redis_password else ""
    broker = f"redis://{auth}127.0.0.1:{twin.redis_port}/{twin.redis_db}"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == broker
    assert twin.databases["airflow"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert "${" not in "".join(env.values())
    assert env["FLYWHEEL_PROFILE"] == "production"
    assert env["FLYWHEEL_LAKE_URI"] == f"s3://{topology.BUCKET}/lake"
    # the library finds dags/, plugins/ and feature_repo/ through the settings, never __file__
    for service_env in (env, twin.env(airflow=False)):
        assert service_env["FLYWHEEL_PROJECT_DIR"] == str(REPO_ROOT)
    assert f"--chdir {REPO_ROOT / 'feature_repo'}" in plan["feast"][-1]


def test_twin_gives_each_service_the_secrets_compose_gives_it(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leaked-from-the-caller")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "leaked-from-the-caller")
    twin = Twin(tmp_path)
    for s in topology.SERVICES:
        env = twin.env(airflow=s.airflow, service=s.name)
        held = {k for k in env if k in topology.SECRET_NAMES}
        assert held == set(topology.SERVICE_SECRETS[s.name]), s.name
        assert "leaked-from-the-caller" not in env.values(), s.name
    assert (
        twin.env(airflow=False, service="serving")["MLFLOW_TRACKING_USERNAME"] == "flywheel-serving"
    )
    mlflow_env = twin.env(airflow=False, service="mlflow")
    assert set(topology.MLFLOW_ENV) <= set(mlflow_env)
    assert twin.databases["mlflow_auth"] in mlflow_env["MLFLOW_AUTH_DB_URL"]
    # MLflow: the compose launcher (basic auth) when Flask-WTF is there, else plain (deviation)
    assert Twin(tmp_path, mlflow_auth=True).plan()["mlflow"][1:3] == ["-m", "deploy.mlflow_server"]
    assert Twin(tmp_path, mlflow_auth=False).plan()["mlflow"][1] == "server"


def test_twin_redis_has_requirepass_unless_it_shares_the_machines(tmp_path: Path):
    twin = Twin(tmp_path, private_redis=True)
    assert len(twin.redis_password) >= topology.MIN_KEY_LENGTH
    assert twin.plan()["redis"][-1] == str(twin.redis_conf)
    for env in (twin.env(), twin.env(airflow=False, service="serving")):
        assert (
            f"redis://:{twin.redis_password}@127.0.0.1:{twin.redis_port}/"
            in env["FLYWHEEL_REDIS_URL"]
        )
    shared = Twin(tmp_path, private_redis=False)  # the machine's Redis: no password possible
    assert shared.plan()["redis"] is None and shared.redis_password == ""
    assert shared.env()["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://127.0.0.1:6379/")


# --- the production engine: Ray head + worker, Airflow's workers submit to it -------------------
def test_ray_cluster_and_engine_env_match_the_topology(tmp_path: Path):
    names = [s.name for s in topology.SERVICES if s.name.startswith("ray-")]
    assert names == ["ray-head", "ray-worker"]
    endpoints = topology.Endpoints()
    head = "ray start --head --block --port 6379 --ray-client-server-port 10001"
    assert head in _command(SERVICES["ray-head"])
    assert f"ray start --address={endpoints.ray_gcs} --block" in _command(SERVICES["ray-worker"])
    for s in topology.SERVICES:
        env = _env(SERVICES[s.name])
        for key, value in topology.service_env(s.name, endpoints).items():
            assert env.get(key) == value, f"{s.name}: {key}={env.get(key)!r}, topology: {value!r}"
        mounts = [str(v) for v in SERVICES[s.name].get("volumes", [])]
        needs_token = s.queue or s.name.startswith("ray-")
        assert any(v.startswith("ray-auth:") for v in mounts) == bool(needs_token), s.name
        if needs_token and s.name != "ray-head":
            assert "ray-auth:/opt/ray-auth:ro" in mounts, f"{s.name} may write Ray's token"
        if s.queue:
            assert env["FLYWHEEL_ENGINE"] == "ray"
            assert s.depends_on.get("ray-head") == topology.HEALTHY
    twin = Twin(tmp_path)
    plan = twin.plan()
    assert plan["ray-head"][1:4] == ["start", "--head", "--block"]
    assert plan["ray-worker"][plan["ray-worker"].index("--address") + 1] == twin.endpoints.ray_gcs
    if topology.TWIN_RAY:
        assert twin.env(service="airflow-worker")["FLYWHEEL_ENGINE"] == "ray"
    assert twin.env(airflow=False, service="ray-head")["RAY_AUTH_MODE"] == "token"
    assert ("ray-head" in twin.wanted) == topology.TWIN_RAY
