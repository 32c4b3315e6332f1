"""docker-compose.yaml, the shared topology (deploy/topology.py) and the native twin agree.

Docker does not run here, so the compose file is checked statically: every service of the
topology is there with a health check, a restart policy and the start-up order the topology
declares; workers consume the declared queues; environment names, values and ports are the ones
the twin renders from the same templates; secrets come only from .env.
"""

from __future__ import annotations

import re
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


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict), "environment must be a mapping"
    return {k: str(v) for k, v in env.items()}


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


@pytest.mark.parametrize("svc", [s for s in topology.SERVICES if s.port], ids=lambda s: s.name)
def test_ports(svc):
    spec = SERVICES[svc.name]
    published = {int(p.split(":")[-1]): int(p.split(":")[0]) for p in spec.get("ports", [])}
    if published:
        assert published.get(svc.port) == svc.port, f"{svc.name}: port {svc.port} not published 1:1"
    else:  # internal only: the health check or the command must use it
        assert str(svc.port) in _health_text(spec) + _command(spec)


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


def test_secrets_only_from_env_file():
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)(?::-[^}]*)?\}", COMPOSE_TEXT))
    assert referenced <= set(ENV_EXAMPLE), f"not in .env.example: {referenced - set(ENV_EXAMPLE)}"
    assert set(topology.SECRET_ENV) <= set(ENV_EXAMPLE)
    for name, spec in SERVICES.items():
        for key, value in _env(spec).items():
            if key in topology.SECRET_ENV:
                assert value == "${" + key + "}", f"{name}: secret {key} has a literal value"
            if key.endswith(("PASSWORD", "_SECRET", "_KEY")):
                assert "${" in value, f"{name}: {key} is not taken from .env"
    header = COMPOSE_TEXT.split("\nx-", 1)[0]
    for var in ENV_EXAMPLE:
        assert var in header, f"{var} is not documented in the compose header comment"


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
    assert f"lake/{topology.BUCKET}" in _command(SERVICES["minio-init"])


def test_dockerfile_pins_and_cuda_variant():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in text and "ARG TORCH_INDEX=" in text
    gpu_build = SERVICES["airflow-worker-gpu"]["build"]
    assert "TORCH_INDEX" in gpu_build["args"] and "cu" in gpu_build["args"]["TORCH_INDEX"]
    assert (REPO_ROOT / ".dockerignore").exists()


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
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:6379/{twin.redis_db}"
    assert twin.databases["airflow"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert "${" not in "".join(env.values())
    assert env["FLYWHEEL_PROFILE"] == "production"
    assert env["FLYWHEEL_LAKE_URI"] == f"s3://{topology.BUCKET}/lake"
    # the library finds dags/, plugins/ and feature_repo/ through the settings, never __file__
    for service_env in (env, twin.env(airflow=False)):
        assert service_env["FLYWHEEL_PROJECT_DIR"] == str(REPO_ROOT)
    assert f"--chdir {REPO_ROOT / 'feature_repo'}" in plan["feast"][-1]
