"""Embedded Airflow: ``flywheel airflow ARGS…`` and ``flywheel dag test``."""

from __future__ import annotations

import datetime as dt
import json

import typer

from core.errors import FlywheelError
from flywheel.airflow_env import ensure_db, run_airflow


def register(app: typer.Typer) -> None:
    @app.command(
        "airflow",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def airflow_cmd(ctx: typer.Context) -> None:
        """Run the airflow CLI with Flywheel's embedded configuration (e.g. `flywheel airflow standalone`)."""
        if ctx.args[:1] == ["standalone"]:
            ensure_db()  # the pools our DAGs need exist before the scheduler starts
        raise typer.Exit(run_airflow(list(ctx.args)))

    dag_app = typer.Typer(help="Run DAGs without a scheduler.", no_args_is_help=True)
    app.add_typer(dag_app, name="dag")

    @dag_app.command("test")
    def dag_test_cmd(
        dag_id: str = typer.Argument(..., help="DAG id, e.g. ingest_events"),
        date: str = typer.Option(
            ..., "--date", help="Logical date YYYY-MM-DD (the data interval's start)"
        ),
        conf: str | None = typer.Option(None, "--conf", help="JSON run configuration"),
    ) -> None:
        """Run one DAG run through Airflow's own dag.test(); exit non-zero when the run fails."""
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise FlywheelError(f"--date {date!r} is not a date (expected YYYY-MM-DD)") from None
        args = ["dags", "test", dag_id, day.isoformat()]
        if conf is not None:
            try:
                if not isinstance(json.loads(conf), dict):
                    raise ValueError
            except ValueError:
                raise FlywheelError(f"--conf {conf!r} is not a JSON object") from None
            args += ["--conf", conf]
        ensure_db()
        code = run_airflow(args)
        if code != 0:
            typer.secho(f"DAG run {dag_id} for {day} failed (exit {code})", err=True, fg="red")
        raise typer.Exit(code)
