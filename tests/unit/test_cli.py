"""The ``flywheel`` command as a person runs it: a real subprocess, real exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


def run(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FLYWHEEL, *args], capture_output=True, text=True, env=env, timeout=300, **kw
    )


@pytest.fixture
def env(fw_home):
    return dict(os.environ)


def test_help_lists_commands(env):
    out = run("--help", env=env)
    assert out.returncode == 0
    for cmd in ("contract", "pseudonymise", "airflow", "dag"):
        assert cmd in out.stdout


def test_contract_is_the_one_in_code(env):
    from core.contract import TABLES

    out = run("contract", env=env)
    assert out.returncode == 0
    for table in TABLES.values():
        for col in table.column_names:
            assert f"`{col}`" in out.stdout


def test_pseudonymise_is_stable_and_keyed(env):
    a = run("pseudonymise", "u000001", env=env).stdout.strip()
    assert a.startswith("p_") and a == run("pseudonymise", "u000001", env=env).stdout.strip()
    other = run(
        "pseudonymise", "u000001", env={**env, "FLYWHEEL_PSEUDONYM_KEY": "another"}
    ).stdout.strip()
    assert other != a


def test_production_refuses_without_key(env):
    env = {**env, "FLYWHEEL_PROFILE": "production"}
    env.pop("FLYWHEEL_PSEUDONYM_KEY", None)
    out = run("pseudonymise", "u1", env=env)
    assert out.returncode == 1
    assert "pseudonymisation key" in out.stderr
    assert "Traceback" not in out.stderr


def test_production_refuses_a_short_key(env):
    env = {**env, "FLYWHEEL_PROFILE": "production", "FLYWHEEL_PSEUDONYM_KEY": "short-key"}
    out = run("pseudonymise", "u1", env=env)
    assert out.returncode == 1
    assert "9 characters" in out.stderr and "at least 32" in out.stderr
    assert "short-key" not in out.stderr  # the error never prints the secret
    long_key = {**env, "FLYWHEEL_PSEUDONYM_KEY": "k" * 32}
    assert run("pseudonymise", "u1", env=long_key).stdout.startswith("p_")


def test_unwritable_home_is_one_clear_line(env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**env, "FLYWHEEL_HOME": str(blocker / "home")}
    env.pop("FLYWHEEL_PSEUDONYM_KEY", None)
    out = run("pseudonymise", "u1", env=env)
    assert out.returncode == 1
    assert "not writable" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_dag_test_rejects_bad_input(env):
    out = run("dag", "test", "ingest_events", "--date", "2026-02-30", env=env)
    assert out.returncode == 1 and "not a date" in out.stderr
    out = run("dag", "test", "ingest_events", "--date", "2026-01-02", "--conf", "[1]", env=env)
    assert out.returncode == 1 and "not a JSON object" in out.stderr


def test_airflow_passthrough_uses_embedded_home(env, fw_home):
    out = run("airflow", "config", "get-value", "core", "dags_folder", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("/dags")
    out = run("airflow", "config", "get-value", "core", "load_examples", env=env)
    assert out.stdout.strip() == "False"


def test_failing_airflow_commands_exit_non_zero(env):
    """A script sees Airflow's failure: `typer.Exit(code)` must reach the process exit status."""
    out = run("airflow", "no-such-command", env=env)
    assert out.returncode != 0, out.stdout
    out = run("dag", "test", "no_such_dag", "--date", "2026-01-03", env=env)
    assert out.returncode != 0, out.stderr[-2000:]
    assert "no_such_dag" in out.stderr


def test_airflow_passwords_file_is_private(fw_home):
    """The admin password file is owner-only, also one Airflow or an older version left 0644."""
    import json
    import stat

    from core.settings import get_settings
    from flywheel.airflow_env import PASSWORDS_FILE, admin_password

    s = get_settings()
    first = admin_password(s)
    path = s.airflow_home / PASSWORDS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert admin_password(s) == first  # stable once written
    path.write_text(json.dumps({"admin": first, "viewer": "v"}))
    path.chmod(0o644)
    assert admin_password(s) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["viewer"] == "v"  # Airflow's other entries kept


def test_settings_hide_credentials_in_uris(env):
    uri = "http://flywheel:s3cr3t-pw@mlflow:5000"
    out = run("settings", env={**env, "FLYWHEEL_MLFLOW_TRACKING_URI": uri})
    assert out.returncode == 0 and "s3cr3t-pw" not in out.stdout
    assert "http://***@mlflow:5000" in out.stdout


def test_dag_test_date_is_the_data_day(env, lake):
    """`flywheel dag test ingest_events --date D` ingests data day D (not D-1, the interval
    Airflow infers for a manual run), and a day without raw data fails at once, non-zero."""
    import datetime as dt

    from tests.data.conftest import write_day

    write_day(lake, dt.date(2026, 2, 4), with_catalog=True)
    out = run("dag", "test", "ingest_events", "--date", "2026-02-04", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [d.isoformat() for d in lake.partitions("validated", "events")] == ["2026-02-04"]
    assert "data day 2026-02-04" in out.stdout + out.stderr

    out = run("dag", "test", "ingest_events", "--date", "2026-02-06", env=env)
    assert out.returncode != 0
    assert "no raw events for 2026-02-06" in out.stdout + out.stderr


def test_expire_raw_dry_run_then_for_real(env, lake):
    import datetime as dt

    from ingestion.pipeline import ingest_day
    from simulation.simulator import simulate

    day = dt.date(2026, 1, 1)
    simulate(lake, days=1, users=50, items=20, start=day)
    ingest_day(day, lake=lake)
    later = (day + dt.timedelta(days=40)).isoformat()
    dry = run("expire-raw", "--today", later, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would expire 3 raw file(s)" in dry.stdout and lake.list("raw/events/")
    done = run("expire-raw", "--today", later, "--keep-days", "30", env=env)
    assert done.returncode == 0 and "expired 3 raw file(s)" in done.stdout
    assert lake.list("raw/events/") == [] and lake.list("validated/events/")
    bad = run("expire-raw", "--today", "yesterday", env=env)
    assert bad.returncode != 0 and "--today 'yesterday' is not a date" in bad.stdout + bad.stderr
