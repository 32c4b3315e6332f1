"""A tiny recommender pyfunc with the real model's contract, and toy validated data: for tests
and the benchmark.

``ToyRecommender(item_scores, known_users)`` ranks items by fixed scores, skips
``exclude_item_ids`` and returns nothing for users outside ``known_users`` (a user "not in the
model"). :func:`register_toy` logs it to MLflow, registers a version and sets aliases -- the same
registry operations training does, on whatever tracking URI the settings name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import mlflow.pyfunc


class ToyRecommender(mlflow.pyfunc.PythonModel):
    def __init__(self, item_scores: Mapping[str, float], known_users: Iterable[str] | None = None):
        self.ranked = sorted(item_scores.items(), key=lambda kv: -kv[1])
        self.known = None if known_users is None else frozenset(known_users)

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        users, items_out, scores_out = [], [], []
        for _, row in model_input.iterrows():
            user = str(row["user_id"])
            k = int(row["k"]) if "k" in row and row["k"] == row["k"] else 10
            exclude = set(row["exclude_item_ids"]) if "exclude_item_ids" in row else set()
            items, scores = [], []
            if self.known is None or user in self.known:
                for item, score in self.ranked:
                    if item not in exclude:
                        items.append(item)
                        scores.append(float(score))
                        if len(items) == k:
                            break
            users.append(user)
            items_out.append(items)
            scores_out.append(scores)
        return pd.DataFrame({"user_id": users, "item_ids": items_out, "scores": scores_out})


def register_toy(
    item_scores: Mapping[str, float],
    known_users: Iterable[str] | None = None,
    aliases: Iterable[str] = ("champion",),
    settings=None,
) -> str:
    """Log, register and alias a :class:`ToyRecommender`; returns the new version."""
    import mlflow
    from mlflow import MlflowClient

    from core.settings import get_settings

    s = settings or get_settings()
    if s.mlflow_tracking_uri.startswith("sqlite:///"):
        from pathlib import Path

        Path(s.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    client = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
    name = "flywheel-serving-toys"
    exp = client.get_experiment_by_name(name)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(name, artifact_location=s.mlflow_artifact_root)
    )
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ToyRecommender(dict(item_scores), known_users),
            pip_requirements=[],
            registered_model_name=s.registered_model,
        )
    version = str(info.registered_model_version)
    for alias in aliases:
        client.set_registered_model_alias(s.registered_model, alias, version)
    return version


def write_validated(
    lake,
    day,
    *,
    items: Mapping[str, str] | None = None,
    users: Mapping[str, str] | None = None,
    events: Iterable[tuple[str, str, str]] = (),
    key: bytes | None = None,
) -> None:
    """Write a small validated day as ingestion would (pseudonymised ``user_id``).

    ``items``: item id → category; ``users``: RAW user id → country; ``events``: (raw user id,
    item id, event type) rows, value 1.0, at noon of ``day``.
    """
    import datetime as dt

    import pyarrow as pa

    from core.contract import EVENTS, ITEMS, USERS
    from core.lake import partition_prefix
    from core.privacy import pseudonymise

    ts = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    part = "part-00000.parquet"
    if items:
        lake.write_parquet(
            partition_prefix("validated", "items", day) + part,
            pa.table(
                {
                    "item_id": list(items),
                    "category": list(items.values()),
                    "price": [1.0] * len(items),
                    "created_ts": [ts] * len(items),
                },
                schema=ITEMS.arrow_schema(),
            ),
        )
    if users:
        lake.write_parquet(
            partition_prefix("validated", "users", day) + part,
            pa.table(
                {
                    "user_id": [pseudonymise(u, key) for u in users],
                    "signup_ts": [ts] * len(users),
                    "country": list(users.values()),
                    "age_bucket": ["25-34"] * len(users),
                },
                schema=USERS.arrow_schema(),
            ),
        )
    rows = list(events)
    if rows:
        lake.write_parquet(
            partition_prefix("validated", "events", day) + part,
            pa.table(
                {
                    "event_id": [f"v-{day}-{n}" for n in range(len(rows))],
                    "user_id": [pseudonymise(u, key) for u, _, _ in rows],
                    "item_id": [i for _, i, _ in rows],
                    "event_type": [t for _, _, t in rows],
                    "value": [1.0] * len(rows),
                    "event_ts": [ts] * len(rows),
                },
                schema=EVENTS.arrow_schema(),
            ),
        )
