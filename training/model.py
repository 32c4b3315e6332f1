"""The two-tower recommender: encoders, the training task (loss) and the retrieval wrapper.

* :class:`FeatureEncoder` turns frames into tensors: id vocabularies (index 0 = unknown, the
  cold-start slot), categorical vocabularies, numeric standardisation. It is plain data (JSON)
  and travels in checkpoints and in the MLflow model.
  A string column may hold several values joined by ``|`` (a film's genres): it is a bag of
  tokens, embedded as the mean of its tokens (``EmbeddingBag``).
* :class:`Tower` embeds one side: ``id embedding + MLP(categorical embeddings, numeric)``,
  L2-normalised; the user tower adds the mean embedding of the user's last
  ``model.history_len`` positive items before the event (:func:`history_index`), so a new or
  light user with a few items gets personal results without an id. A cold user or item has id 0
  and relies on its features and history; training drops ids at rate ``model.id_dropout`` so
  that path is learned.
* A score is ``u·v / T + b_item``: ``b_item`` is a per-item log-prior, started at the log share
  of the recency-weighted training positives and trained with the rest. A user with nothing
  known (no id, no history, no features) is ranked by ``b_item`` alone (``model.cold_prior``):
  a non-personal ranking learned on rows trained with the user hidden (``model.cold_rate``).
  At scoring the personal part is weighted, ``w·u·v / T + b_item``: the trainer picks ``w`` among
  ``model.personal_weights`` on the validation split. A feature column with one value in the
  training data is left out (it tells nobody apart, and would make every user look known).
  A user with a history adds ``model.fresh_weight × -log(item age)`` (days since the item's
  first training positive, floored): returning users rate new releases, new users the classics.
* :class:`TwoTower` holds both towers and the loss: a softmax over the whole catalog
  (``model.loss="full"``, small catalogs) or over in-batch negatives with the logQ popularity
  correction (Yi et al., 2019; ``"in_batch"``), so popular items are not over-punished.
* :class:`Retriever` is the serving side: catalog item embeddings computed once, a user batch is
  one matmul plus top-k; it keeps each known user's last items at the cutoff, and a request may
  bring fresher ones.
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

#: Per side, the 0/1 column that says some feature of the row was missing (filled with defaults).
MISSING_FLAGS = {"user": "user_features_missing", "item": "item_features_missing"}
TOKEN_SEP = "|"  # several values in one string feature: "Action|Comedy"
MAX_TOKENS = 16  # tokens kept per string value (MovieLens films have at most 10 genres)


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
    categorical: dict[str, list[str]]  # column -> tokens (index = position + 1; 0 = unknown)
    max_tokens: int = 1  # width of the token bag of every string column

    @classmethod
    def fit(
        cls, ids: pd.Series, frame: pd.DataFrame, numeric: list[str], categorical: list[str]
    ) -> SideEncoder:
        """Vocabularies and statistics from ``frame``; a column with one value everywhere carries
        nothing and is left out (an import's default country for every user: encoded, it would
        make every user look "known" and add the same vector to each)."""
        numeric = [c for c in numeric if _informative(frame, c, numeric=True)]
        categorical = [c for c in categorical if _informative(frame, c, numeric=False)]
        mean, std = [], []
        for c in numeric:
            col = pd.to_numeric(frame[c], errors="coerce").astype("float64")
            mean.append(float(col.mean()))
            s = float(col.std())
            std.append(s if s > 1e-9 else 1.0)
        cats, width = {}, 1
        for c in categorical:
            values = frame[c].dropna().astype(str).unique().tolist()
            bags = [_tokens(v) for v in values]
            cats[c] = sorted({t for bag in bags for t in bag})
            width = max([width, *(len(b) for b in bags)])
        return cls(
            sorted(pd.Series(ids).astype(str).unique().tolist()),
            numeric,
            mean,
            std,
            cats,
            min(width, MAX_TOKENS),
        )

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
        """Tensors ``id`` [n], ``cat`` [n, c, tokens], ``num`` [n, m]; missing values use defaults
        (unknown token 0, the mean; a ``*_features_missing`` flag is 1 when not given)."""
        n = len(ids)
        out = {"id": torch.from_numpy(self.id_index(ids))}
        cat = np.zeros((n, len(self.categorical), self.max_tokens), dtype=np.int64)
        for j, (c, index) in enumerate(self._cat_index.items()):
            if frame is not None and c in frame:
                cat[:, j, :] = _bag_rows(frame[c].tolist(), index, self.max_tokens)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, c in enumerate(self.numeric):
            is_flag = c in MISSING_FLAGS.values()
            if frame is not None and c in frame:
                col = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype="float64")
            else:
                col = np.full(n, np.nan)
            if is_flag:
                col = np.nan_to_num(col, nan=1.0)  # no features given: they are missing
            z = (col - self.numeric_mean[j]) / self.numeric_std[j]
            num[:, j] = np.nan_to_num(np.clip(z, -5, 5), nan=0.0)
        out["cat"] = torch.from_numpy(cat)
        out["num"] = torch.from_numpy(num)
        out["has_features"] = torch.from_numpy(self._has_features(frame, n))
        return out

    def _has_features(self, frame: pd.DataFrame | None, n: int) -> np.ndarray:
        """1.0 per row whose features are known (its ``*_features_missing`` flag is 0, or, without
        a flag column, some feature value is given), else 0.0."""
        if frame is None or not len(frame.columns):
            return np.zeros(n, dtype=np.float32)
        flags = [c for c in self.numeric if c in MISSING_FLAGS.values() and c in frame]
        if flags:
            raw = pd.to_numeric(frame[flags[0]], errors="coerce").to_numpy(dtype="float64")
            return (np.nan_to_num(raw, nan=1.0) == 0).astype(np.float32)
        cols = [c for c in [*self.numeric, *self.categorical] if c in frame]
        if not cols:
            return np.zeros(n, dtype=np.float32)
        return frame[cols].notna().any(axis=1).to_numpy(dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "numeric": self.numeric,
            "numeric_mean": self.numeric_mean,
            "numeric_std": self.numeric_std,
            "categorical": self.categorical,
            "max_tokens": self.max_tokens,
        }


def _informative(frame: pd.DataFrame, column: str, *, numeric: bool) -> bool:
    """Whether ``column`` tells rows apart: at least two values (numbers), or two tokens or a
    token and a missing value (strings: the missing value encodes as the unknown token)."""
    if column not in frame:
        return False
    if numeric:
        return pd.to_numeric(frame[column], errors="coerce").nunique() > 1
    values = frame[column]
    tokens = {t for v in values.dropna().astype(str).unique() for t in _tokens(v)}
    return tokens_informative(tokens, bool(values.isna().any()))


def tokens_informative(tokens: set[str] | list[str], has_missing: bool) -> bool:
    """A string column's tokens tell rows apart: two of them, or one and a missing value."""
    return len(tokens) > 1 or (len(tokens) == 1 and has_missing)


