"""``flywheel ui``: the Evidently UI on the drift workspace (and the MLflow UI), with every URL.

The Airflow UI (with the Flywheel section: drift, data quality, leaderboard) is started by
``flywheel airflow standalone`` / ``api-server``; this command prints its address beside the
others so a person has the three places to look in one list.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from core.settings import Settings, get_settings


def ui_urls(settings: Settings) -> dict[str, str]:
    """Where each UI listens (embedded profile: loopback, ports from the settings)."""
    host = settings.airflow_host
    return {
        "Airflow": settings.airflow_url,
        "Flywheel (in Airflow)": f"{settings.airflow_url}/flywheel/",
        "MLflow": f"http://{host}:{settings.mlflow_port}",
        "Evidently": f"http://{host}:{settings.evidently_port}",
    }


def evidently_command(settings: Settings) -> list[str]:
    """The Evidently UI on the drift workspace."""
    return [
        str(Path(sys.executable).parent / "evidently"),
        "ui",
        "--workspace",
        str(settings.evidently_workspace),
        "--host",
        settings.airflow_host,
        "--port",
        str(settings.evidently_port),
    ]


def mlflow_command(settings: Settings) -> list[str]:
    """The MLflow UI on the tracking store (one worker: a UI for one person)."""
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        settings.mlflow_tracking_uri,
        "--default-artifact-root",
        settings.mlflow_artifact_root,
        "--host",
        settings.airflow_host,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
    ]


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui_cmd(
        mlflow: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Also start the MLflow UI"),
        urls_only: bool = typer.Option(False, "--urls", help="Only print the URLs (start nothing)"),
    ) -> None:
        """Start the Evidently UI on the drift workspace (and MLflow's); print every UI's URL."""
        s = get_settings()
        urls = ui_urls(s)
        width = max(len(k) for k in urls)
        for name, url in urls.items():
            typer.echo(f"{name.ljust(width)}  {url}")
        if urls_only:
            return
        s.ensure_home()
        s.evidently_workspace.mkdir(parents=True, exist_ok=True)
        commands = {"Evidently": evidently_command(s)}
        if mlflow:
            commands["MLflow"] = mlflow_command(s)
        # a SIGTERM (service manager, `timeout`) stops the children like Ctrl-C does
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        # each UI in its own process group: stopping it stops the servers it spawned too
        procs = {
            name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()
        }
        typer.echo(
            f"Evidently workspace {s.evidently_workspace} (project 'flywheel'); "
            "Airflow: `flywheel airflow standalone`. Ctrl-C stops."
        )
        try:
            while True:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        typer.secho(f"{name} UI exited ({proc.returncode})", err=True, fg="red")
                        raise typer.Exit(proc.returncode or 1)
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            for proc in procs.values():
                _signal_group(proc, signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group this command started for ``proc`` (and nothing else)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
