"""The embedded Airflow: one place that builds its environment.

``flywheel airflow ARGS…`` and ``flywheel dag test`` run Airflow with ``AIRFLOW_HOME`` under
``FLYWHEEL_HOME``, our ``dags/`` and ``plugins/`` folders, no examples, SQLite and an execution
API URL that matches the API server's port.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from core.names import POOLS
from core.settings import Settings, get_settings

PASSWORDS_FILE = "simple_auth_manager_passwords.json"


def airflow_env(
    settings: Settings | None = None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment variables for an embedded Airflow process."""
    s = settings or get_settings()
    home = s.airflow_home
    env = dict(os.environ if base is None else base)
    url = f"http://{s.airflow_host}:{s.airflow_port}"
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(s.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(s.plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": env.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"(airflow|flywheel)\..*",
            "AIRFLOW__API__HOST": s.airflow_host,
            "AIRFLOW__API__PORT": str(s.airflow_port),
            "AIRFLOW__API__BASE_URL": url,
            # log servers of the scheduler/triggerer: next to the API port, so that several
            # embedded Airflows (demo, tests) can run side by side
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(s.airflow_port + 1),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(s.airflow_port + 2),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / PASSWORDS_FILE),
            "FLYWHEEL_HOME": str(s.home),
        }
    )
    if s.profile == "embedded":
        # always the home's own database: an inherited connection (another home's, a test
        # session's) would mix runs of two Airflows
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    else:
        env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    # the venv's bin must be on PATH: `airflow standalone` spawns `airflow` sub-commands
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["FLYWHEEL_PROJECT_DIR"] = str(s.project_dir)
    return env


def apply_to_current_process(settings: Settings | None = None) -> dict[str, str]:
    """Put the embedded Airflow configuration into ``os.environ`` (before importing airflow)."""
    env = airflow_env(settings)
    os.environ.update(env)
    prepare_home(get_settings() if settings is None else settings)
    return env


def prepare_home(s: Settings) -> None:
    """Create the state and Airflow homes; the passwords file stays private (see
    :func:`admin_password`)."""
    s.ensure_home()
    s.airflow_home.mkdir(parents=True, exist_ok=True)
    admin_password(s)


def admin_password(s: Settings) -> str:
    """The ``admin`` password of the simple auth manager, created if the file has none.

    The file is created owner-only (0600), and an existing one made so: Airflow appends to it
    with the process umask (world-readable) and never changes its mode. Other users' entries
    (written by Airflow) are kept.
    """
    path = s.airflow_home / PASSWORDS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    with os.fdopen(fd, "r+") as fh:
        os.fchmod(fd, 0o600)
        text = fh.read().strip()
        passwords = json.loads(text) if text else {}
        if not passwords.get("admin"):
            passwords["admin"] = secrets.token_urlsafe(12)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(passwords))
    return passwords["admin"]


def airflow_executable() -> str:
    exe = Path(sys.executable).parent / "airflow"
    return str(exe) if exe.exists() else (shutil.which("airflow") or "airflow")


def run_airflow(args: list[str], settings: Settings | None = None, check: bool = False) -> int:
    """Run the airflow CLI with the embedded configuration; returns its exit code."""
    s = settings or get_settings()
    prepare_home(s)
    proc = subprocess.run([airflow_executable(), *args], env=airflow_env(s), check=check)
    return proc.returncode


def ensure_db(settings: Settings | None = None) -> None:
    """Create or upgrade the embedded metadata database and its pools (idempotent, quiet).

    The pools are :data:`core.names.POOLS`: the ones the DAGs name.
    """
    s = settings or get_settings()
    prepare_home(s)
    env = airflow_env(s)
    quiet = {"env": env, "check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([airflow_executable(), "db", "migrate"], **quiet)
    for name, (slots, description) in POOLS.items():
        subprocess.run(
            [airflow_executable(), "pools", "set", name, str(slots), description], **quiet
        )
