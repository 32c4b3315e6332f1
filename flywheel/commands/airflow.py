"""Embedded Airflow: ``flywheel airflow ARGS…`` and ``flywheel dag test``."""

from __future__ import annotations

import datetime as dt
import json

import typer

from core.errors import FlywheelError
from core.names import DRIFT_DAG, FEATURES_DAG, INGEST_DAG, TRAIN_DAG
from flywheel.airflow_env import ensure_db, run_airflow

#: The Param through which each DAG takes its data day: ``--date D`` sets it to D.
DAY_PARAMS: dict[str, str] = {
    INGEST_DAG: "day",
    FEATURES_DAG: "day",
    DRIFT_DAG: "day",
    TRAIN_DAG: "end_day",
}


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
            ...,
            "--date",
            help="Data day YYYY-MM-DD the run processes: passed as the DAG's day Param "
            '(conf {"day": D}; {"end_day": D} for train_recommender, the window\'s last '
            "day) unless --conf sets it; also the run's logical date",
        ),
        conf: str | None = typer.Option(
            None, "--conf", help="JSON run configuration (its keys win over --date)"
        ),
    ) -> None:
        """Run one DAG run through Airflow's own dag.test(); exit non-zero when the run fails.

        `flywheel dag test ingest_events --date 2026-02-04` ingests data day 2026-02-04 (a
        manual run's data interval alone would be the day before: Airflow infers the last
        complete day before the logical date).
        """
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise FlywheelError(f"--date {date!r} is not a date (expected YYYY-MM-DD)") from None
        run_conf: dict = {}
        if conf is not None:
            try:
                run_conf = json.loads(conf)
                if not isinstance(run_conf, dict):
                    raise ValueError
            except ValueError:
                raise FlywheelError(f"--conf {conf!r} is not a JSON object") from None
        if dag_id in DAY_PARAMS:
            run_conf = {DAY_PARAMS[dag_id]: day.isoformat(), **run_conf}
        args = ["dags", "test", dag_id, day.isoformat()]
        if run_conf:
            args += ["--conf", json.dumps(run_conf)]
        ensure_db()
        code = run_airflow(args)
        if code != 0:
            typer.secho(f"DAG run {dag_id} for {day} failed (exit {code})", err=True, fg="red")
        raise typer.Exit(code)
