"""One settings object decides every backend.

Read from environment variables with the prefix ``FLYWHEEL_`` (and a ``.env`` file if present).
No other module reads the environment for these choices: import :func:`get_settings`.

Two profiles share the code:

* ``embedded`` (default): everything under ``FLYWHEEL_HOME`` (default ``./.flywheel``) -- a file
  lake, SQLite for Airflow, Feast and MLflow, a local Evidently workspace. No services.
* ``production``: the lake on S3 (``FLYWHEEL_LAKE_URI=s3://bucket/prefix``), Feast on Redis with
  a SQL registry on Postgres, an MLflow tracking server, a pseudonymisation key from a secret.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import ConfigError


class Settings(BaseSettings):
    """All of Flywheel's configuration; see the module docstring for the profiles."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_", env_file=".env", extra="ignore", env_nested_delimiter="__"
    )

    profile: Literal["embedded", "production"] = "embedded"
    home: Path = Field(default=Path(".flywheel"), description="State root of the embedded profile")
    project_dir: Path = Field(
        default=Path("."),
        description="Where dags/, plugins/ and feature_repo/ live: the checkout, or the image's "
        "/opt/flywheel (Airflow's dags_folder and Feast's repo_path, like their own defaults)",
    )

    # --- lake -------------------------------------------------------------------------------
    lake_uri: str | None = Field(default=None, description="file://... or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FLYWHEEL_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint (MinIO); AWS when unset",
    )

    # --- privacy ----------------------------------------------------------------------------
    pseudonym_key: SecretStr | None = Field(
        default=None, description="Key of the keyed hash that pseudonymises user ids"
    )

    # --- ingestion gate ---------------------------------------------------------------------
    gate: dict[str, str | bool | int | float] = Field(
        default_factory=dict,
        description="Overrides of the gate's thresholds (validation.config.GateConfig keys): "
        "FLYWHEEL_GATE as a JSON object, or FLYWHEEL_GATE__<KEY>=value per key",
    )

    raw_retention_days: int | None = Field(
        default=30,
        ge=0,
        description="Days raw/ partitions (raw ids) are kept once their day is validated "
        "(ingestion.retention.expire_raw); 0 or unset keeps them",
    )

    # --- offline engine (core.engine) ---------------------------------------------------------
    engine: Literal["duckdb", "ray"] = Field(
        default="duckdb",
        description="Where offline stages run: out of core on this machine (duckdb) or as "
        "tasks on a Ray cluster (ray)",
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster to submit to (ray://host:10001); local when unset"
    )
    engine_memory_limit: str = Field(
        default="2GB", description="DuckDB memory cap per process; the rest spills to disk"
    )
    engine_threads: int | None = Field(default=None, ge=1, description="DuckDB threads (all)")
    engine_workers: int | None = Field(
        default=None,
        ge=1,
        description="Pieces the duckdb engine runs at once (threads sharing the memory limit; "
        "default: one per CPU, at most 4)",
    )
    engine_temp_dir: Path | None = Field(
        default=None, description="Spill folder (default: $FLYWHEEL_HOME/engine-tmp)"
    )

    # --- Airflow ----------------------------------------------------------------------------
    airflow_host: str = "127.0.0.1"
    airflow_port: int = 8080

    # --- MLflow -----------------------------------------------------------------------------
    mlflow_tracking_uri: str | None = None
    mlflow_port: int = 5000
    registered_model: str = "flywheel-recommender"

    # --- Feast ------------------------------------------------------------------------------
    feast_project: str = "flywheel"
    redis_url: str = "redis://127.0.0.1:6379"
    feast_registry_url: str | None = Field(
        default=None, description="SQL registry (postgresql+psycopg://...) for production"
    )

    # --- Evidently / serving ------------------------------------------------------------------
    evidently_port: int = 8001
    serve_host: str = "127.0.0.1"
    serve_port: int = 8000
    serve_model_poll_s: float = Field(
        default=30.0, gt=0, description="How often serving checks the champion/challenger aliases"
    )
    serve_flush_rows: int = Field(
        default=500, ge=1, description="Impressions+feedback rows buffered before a batch write"
    )
    serve_flush_s: float = Field(
        default=10.0, gt=0, description="Longest time a served row waits in memory before its batch"
    )
    serve_history_days: int = Field(
        default=28, ge=1, description="Days of validated events behind popularity and purchases"
    )
    ab_challenger_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of users served by @challenger, if set"
    )
    serve_max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body serving reads (else 413)"
    )
    serve_feedback_window_s: float = Field(
        default=86_400.0, gt=0, description="Feedback is accepted up to this long after serving"
    )
    serve_simulated_clock: bool = Field(
        default=False,
        description="Accept client-set times (?at=, event_ts) for simulations; production refuses",
    )
    serve_spool_dir: Path | None = Field(
        default=None, description="Feedback spool folder (default: $FLYWHEEL_HOME/serving/spool)"
    )
    serve_spool_max_bytes: int = Field(
        default=256 * 2**20, ge=4096, description="Spool size past which feedback gets 503"
    )
    serve_registry_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest wait for one MLflow alias lookup in serving"
    )

    @model_validator(mode="after")
    def _resolve(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        self.project_dir = self.project_dir.expanduser().resolve()
        if self.lake_uri is None:
            self.lake_uri = (self.home / "lake").as_uri()
        if self.mlflow_tracking_uri is None:
            self.mlflow_tracking_uri = f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"
        return self

    # --- derived locations -------------------------------------------------------------------
    @property
    def dags_folder(self) -> Path:
        return self.project_dir / "dags"

    @property
    def plugins_folder(self) -> Path:
        return self.project_dir / "plugins"

    @property
    def feature_repo(self) -> Path:
        return self.project_dir / "feature_repo"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_artifact_root(self) -> str:
        return (self.home / "mlflow" / "artifacts").as_uri()

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def serving_dir(self) -> Path:
        """Serving's local state: the feedback spool and the last-known models."""
        return self.home / "serving"

    @property
    def evidently_workspace(self) -> Path:
        return self.home / "evidently"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.airflow_host}:{self.airflow_port}"

    def ensure_home(self) -> Path:
        """Create the state root, or raise a one-line :class:`ConfigError` if it is not writable."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"FLYWHEEL_HOME={self.home} is not writable ({exc.strerror or exc})"
            ) from None
        return self.home


@functools.cache
def _cached(env_key: tuple) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """Current settings; re-read when ``FLYWHEEL_*``/``AWS_ENDPOINT_URL`` variables change."""
    key = tuple(
        sorted((k, v) for k, v in os.environ.items() if k.startswith(("FLYWHEEL_", "AWS_")))
    )
    return _cached(key)
