"""``flywheel demo``: the whole loop on this machine (what ``make demo`` runs)."""

from __future__ import annotations

import datetime as dt

import typer

from flywheel.demo import DemoConfig, run_demo


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        days: int = typer.Option(30, "--days", help="Days of simulated traffic"),
        users: int = typer.Option(1500, "--users", help="Initial users"),
        items: int = typer.Option(300, "--items", help="Initial items"),
        scenario: str = typer.Option(
            "taste_shift+faults", "--scenario", help="Simulator scenario (see `flywheel simulate`)"
        ),
        shift_day: int | None = typer.Option(
            None, "--shift-day", help="0-based day the shift starts (default: days // 2)"
        ),
        seed: int = typer.Option(7, "--seed", help="Random seed"),
        timeout: float = typer.Option(
            1800.0, "--timeout", help="Seconds the loop may take to settle before the demo fails"
        ),
        fresh: bool = typer.Option(
            True,
            "--fresh/--no-fresh",
            help="Reset FLYWHEEL_HOME's lake, Airflow, MLflow, Feast state",
        ),
        serve: bool = typer.Option(
            True, "--serve/--no-serve", help="Serving API with simulated users after the loop"
        ),
        keep_running: bool = typer.Option(
            False, "--keep-running", help="Leave Airflow, MLflow and Evidently UIs up until Ctrl-C"
        ),
    ) -> None:
        """Simulate a month, run the loop through Airflow's scheduler, print what happened."""
        run_demo(
            DemoConfig(
                days=days,
                users=users,
                items=items,
                scenario=scenario,
                shift_day=shift_day,
                seed=seed,
                start=dt.date(2026, 1, 1),
                timeout_s=timeout,
                fresh=fresh,
                serve=serve,
                keep_running=keep_running,
            )
        )
