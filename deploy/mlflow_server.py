"""Start the MLflow tracking server behind MLflow's basic-auth app, with Flywheel's users.

``python -m deploy.mlflow_server <mlflow server options>`` (compose's ``mlflow`` service and the
twin run exactly this):

1. refuses empty, placeholder or short passwords (:func:`check_secret`), naming the variable;
2. writes the auth app's ini (mode 0600, in a private temporary folder) with the user store on
   ``MLFLOW_AUTH_DB_URL`` (its own Postgres database) and ``default_permission = READ``: every
   *authenticated* user reads, nobody anonymous gets anything but ``/health``;
3. creates or updates the users, so ``.env`` stays the source of truth (a changed password is
   rotated on the next start): the admin (``MLFLOW_AUTH_ADMIN_USERNAME`` /
   ``MLFLOW_AUTH_ADMIN_PASSWORD``, held by this service and the operator only) and one non-admin
   user per client in :data:`deploy.topology.MLFLOW_USERS` (Airflow: the writer, who owns the
   experiments and the registered model it creates; serving: a reader, who cannot move aliases);
4. ``exec``\\s ``mlflow server --app-name basic-auth …`` with ``MLFLOW_AUTH_CONFIG_PATH`` set.

Clients authenticate with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (read by
the MLflow client itself); the tracking URI never carries credentials.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from deploy import topology

PLACEHOLDERS = ("change-me", "changeme", "placeholder", "password1234")


class SecretError(SystemExit):
    """A secret is missing, a placeholder or too short (exits non-zero with the message)."""


def check_secret(name: str, value: str | None, min_length: int) -> str:
    """``value`` if it is a usable secret, else :class:`SecretError` naming ``name`` (never the value)."""
    if not value:
        raise SecretError(f"mlflow: {name} is not set (see .env.example)")
    if any(p in value.lower() for p in PLACEHOLDERS):
        raise SecretError(f"mlflow: {name} is still a placeholder: set a real value in .env")
    if len(value) < min_length:
        raise SecretError(
            f"mlflow: {name} is {len(value)} characters, needs at least {min_length} "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


def write_auth_config(folder: Path, database_uri: str) -> Path:
    """The basic-auth app's ini, readable by this user only (it names the user store's URI)."""
    path = folder / "basic_auth.ini"
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def ensure_users(database_uri: str, users: dict[str, tuple[str, bool]]) -> list[str]:
    """Create each ``username → (password, is_admin)``, or update its password and admin flag."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)
    done = []
    for username, (password, is_admin) in users.items():
        if not store.has_user(username, use_primary=True):
            store.create_user(username, password, is_admin=is_admin)
            done.append(f"created {username}")
            continue
        same = store.authenticate_user(username, password, use_primary=True)
        store.update_user(username, password=None if same else password, is_admin=is_admin)
        done.append(f"kept {username}" if same else f"rotated {username}")
    store.engine.dispose()
    return done


def wanted_users(env: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """The users this deployment needs, with passwords checked (from the environment)."""
    admin = check_secret("MLFLOW_AUTH_ADMIN_USERNAME", env.get("MLFLOW_AUTH_ADMIN_USERNAME"), 1)
    users = {
        admin: (
            check_secret(
                "MLFLOW_AUTH_ADMIN_PASSWORD",
                env.get("MLFLOW_AUTH_ADMIN_PASSWORD"),
                topology.MIN_PASSWORD_LENGTH,
            ),
            True,
        )
    }
    for username, (var, _role) in topology.MLFLOW_USERS.items():
        users[username] = (check_secret(var, env.get(var), topology.MIN_KEY_LENGTH), False)
    return users


def main(argv: list[str]) -> None:
    env = dict(os.environ)
    database_uri = check_secret("MLFLOW_AUTH_DB_URL", env.get("MLFLOW_AUTH_DB_URL"), 1)
    # signs the auth app's CSRF tokens; the same on every MLflow server replica
    key = "MLFLOW_FLASK_SERVER_SECRET_KEY"
    check_secret(key, env.get(key), topology.MIN_KEY_LENGTH)
    users = wanted_users(env)
    folder = Path(tempfile.mkdtemp(prefix="mlflow-auth-"))
    config = write_auth_config(folder, database_uri)
    for line in ensure_users(database_uri, users):
        print(f"mlflow auth: {line}", file=sys.stderr)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
    for var in {v for v, _ in topology.MLFLOW_USERS.values()}:
        env.pop(var, None)  # the server needs the clients' passwords no longer
    os.execvpe("mlflow", ["mlflow", "server", "--app-name", "basic-auth", *argv], env)


if __name__ == "__main__":
    main(sys.argv[1:])
