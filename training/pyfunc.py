"""The MLflow pyfunc wrapper: ``models:/flywheel-recommender@champion`` maps users to top-K items.

Its input and output frames are the contract in :mod:`training.request`.

Item embeddings for the whole catalog are computed when the model is saved, so serving one
request is a user-tower pass and one matmul. Serving and the infra-validation smoke test load the
model the same way: :func:`training.registry.load_recommender`.
"""

from __future__ import annotations

import pickle
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

from core.errors import FlywheelError
from training.config import TrainingConfig
from training.model import FeatureEncoder, Retriever, TwoTower
from training.request import DEFAULT_K

ARTIFACT = "recommender"  # the artifacts key (a folder with recommender.pt + users.parquet)
HISTORIES = "histories.parquet"  # each known user's last items at the cutoff


def save_artifacts(
    folder: Path, model, encoder, cfg, item_ids, item_embeddings, users, histories=None
) -> Path:
    """Write what the pyfunc needs into ``folder``: weights, encoder, config, catalog
    embeddings, the users snapshot and each known user's last items (``histories``)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "encoder": plain(encoder.to_dict()),
            "config": plain(cfg.to_dict()),
            "item_ids": [str(i) for i in item_ids],
            "item_embeddings": item_embeddings.detach().cpu().float(),
        },
        folder / "recommender.pt",
    )
    users.to_parquet(folder / "users.parquet", index=False)
    hist = histories or {}
    pd.DataFrame(
        {"user_id": list(hist), "item_ids": [list(map(str, v)) for v in hist.values()]}
    ).to_parquet(folder / HISTORIES, index=False)
    return folder


def load_blob(path: str | Path, what: str = "model file") -> dict[str, Any]:
    """A ``torch.save`` file (``recommender.pt``, a checkpoint) with ``weights_only=True``:
    tensors and plain values only; a file that pickles anything else (code that would run on
    load, e.g. a tampered MLflow artifact) is refused with a FlywheelError, never executed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FlywheelError(
            f"{what} {path} holds more than tensors and plain values; refused: "
            f"{str(exc).splitlines()[0][:300]}"
        ) from None


def load_retriever(folder: str | Path) -> Retriever:
    """A :class:`training.model.Retriever` from a folder written by :func:`save_artifacts`."""
    folder = Path(folder)
    blob = load_blob(folder / "recommender.pt")
    cfg = TrainingConfig.from_dict(blob["config"])
    encoder = FeatureEncoder.from_dict(blob["encoder"])
    model = TwoTower(encoder, cfg.model)
    model.load_state_dict(blob["state_dict"])
    users = pd.read_parquet(folder / "users.parquet")
    if "user_id" in users:
        users["user_id"] = users["user_id"].astype(str)
    histories: dict[str, list[str]] = {}
    if (folder / HISTORIES).exists():
        h = pd.read_parquet(folder / HISTORIES)
        histories = {
            str(u): [str(i) for i in items]
            for u, items in zip(h["user_id"], h["item_ids"], strict=True)
        }
    return Retriever.from_parts(
        model, encoder, blob["item_ids"], blob["item_embeddings"], users, histories
    )


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """pyfunc: ``predict(df)`` → ``user_id, item_ids, scores`` (see the module docstring)."""

    def load_context(self, context) -> None:
        self.retriever = load_retriever(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        return recommend_frame(self.retriever, model_input)


def recommend_frame(retriever: Retriever, frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc contract on a :class:`~training.model.Retriever` (also used in-process)."""
    if "user_id" not in frame:
        raise FlywheelError("recommender input needs a user_id column")
    df = frame.reset_index(drop=True)
    users = df["user_id"].astype(str).tolist()
    ks = [DEFAULT_K] * len(df)
    if "k" in df:
        ks = [
            DEFAULT_K if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
            for v in df["k"].tolist()
        ]
    exclude = _lists(df, "exclude_item_ids")
    recent = _lists(df, "recent_item_ids")
    feature_cols = [
        c
        for c in retriever.encoder.user.numeric + list(retriever.encoder.user.categorical)
        if c in df
    ]
    features = None
    if feature_cols:
        features = df[feature_cols].copy()
        # rows without features fall back to the stored snapshot (known users) or defaults
        stored = retriever.users.reindex(users) if retriever.users is not None else None
        if stored is not None:
            for c in feature_cols:
                if c in stored:
                    features[c] = features[c].where(features[c].notna(), stored[c].to_numpy())
        for c in retriever.encoder.user.numeric + list(retriever.encoder.user.categorical):
            if c not in features and stored is not None and c in stored:
                features[c] = stored[c].to_numpy()
    item_ids, scores = retriever.recommend(users, ks, exclude, features, recent=recent)
    return pd.DataFrame({"user_id": users, "item_ids": item_ids, "scores": scores})


def _lists(df: pd.DataFrame, column: str) -> list[list[str] | None] | None:
    """A list-of-ids column as lists of str (None where a row has none); None without it."""
    if column not in df:
        return None
    return [
        None if v is None or (isinstance(v, float) and np.isnan(v)) else [str(i) for i in v]
        for v in df[column].tolist()
    ]


def signature(user_feature_columns: list[str], numeric: set[str]) -> ModelSignature:
    """Explicit signature: optional k, exclusions and user features; list outputs."""
    inputs = [
        ColSpec("string", "user_id"),
        ColSpec("long", "k", required=False),
        ColSpec(Array("string"), "exclude_item_ids", required=False),
        ColSpec(Array("string"), "recent_item_ids", required=False),
    ]
    inputs += [
        ColSpec("double" if c in numeric else "string", c, required=False)
        for c in user_feature_columns
    ]
    outputs = [
        ColSpec("string", "user_id"),
        ColSpec(Array("string"), "item_ids"),
        ColSpec(Array("double"), "scores"),
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def log_recommender(
    folder: Path, example_users: list[str], user_numeric: list[str], user_categorical: list[str]
):
    """Log the pyfunc to the active MLflow run; returns the ``ModelInfo`` (``model_uri``)."""
    example = pd.DataFrame(
        {
            "user_id": example_users[:2] or ["unknown-user"],
            "k": [DEFAULT_K] * max(1, min(2, len(example_users))),
        }
    )
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=RecommenderModel(),
        artifacts={ARTIFACT: str(folder)},
        signature=signature(user_numeric + user_categorical, set(user_numeric)),
        input_example=example,
        pip_requirements=_requirements(),
    )


def plain(value: Any) -> Any:
    """``value`` with numpy scalars made Python numbers, so that a ``weights_only`` load
    accepts it (dicts, lists, tuples, tensors and Python scalars stay what they are)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _requirements() -> list[str]:
    """Pinned to what trained the model (also spares MLflow's slow requirement inference)."""
    return [f"{p}=={version(p)}" for p in ("torch", "pandas", "numpy", "pyarrow", "mlflow")]