def _tokens(value: Any) -> list[str]:
    """The tokens of one string value (``"A|B"`` → ``["A", "B"]``); none for a missing one."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [t for t in str(value).split(TOKEN_SEP) if t][:MAX_TOKENS]


def _bag_rows(values: list[Any], index: dict[str, int], width: int) -> np.ndarray:
    """[len(values), width] token indices (0 = padding or unknown token)."""
    out = np.zeros((len(values), width), dtype=np.int64)
    cache: dict[Any, list[int]] = {}
    for r, v in enumerate(values):
        key = v if isinstance(v, str) else None
        bag = cache.get(key) if key is not None else None
        if bag is None:
            bag = [index.get(t, 0) for t in _tokens(v)][:width]
            if key is not None:
                cache[key] = bag
        out[r, : len(bag)] = bag
    return out


def history_index(
    user_ids: np.ndarray, timestamps: np.ndarray, item_index: np.ndarray, n: int
) -> np.ndarray:
    """[rows, n] item indices of each row's user's last ``n`` positives strictly before the row
    (most recent first; 0 = padding). Rows of one user at the same time share a history."""
    rows = len(user_ids)
    out = np.zeros((rows, max(n, 0)), dtype=np.int64)
    if rows == 0 or n <= 0:
        return out
    order = np.lexsort((timestamps, user_ids))
    users, ts, items = user_ids[order], timestamps[order], item_index[order]
    new_user = np.r_[True, users[1:] != users[:-1]]
    user_start = np.maximum.accumulate(np.where(new_user, np.arange(rows), 0))
    new_time = new_user | np.r_[True, ts[1:] != ts[:-1]]
    first_same = np.maximum.accumulate(np.where(new_time, np.arange(rows), 0))
    hist = np.zeros((rows, n), dtype=np.int64)
    for j in range(n):
        src = first_same - 1 - j
        ok = src >= user_start
        hist[ok, j] = items[src[ok]]
    out[order] = hist
    return out


def history_lists(lists: list[list[str] | None], encoder: SideEncoder, n: int) -> np.ndarray:
    """[len(lists), n] item indices of item-id lists (oldest first), the last ``n`` kept."""
    out = np.zeros((len(lists), max(n, 0)), dtype=np.int64)
    if n <= 0:
        return out
    for r, items in enumerate(lists):
        if items:
            idx = encoder.id_index(list(items)[-n:])[::-1]  # most recent first
            out[r, : len(idx)] = idx
    return out


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


class HistorySequence(nn.Module):
    """The history read as a sequence (``model.history_encoder="attention"``): item embeddings
    plus recency positions (0 = the most recent item), ``model.attention_layers`` of
    self-attention over the non-padding items, and the most recent item's output as the
    history's vector (zero for an empty history)."""

    def __init__(self, n_items: int, cfg: ModelConfig):
        super().__init__()
        d = cfg.embedding_dim
        self.items = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.normal_(self.items.weight, std=0.05)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.positions = nn.Embedding(max(cfg.history_len, 1), d)
        nn.init.normal_(self.positions.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d,
            cfg.attention_heads,
            dim_feedforward=2 * d,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, cfg.attention_layers, enable_nested_tensor=False
        )

    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        hist = hist[:, : self.positions.num_embeddings]
        pad = hist == 0
        has = ~pad[:, 0]  # most recent first: an empty history has padding in front
        pad = pad & has[:, None]  # an empty row attends to its padding (its output is dropped)
        pos = torch.arange(hist.shape[1], device=hist.device)
        x = self.items(hist) + self.positions(pos)[None, :, :]
        out = self.encoder(x, src_key_padding_mask=pad)[:, 0]
        return out * has[:, None].to(out.dtype)


