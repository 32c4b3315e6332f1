"""The two-tower recommender: encoders, the training task (loss) and the retrieval wrapper.

* :class:`FeatureEncoder` turns frames into tensors: id vocabularies (index 0 = unknown, the
  cold-start slot), categorical vocabularies, numeric standardisation. It is plain data (JSON)
  and travels in checkpoints and in the MLflow model.
* :class:`Tower` embeds one side: ``id embedding + MLP(categorical embeddings, numeric)``,
  L2-normalised. A cold user or item has id 0 and so relies on its features (feature-only path);
  training drops ids at rate ``model.id_dropout`` so that path is learned.
* :class:`TwoTower` holds both towers and the loss: in-batch sampled softmax with the logQ
  popularity correction (Yi et al., 2019), so popular items are not over-punished as negatives.
* :class:`Retriever` is the serving side: catalog item embeddings computed once, a user batch is
  one matmul plus top-k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from training.config import ModelConfig


@dataclass
class FeatureColumns:
    """Which feature columns each tower reads (from ``features`` or the contract)."""

    user_numeric: list[str] = field(default_factory=list)
    user_categorical: list[str] = field(default_factory=list)
    item_numeric: list[str] = field(default_factory=list)
    item_categorical: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return asdict(self)

    @property
    def user(self) -> list[str]:
        return self.user_numeric + self.user_categorical

    @property
    def item(self) -> list[str]:
        return self.item_numeric + self.item_categorical


@dataclass
class SideEncoder:
    """Vocabularies and statistics of one side (user or item)."""

    ids: list[str]
    numeric: list[str]
    numeric_mean: list[float]
    numeric_std: list[float]
    categorical: dict[str, list[str]]  # column -> levels (index = position + 1; 0 = unknown)

    @classmethod
    def fit(
        cls, ids: pd.Series, frame: pd.DataFrame, numeric: list[str], categorical: list[str]
    ) -> SideEncoder:
        mean, std = [], []
        for c in numeric:
            col = (
                pd.to_numeric(frame[c], errors="coerce").astype("float64")
                if c in frame
                else pd.Series([], dtype="float64")
            )
            m = float(col.mean()) if col.notna().any() else 0.0
            s = float(col.std()) if col.notna().sum() > 1 else 1.0
            mean.append(m)
            std.append(s if s > 1e-9 else 1.0)
        cats = {}
        for c in categorical:
            levels = frame[c].dropna().astype(str).unique().tolist() if c in frame else []
            cats[c] = sorted(levels)
        return cls(sorted(pd.Series(ids).astype(str).unique().tolist()), numeric, mean, std, cats)

    def __post_init__(self) -> None:
        self._id_index = {v: i + 1 for i, v in enumerate(self.ids)}
        self._cat_index = {
            c: {v: i + 1 for i, v in enumerate(levels)} for c, levels in self.categorical.items()
        }

    @property
    def cat_sizes(self) -> list[int]:
        return [len(self.categorical[c]) + 1 for c in self.categorical]

    def id_index(self, ids) -> np.ndarray:
        get = self._id_index.get
        return np.fromiter((get(str(v), 0) for v in ids), dtype=np.int64, count=len(ids))

    def encode(self, ids, frame: pd.DataFrame | None) -> dict[str, torch.Tensor]:
        """Tensors ``id`` [n], ``cat`` [n, c], ``num`` [n, m]; missing values use defaults."""
        n = len(ids)
        out = {"id": torch.from_numpy(self.id_index(ids))}
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (c, index) in enumerate(self._cat_index.items()):
            if frame is not None and c in frame:
                get = index.get
                cat[:, j] = [
                    0 if v is None or (isinstance(v, float) and np.isnan(v)) else get(str(v), 0)
                    for v in frame[c].tolist()
                ]
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, c in enumerate(self.numeric):
            if frame is not None and c in frame:
                col = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")
                z = (col - self.numeric_mean[j]) / self.numeric_std[j]
                num[:, j] = np.nan_to_num(np.clip(z, -5, 5), nan=0.0)
        out["cat"] = torch.from_numpy(cat)
        out["num"] = torch.from_numpy(num)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "numeric": self.numeric,
            "numeric_mean": self.numeric_mean,
            "numeric_std": self.numeric_std,
            "categorical": self.categorical,
        }


@dataclass
class FeatureEncoder:
    user: SideEncoder
    item: SideEncoder

    @classmethod
    def fit(
        cls,
        interactions: pd.DataFrame,
        users: pd.DataFrame,
        items: pd.DataFrame,
        columns: FeatureColumns,
    ) -> FeatureEncoder:
        """Vocabularies from the training interactions (ids) and the snapshots (features)."""
        user_frame = pd.concat(
            [
                interactions[[c for c in columns.user if c in interactions]],
                users[[c for c in columns.user if c in users]],
            ]
        )
        item_frame = pd.concat(
            [
                interactions[[c for c in columns.item if c in interactions]],
                items[[c for c in columns.item if c in items]],
            ]
        )
        return cls(
            SideEncoder.fit(
                interactions["user_id"], user_frame, columns.user_numeric, columns.user_categorical
            ),
            SideEncoder.fit(
                interactions["item_id"], item_frame, columns.item_numeric, columns.item_categorical
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user.to_dict(), "item": self.item.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        return cls(SideEncoder(**d["user"]), SideEncoder(**d["item"]))


class Tower(nn.Module):
    """``normalize(id_embedding + MLP(features))``; id 0 is the cold-start slot."""

    def __init__(self, n_ids: int, cat_sizes: list[int], n_numeric: int, cfg: ModelConfig):
        super().__init__()
        self.id_embedding = nn.Embedding(n_ids + 1, cfg.embedding_dim)
        nn.init.normal_(self.id_embedding.weight, std=0.05)
        self.cat_embeddings = nn.ModuleList(nn.Embedding(s, cfg.cat_dim) for s in cat_sizes)
        in_dim = cfg.cat_dim * len(cat_sizes) + n_numeric
        self.features = (
            nn.Sequential(
                nn.Linear(in_dim, cfg.hidden_dim),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.hidden_dim, cfg.embedding_dim),
            )
            if in_dim > 0
            else None
        )
        self.id_dropout = cfg.id_dropout

    def forward(self, id: torch.Tensor, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:  # noqa: A002
        if self.training and self.id_dropout > 0:
            id = torch.where(
                torch.rand(id.shape, device=id.device) < self.id_dropout, torch.zeros_like(id), id
            )  # noqa: A001
        x = self.id_embedding(id)
        if self.features is not None:
            parts = [emb(cat[:, j]) for j, emb in enumerate(self.cat_embeddings)]
            if num.shape[1]:
                parts.append(num)
            x = x + self.features(torch.cat(parts, dim=1))
        return F.normalize(x.float(), dim=-1)


class TwoTower(nn.Module):
    """Both towers and the in-batch softmax loss with logQ correction."""

    def __init__(self, encoder: FeatureEncoder, cfg: ModelConfig):
        super().__init__()
        self.user_tower = Tower(
            len(encoder.user.ids), encoder.user.cat_sizes, len(encoder.user.numeric), cfg
        )
        self.item_tower = Tower(
            len(encoder.item.ids), encoder.item.cat_sizes, len(encoder.item.numeric), cfg
        )
        self.temperature = cfg.temperature
        self.logq_weight = cfg.logq_weight

    def forward(
        self, user: dict[str, torch.Tensor], item: dict[str, torch.Tensor], log_q: torch.Tensor
    ) -> torch.Tensor:
        """Loss of one batch of positive (user, item) pairs; other rows' items are the negatives."""
        u = self.user_tower(user["id"], user["cat"], user["num"])
        v = self.item_tower(item["id"], item["cat"], item["num"])
        logits = (u @ v.T) / self.temperature - self.logq_weight * log_q[None, :]
        # the same item as another row's positive is not a negative for this row
        same = item["id"][None, :] == item["id"][:, None]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same & (item["id"][None, :] > 0), float("-inf"))
        labels = torch.arange(len(u), device=u.device)
        return F.cross_entropy(logits, labels)


