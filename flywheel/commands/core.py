"""Core commands: the contract, pseudonyms, settings."""

from __future__ import annotations

import json

import typer

from core.contract import markdown
from core.privacy import pseudonymise
from core.settings import get_settings
from serving.redact import redact


def register(app: typer.Typer) -> None:
    @app.command("contract")
    def contract_cmd() -> None:
        """Print the raw-data contract as Markdown."""
        typer.echo(markdown())

    @app.command("pseudonymise")
    def pseudonymise_cmd(user_id: str = typer.Argument(..., help="Raw user id")) -> None:
        """Print the pseudonym of a raw user id (for support requests)."""
        typer.echo(pseudonymise(user_id))

    @app.command("settings")
    def settings_cmd() -> None:
        """Print the effective settings (secrets and URI credentials hidden) as JSON."""
        s = get_settings()
        data = json.loads(s.model_dump_json())
        data["airflow_home"] = str(s.airflow_home)
        typer.echo(redact(json.dumps(data, indent=2, default=str)))  # user:password@ in URIs