class Tower(nn.Module):
    """``normalize(id_embedding + history + MLP(features))``; id 0 is the cold-start slot.

    ``n_history`` > 0 (the user tower): the mean embedding of the history items (an item-index
    bag, 0 = padding) is added; an empty history adds nothing.
    """

    def __init__(
        self,
        n_ids: int,
        cat_sizes: list[int],
        n_numeric: int,
        cfg: ModelConfig,
        n_history: int = 0,
        use_id: bool = True,
    ):
        super().__init__()
        self.id_embedding = nn.Embedding(n_ids + 1 if use_id else 1, cfg.embedding_dim)
        nn.init.normal_(self.id_embedding.weight, std=0.05)
        self.use_id = use_id
        self.cat_embeddings = nn.ModuleList(
            nn.EmbeddingBag(s, cfg.cat_dim, mode="mean", padding_idx=0) for s in cat_sizes
        )
        self.history = (
            nn.EmbeddingBag(n_history + 1, cfg.embedding_dim, mode="mean", padding_idx=0)
            if n_history and cfg.history_encoder == "mean"
            else None
        )
        if self.history is not None:
            nn.init.normal_(self.history.weight, std=0.05)
        self.sequence = (
            HistorySequence(n_history, cfg)
            if n_history and cfg.history_encoder == "attention"
            else None
        )
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

    @property
    def reads_history(self) -> bool:
        return self.history is not None or self.sequence is not None

    def forward(
        self,
        id: torch.Tensor,  # noqa: A002
        cat: torch.Tensor,
        num: torch.Tensor,
        hist: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not self.use_id:
            id = torch.zeros_like(id)  # noqa: A001
        elif self.training and self.id_dropout > 0:
            id = torch.where(  # noqa: A001
                torch.rand(id.shape, device=id.device) < self.id_dropout, torch.zeros_like(id), id
            )
        x = self.id_embedding(id)
        if self.history is not None and hist is not None and hist.shape[1]:
            x = x + self.history(hist)
        if self.sequence is not None and hist is not None and hist.shape[1]:
            x = x + self.sequence(hist)
        if self.features is not None:
            if cat.dim() == 2:  # one token per column (callers of the earlier encoder)
                cat = cat[:, :, None]
            parts = [emb(cat[:, j, :]) for j, emb in enumerate(self.cat_embeddings)]
            if num.shape[1]:
                parts.append(num)
            x = x + self.features(torch.cat(parts, dim=1))
        return F.normalize(x.float(), dim=-1)


class TwoTower(nn.Module):
    """Both towers and the loss: full-catalog softmax, or in-batch softmax with logQ."""

    def __init__(self, encoder: FeatureEncoder, cfg: ModelConfig):
        super().__init__()
        n_items = len(encoder.item.ids)
        self.user_tower = Tower(
            len(encoder.user.ids),
            encoder.user.cat_sizes,
            len(encoder.user.numeric),
            cfg,
            n_history=n_items if cfg.history_len > 0 else 0,
            use_id=cfg.user_id_embedding,
        )
        self.item_tower = Tower(n_items, encoder.item.cat_sizes, len(encoder.item.numeric), cfg)
        # a learned log-prior per item (0: unknown items): the non-personal part of every score
        self.item_bias = nn.Embedding(n_items + 1, 1) if cfg.item_bias else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)
            self.item_bias.weight.requires_grad_(cfg.learn_item_bias)
        self.temperature = cfg.temperature
        # the personal part's weight at scoring (not in the loss): the trainer picks it on the
        # validation split (model.personal_weights) and saves the pick as the only value
        self.personal_weight = float(cfg.personal_weights[0])
        self.logq_weight = cfg.logq_weight
        self.loss = cfg.loss
        self.cold_rate = cfg.cold_rate
        self.cold_prior = cfg.cold_prior and cfg.item_bias
        self.history_len = cfg.history_len
        # -log(age in days) of each item at the training cutoff (set by init_item_freshness; not
        # saved: the catalog's retrieval vectors carry it) and its weight for users with a history
        self.fresh_weight = cfg.fresh_weight
        self.fresh_floor_days = cfg.fresh_floor_days
        self.register_buffer("item_fresh", torch.zeros(n_items + 1), persistent=False)
        # each known user's last items at the cutoff: set by training, used by Retriever
        self.known_histories: dict[str, list[str]] = {}

    def forward(
        self,
        user: dict[str, torch.Tensor],
        item: dict[str, torch.Tensor],
        log_q: torch.Tensor,
        catalog: dict[str, torch.Tensor] | None = None,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of one batch of positive (user, item) pairs (rows weighted by ``weight``).

        ``catalog`` (item tensors of every item index 1..n, in order): softmax over the whole
        catalog; else the other rows' items are the negatives (logQ-corrected).
        """
        user = self._drop_users(user)
        u = self.user_tower(user["id"], user["cat"], user["num"], user.get("hist"))
        u = u * self._known(user)[:, None]
        if catalog is not None:
            v = self.item_tower(catalog["id"], catalog["cat"], catalog["num"])
            logits = (u @ v.T) / self.temperature + self._bias(catalog["id"])[None, :]
            return _mean(F.cross_entropy(logits, item["id"] - 1, reduction="none"), weight)
        v = self.item_tower(item["id"], item["cat"], item["num"])
        logits = (u @ v.T) / self.temperature - self.logq_weight * log_q[None, :]
        logits = logits + self._bias(item["id"])[None, :]
        # the same item as another row's positive is not a negative for this row
        same = item["id"][None, :] == item["id"][:, None]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same & (item["id"][None, :] > 0), float("-inf"))
        labels = torch.arange(len(u), device=u.device)
        return _mean(F.cross_entropy(logits, labels, reduction="none"), weight)

    def init_item_bias(self, counts: torch.Tensor) -> None:
        """Start each item's bias at its log share of the (weighted) training positives: the
        prior is right from the first step, training learns the corrections."""
        if self.item_bias is None:
            return
        with torch.no_grad():
            share = (counts.float() + 0.5) / (counts.float().sum() + 0.5 * len(counts))
            self.item_bias.weight.copy_(torch.log(share)[:, None].to(self.item_bias.weight))

    def init_item_freshness(self, item_index: torch.Tensor, stamps_ns: np.ndarray) -> None:
        """Each item's freshness at the cutoff (the newest training row): ``-log(age in days)``,
        the age since the item's first training positive, floored at ``fresh_floor_days``; items
        without a row count as the oldest."""
        idx = item_index.cpu().numpy().astype(np.int64)
        if len(idx) == 0:
            return
        days = np.asarray(stamps_ns, dtype="float64") / 86_400e9
        first = np.full(len(self.item_fresh), days.min())
        seen = np.full(len(self.item_fresh), np.inf)
        np.minimum.at(seen, idx, days)
        first = np.where(np.isfinite(seen), seen, first)
        age = np.maximum(days.max() - first, self.fresh_floor_days)
        with torch.no_grad():
            self.item_fresh.copy_(torch.from_numpy(-np.log(age)).to(self.item_fresh))

    def _fresh_tilt(self) -> bool:
        return self.fresh_weight > 0

    def _bias(self, item_id: torch.Tensor) -> torch.Tensor:
        if self.item_bias is None:
            return torch.zeros(item_id.shape, device=item_id.device)
        return self.item_bias(item_id).squeeze(-1)

    def item_vectors(self, item: dict[str, torch.Tensor]) -> torch.Tensor:
        """Retrieval vectors of items: ``[v, T·bias]``, so that ``user · item`` ranks as the
        training logits do (``u·v/T + bias``, times the constant T); with ``model.fresh_weight``
        also ``T·freshness`` (a scoring-time tilt for users with a history, not trained)."""
        v = self.item_tower(item["id"], item["cat"], item["num"])
        parts = [v, self.temperature * self._bias(item["id"])[:, None]]
        if self._fresh_tilt():  # [v, T·bias, T·freshness]
            parts.append(self.temperature * self.item_fresh[item["id"]][:, None].to(v))
        return torch.cat(parts, dim=1)

    def user_vectors(self, user: dict[str, torch.Tensor]) -> torch.Tensor:
        """Retrieval vectors of users: ``[u, 1]``, ``[u, 1, w·has_history]`` with the freshness
        tilt (see :meth:`item_vectors`)."""
        u = self.user_tower(user["id"], user["cat"], user["num"], user.get("hist"))
        u = u * (self._known(user) * self.personal_weight)[:, None]
        parts = [u, torch.ones(len(u), 1, device=u.device)]
        if self._fresh_tilt():  # [u, 1, w · has a history]
            parts.append(self.fresh_weight * self._has_history(user)[:, None])
        return torch.cat(parts, dim=1)

    def _has_history(self, user: dict[str, torch.Tensor]) -> torch.Tensor:
        """1 per user with at least one history item (the users the freshness tilt applies to)."""
        hist = user.get("hist")
        if hist is None or not hist.shape[1]:
            return torch.zeros(user["id"].shape, device=user["id"].device)
        return (hist > 0).any(dim=1).float()

    def _drop_users(self, user: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """In training, ``model.cold_rate`` of the rows lose their id and history: the path of
        a user with nothing known is trained on every kind of row."""
        if not self.training or self.cold_rate <= 0:
            return user
        cold = torch.rand(user["id"].shape, device=user["id"].device) < self.cold_rate
        out = dict(user, id=user["id"].masked_fill(cold, 0))
        if "has_features" in user:
            out["has_features"] = user["has_features"].masked_fill(cold, 0.0)
        if "hist" in user:
            out["hist"] = user["hist"].masked_fill(cold[:, None], 0)
        return out

    def _known(self, user: dict[str, torch.Tensor]) -> torch.Tensor:
        """1 per user with an id (when ids are used), a history or features; with
        ``model.cold_prior`` a user with none of them scores by the item prior alone (0 here)."""
        ones = torch.ones(user["id"].shape, device=user["id"].device)
        if not self.cold_prior:
            return ones
        known = user["id"] > 0 if self.user_tower.use_id else ones < 0
        if "hist" in user and user["hist"].shape[1]:
            known = known | (user["hist"] > 0).any(dim=1)
        if "has_features" in user and self.user_tower.features is not None:
            known = known | (user["has_features"] > 0)
        return known.float()


def _mean(losses: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The (weighted) mean of per-row losses."""
    if weight is None:
        return losses.mean()
    return (losses * weight).sum() / weight.sum().clamp_min(1e-12)


def _to(tensors: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Move encoded inputs to the model's device (CUDA during training, CPU when serving)."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in tensors.items()}


#: The most user × item scores :meth:`Retriever.recommend` holds at once (64M float32 = 256 MB).
SCORE_BUDGET = 64 * 2**20


class Retriever:
    """Serving wrapper: catalog embeddings computed once, users scored with one matmul."""

    def __init__(
        self,
        model: TwoTower,
        encoder: FeatureEncoder,
        items: pd.DataFrame,
        users: pd.DataFrame | None = None,
        histories: dict[str, list[str]] | None = None,
    ):
        self.model = model.eval()
        self.histories = _histories(model, histories)
        self.encoder = encoder
        self.item_ids = items["item_id"].astype(str).to_numpy()
        self._item_pos = {v: i for i, v in enumerate(self.item_ids)}
        with torch.no_grad():
            enc = _to(encoder.item.encode(self.item_ids, items), model)
            self.item_embeddings = model.item_vectors(enc).cpu()
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
        histories: dict[str, list[str]] | None = None,
    ) -> Retriever:
        self = cls.__new__(cls)
        self.model, self.encoder = model.eval(), encoder
        self.histories = _histories(model, histories)
        self.item_ids = np.asarray(item_ids, dtype=object)
        self._item_pos = {v: i for i, v in enumerate(self.item_ids)}
        self.item_embeddings = item_embeddings
        self.users = (
            users.drop_duplicates("user_id", keep="last").set_index("user_id")
            if users is not None and len(users)
            else None
        )
        return self

    def user_history(
        self, user_ids: list[str], recent: list[list[str] | None] | None = None
    ) -> list[list[str]]:
        """Each user's items, oldest first: the stored ones at the cutoff, then ``recent`` ones
        (a request's fresher items; the only ones of a user unknown at the cutoff)."""
        out = []
        for r, u in enumerate(user_ids):
            items = list(self.histories.get(str(u), ()))
            extra = recent[r] if recent is not None and r < len(recent) else None
            if extra is not None and len(extra):
                items = items + [str(i) for i in extra]
            out.append(items)
        return out

    def user_embeddings(
        self,
        user_ids: list[str],
        features: pd.DataFrame | None = None,
        recent: list[list[str] | None] | None = None,
    ) -> torch.Tensor:
        """Embeddings of users; features from ``features`` or else the stored snapshot; history
        from the stored one plus ``recent`` items."""
        if features is None:
            cols = self.encoder.user.numeric + list(self.encoder.user.categorical)
            if self.users is not None and cols:
                features = self.users.reindex(user_ids)[
                    [c for c in cols if c in self.users.columns]
                ].reset_index(drop=True)
        n = getattr(self.model, "history_len", 0)
        with torch.no_grad():
            enc = self.encoder.user.encode(user_ids, features)
            if n > 0 and self.model.user_tower.reads_history:
                hist = history_lists(self.user_history(user_ids, recent), self.encoder.item, n)
                enc["hist"] = torch.from_numpy(hist)
            return self.model.user_vectors(_to(enc, self.model)).cpu()

    def recommend(
        self,
        user_ids: list[str],
        k: int | list[int] = 10,
        exclude: list[list[str] | None] | None = None,
        features: pd.DataFrame | None = None,
        batch_size: int = 4096,
        recent: list[list[str] | None] | None = None,
        max_scores: int = SCORE_BUDGET,
    ) -> tuple[list[list[str]], list[list[float]]]:
        """Top-``k`` item ids and scores per user, ``exclude``\\ d items masked; ``recent``: per
        user, item ids seen since the cutoff (added to the stored history).

        Users are scored in batches of at most ``max_scores`` user × item scores (256 MB of
        float32 by default), so memory is bounded by the batch whatever the catalog's size.
        """
        ks = [k] * len(user_ids) if isinstance(k, int) else list(k)
        out_ids: list[list[str]] = []
        out_scores: list[list[float]] = []
        n_items = len(self.item_ids)
        batch_size = max(1, min(batch_size, max_scores // max(n_items, 1)))
        for start in range(0, len(user_ids), batch_size):
            chunk = user_ids[start : start + batch_size]
            feats = (
                features.iloc[start : start + batch_size].reset_index(drop=True)
                if features is not None
                else None
            )
            rec = recent[start : start + batch_size] if recent is not None else None
            u = self.user_embeddings(chunk, feats, rec)
            # a catalog saved without the freshness column scores without it
            scores = u[:, : self.item_embeddings.shape[1]] @ self.item_embeddings.T
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


def _histories(model: nn.Module, given: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """The histories a retriever uses: the given ones, else those the model was trained with."""
    if given is not None:
        return {str(u): [str(i) for i in items] for u, items in given.items()}
    return dict(getattr(model, "known_histories", {}) or {})