def _to(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Move encoded inputs to the model's device (CUDA during training, CPU when serving)."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in tensors.items()}


class Retriever:
    """Serving wrapper: catalog embeddings computed once, users scored with one matmul."""

    def __init__(
        self,
        model: TwoTower,
        encoder: FeatureEncoder,
        items: pd.DataFrame,
        users: pd.DataFrame | None = None,
    ):
        self.model = model.eval()
        self.encoder = encoder
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self._item_pos = {v: i for i, v in enumerate(self.item_ids)}
        with torch.no_grad():
            enc = _to(encoder.item.encode(self.item_ids, items), model)
            self.item_embeddings = model.item_tower(**enc).cpu()
        self.users = (
            users.drop_duplicates("user_id", keep="last").set_index("user_id")
            if users is not None and len(users)
            else None
        )

    @classmethod
    def from_parts(
        cls,
        model: TwoTower,
        encoder: FeatureEncoder,
        item_ids,
        item_embeddings: torch.Tensor,
        users: pd.DataFrame | None,
    ) -> Retriever:
        self = cls.__new__(cls)
        self.model, self.encoder = model.eval(), encoder
        self.item_ids = np.asarray(item_ids, dtype=object)
        self._item_pos = {v: i for i, v in enumerate(self.item_ids)}
        self.item_embeddings = item_embeddings
        self.users = (
            users.drop_duplicates("user_id", keep="last").set_index("user_id")
            if users is not None and len(users)
            else None
        )
        return self

    def user_embeddings(
        self, user_ids: list[str], features: pd.DataFrame | None = None
    ) -> torch.Tensor:
        """Embeddings of users; features from ``features`` or else the stored snapshot."""
        if features is None:
            cols = self.encoder.user.numeric + list(self.encoder.user.categorical)
            if self.users is not None and cols:
                features = self.users.reindex(user_ids)[
                    [c for c in cols if c in self.users.columns]
                ].reset_index(drop=True)
        with torch.no_grad():
            enc = self.encoder.user.encode(user_ids, features)
            return self.model.user_tower(**_to(enc, self.model)).cpu()

    def recommend(
        self,
        user_ids: list[str],
        k: int | list[int] = 10,
        exclude: list[list[str] | None] | None = None,
        features: pd.DataFrame | None = None,
        batch_size: int = 4096,
    ) -> tuple[list[list[str]], list[list[float]]]:
        """Top-``k`` item ids and scores per user, ``exclude``\\ d items masked."""
        ks = [k] * len(user_ids) if isinstance(k, int) else list(k)
        out_ids: list[list[str]] = []
        out_scores: list[list[float]] = []
        n_items = len(self.item_ids)
        for start in range(0, len(user_ids), batch_size):
            chunk = user_ids[start : start + batch_size]
            feats = (
                features.iloc[start : start + batch_size].reset_index(drop=True)
                if features is not None
                else None
            )
            scores = self.user_embeddings(chunk, feats) @ self.item_embeddings.T
            if exclude is not None:
                for r, ex in enumerate(exclude[start : start + batch_size]):
                    if ex is not None and len(ex):
                        pos = [self._item_pos[i] for i in ex if i in self._item_pos]
                        if pos:
                            scores[r, pos] = float("-inf")
            kmax = min(max(ks[start : start + batch_size], default=0), n_items)
            top = torch.topk(scores, kmax, dim=1) if kmax else None
            for r in range(len(chunk)):
                kk = min(ks[start + r], kmax)
                vals = top.values[r, :kk].tolist() if top is not None else []
                idx = top.indices[r, :kk].tolist() if top is not None else []
                keep = [j for j, v in enumerate(vals) if v != float("-inf")]
                out_ids.append([str(self.item_ids[idx[j]]) for j in keep])
                out_scores.append([float(vals[j]) for j in keep])
        return out_ids, out_scores
