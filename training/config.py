"""All training defaults in one typed config, grouped, with the reason beside each number.

A config is built from the defaults, then a file (``--config FILE``: TOML or JSON with the same
groups), then ``--set group.key=value`` overrides. Overrides are type-checked and unknown keys
are rejected with a :class:`TrainingConfigError` that names the key. The whole config goes into
the checkpoint and into MLflow (as flat ``group.key`` params).

The ``train_recommender`` DAG's Params (:data:`PARAM_KEYS`) default to ``None``: "use this
config", so an Airflow run and ``python -m training.train`` start from the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import FlywheelError
from core.names import MIN_POSITIVE_RATING, POSITIVE_EVENT_TYPES


class TrainingConfigError(FlywheelError):
    """A training config file or override is invalid (unknown key, wrong type)."""


@dataclass
class DataConfig:
    # two weeks: weekly patterns, short enough to track drift; "all": every validated day
    # (real histories: `flywheel import` suggests one from the data)
    window_days: int | str = 14
    holdout_days: int = 1  # the last day of the window is the holdout (temporal split)
    val_days: int = 1  # the day before the holdout steers early stopping
    positive_events: tuple[str, ...] = POSITIVE_EVENT_TYPES  # a view is exposure, not preference
    min_rating: float = MIN_POSITIVE_RATING  # a rating counts as positive only at 4 or 5 stars
    feature_source: str = (
        "feast"  # "feast" (recommender_v1, point-in-time) or "contract" (attributes only)
    )
    max_eval_users: int = 5000  # caps evaluation cost on big holdouts (deterministic sample)


@dataclass
class ModelConfig:
    embedding_dim: int = (
        64  # ranking quality saturates around here on the catalog sizes we simulate
    )
    hidden_dim: int = 64  # one hidden layer per tower mixes id and feature signals
    cat_dim: int = 8  # categorical features have few levels
    dropout: float = 0.3  # ~10 positives per user: the feature MLP overfits without it
    id_dropout: float = (
        0.3  # share of rows trained without the id: cold-start path + less id memorising
    )
    history_len: int = 50  # the user tower pools the last N positive items before the event
    # how the user tower reads the history: "mean" (a bag: the items' mean embedding) or
    # "attention" (a sequence: self-attention over the items and their recency positions; the
    # most recent item's output is the history's vector). ml-latest-small's rolling-origin folds:
    # attention 0.341 vs mean 0.348 NDCG@10, at 3-5x the training time
    history_encoder: str = "mean"
    attention_heads: int = 2
    attention_layers: int = 1
    cold_rate: float = 0.2  # rows trained as a user with nothing known: the cold-start path
    cold_prior: bool = True  # nothing known (no id, history, features): rank by the item prior
    # a per-user id vector on top of the history memorises (ml-latest-small: -0.04 NDCG@10)
    user_id_embedding: bool = False
    item_bias: bool = True  # a log-prior per item (starts at the recency-weighted popularity)
    learn_item_bias: bool = True  # train it (False: the prior stays the weighted popularity)
    # temperature of the personal part (unit vectors); the item prior carries popularity.
    # Picked on the ml-latest-small validation split with the freshness tilt (best-epoch val
    # NDCG@10 over temperature x fresh_weight: 0.5 x 0.4 → 0.226, 0.5 x 0.5 → 0.252,
    # 1.0 x 0.4 → 0.250, 1.0 x 0.5 → 0.253, 2.0 x 0.4 → 0.246, 2.0 x 0.5 → 0.247: 37 users,
    # differences of 0.01 are noise). 0.5 and 1.0 tie there; on the simulated world 1.0 costs
    # ~20 % NDCG@10 (make demo v1: 0.253 vs 0.313 at 0.5), so 0.5.
    temperature: float = 0.5
    # users with a history tilt toward fresh items: score += w * -log(item age in days), the age
    # since the item's first positive, floored at fresh_floor_days. Returning users rate new
    # releases (ml-latest-small: 43 % of warm users' validation positives are films of the last
    # two years, 9 % of new users'); new users get the plain prior. Picked on the validation
    # split (at temperature 0.5, val NDCG@10: w 0 → 0.213, 0.25 → 0.220, 0.4 → 0.226,
    # 0.6 → 0.221; see temperature for the joint pick); 0 disables it
    fresh_weight: float = 0.5
    fresh_floor_days: float = 30.0
    # the personal part's weight at scoring (score = w·u·v/T + prior + freshness), picked on the
    # validation split after early stopping (the first value wins ties; one value: no choice).
    # On real data the prior carries most of what a returning user rates next: ml-latest-small's
    # rolling-origin folds (249 users) score w 0.5 above 1.0 in all three configs tried
    # (+0.002..0.004 NDCG@10); on the simulated world taste dominates and 1.0 is picked
    personal_weights: tuple[float, ...] = (1.0, 0.5)
    # "full": softmax over the whole catalog (exact; a step costs every item);
    # "in_batch": the other rows' items are the negatives (logQ-corrected);
    # "auto": full up to FULL_SOFTMAX_MAX_ITEMS items, else in_batch with sparse embedding updates
    loss: str = "auto"
    logq_weight: float = 1.0  # popularity (logQ) correction of in-batch negatives; 0 disables it


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 512  # in-batch negatives: bigger batches give more negatives per positive
    lr: float = 0.004  # the prior starts right (item bias init); ML peaks at epoch 2-3
    weight_decay: float = 1e-6
    patience: int = 3  # epochs without validation NDCG@10 gain before stopping
    refit: bool = True  # after early stopping: retrain on train + validation, best epoch count
    recency_half_life_days: float = 365.0  # a row's loss weight halves per this age (0: equal)
    seed: int = 42
    device: str = "auto"  # "auto" picks CUDA when present, else CPU
    num_threads: int = 1  # torch CPU threads (0 = torch default): ops this small lose more to thread sync than they gain
    epoch_delay_s: float = 0.0  # pause after each checkpoint; only tests use it (to kill mid-run)
    # train splits of at least this many rows stream from Parquet shards encoded once
    # (training/stream.py): in-memory tensors take ~0.5 KB a row (1 GB at 2M); demo, tests below
    stream_min_rows: int = 2_000_000
    # DataLoader processes reading the stream ahead: 0 on CPU (the stream alone yields ~2M rows/s
    # in-process; a worker's per-tensor IPC cut it to 55k rows/s here), 2-4 for a GPU
    loader_workers: int = 0
    # sparse gradients + lazy SparseAdam for embedding tables of >= 1024 rows: a step costs the
    # batch's rows, not the catalog (100k items, in_batch, CPU: 2.1k -> 12.5k interactions/s).
    # No weight decay on those tables; gloo/CPU only (NCCL has no sparse all-reduce)
    sparse_embeddings: bool = False


@dataclass
class EvalConfig:
    ks: tuple[int, ...] = (10, 20)
    exclude_seen: bool = True  # false = no exclusions at all (same as exclude="none")
    # not recommended in evaluation: "all" items the user interacted with before the holdout
    # (any event: a film rated 2 stars is no hit), "positives" (earlier positives), "none"
    exclude: str = "all"
    # recent-popularity windows (days); the one scoring best on the validation split is used
    recent_days: tuple[int, ...] = (7, 30, 90, 365)
    # every model is judged against these (training/baselines.py)
    baselines: tuple[str, ...] = ("popularity", "recent_popularity", "als", "bpr", "item_knn")
    bootstrap: int = 1000  # resamples of the holdout users for the 95 % intervals (seeded)


@dataclass
class PromotionConfig:
    margin: float = 0.0  # candidate NDCG@10 must beat the champion's by more than this (absolute)
    recall_tolerance: float = 0.01  # candidate Recall@20 may drop at most this much (absolute)
    # candidate NDCG@10 must exceed the strongest baseline's x (1 - this): 5 % is well inside the
    # 95 % interval of a 50-300-user holdout (a tie); a clearly worse model still fails
    baseline_tolerance: float = 0.05
    # which baselines the candidate must beat: "non_personal" (popularity and recent
    # popularity: what serving would answer without a model) or "strongest" (also implicit's
    # ALS, BPR and item-kNN). Every baseline is measured, logged and shown either way, and the
    # decision names the strongest one
    must_beat: str = "non_personal"
    smoke_requests: int = 20  # requests the infra-validation smoke test sends to the loaded model


#: Largest catalog ``model.loss="auto"`` trains with a full softmax. Above it a step over the
#: whole catalog dominates (CPU, 100k items: ~150 rows/s) and in-batch negatives with sparse
#: embedding updates train ~100x faster (benchmarks/bench_scale.py); below it the full softmax
#: is exact and what the demo and ml-latest-small (9.7k items) were tuned with.
FULL_SOFTMAX_MAX_ITEMS = 20_000


@dataclass
class TrainingConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)

    # --- building ---------------------------------------------------------------------------
    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: list[str] | None = None
    ) -> TrainingConfig:
        """Defaults, then the file at ``path`` (TOML/JSON), then ``k=v`` overrides."""
        cfg = cls()
        if path is not None:
            cfg = cfg.merged(read_config_file(Path(path)))
        if overrides:
            cfg = cfg.with_overrides(overrides)
        return cfg

    def merged(self, values: dict[str, Any]) -> TrainingConfig:
        """A copy with nested ``{group: {key: value}}`` values applied (type-checked)."""
        flat: dict[str, Any] = {}
        for group, sub in values.items():
            if not isinstance(sub, dict):
                raise TrainingConfigError(f"config group {group!r} must be a table of keys")
            for key, value in sub.items():
                flat[f"{group}.{key}"] = value
        return self._apply(flat, from_text=False)

    def with_overrides(self, overrides: list[str]) -> TrainingConfig:
        """A copy with ``group.key=value`` strings applied (values parsed to the field's type)."""
        flat = {}
        for item in overrides:
            if "=" not in item:
                raise TrainingConfigError(f"override {item!r} is not of the form group.key=value")
            key, value = item.split("=", 1)
            flat[key.strip()] = value.strip()
        return self._apply(flat, from_text=True)

    def _apply(self, flat: dict[str, Any], *, from_text: bool) -> TrainingConfig:
        groups = {
            f.name: dataclasses.replace(getattr(self, f.name)) for f in dataclasses.fields(self)
        }
        for dotted, raw in flat.items():
            group_name, _, key = dotted.partition(".")
            group = groups.get(group_name)
            if group is None or not key:
                raise TrainingConfigError(
                    f"unknown config key {dotted!r} (groups: {', '.join(groups)})"
                )
            fields = {f.name: f for f in dataclasses.fields(group)}
            if key not in fields:
                raise TrainingConfigError(
                    f"unknown config key {dotted!r} (known in {group_name}: {', '.join(fields)})"
                )
            hint = typing.get_type_hints(type(group))[key]
            setattr(group, key, _coerce(dotted, raw, hint, from_text))
        cfg = TrainingConfig(**groups)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Reject values that cannot train (one line naming the key)."""
        checks = [
            (
                "data.window_days",
                self.data.window_days == "all"
                or (
                    isinstance(self.data.window_days, int)
                    and self.data.window_days >= self.data.holdout_days + self.data.val_days + 1
                ),
            ),
            ("data.holdout_days", self.data.holdout_days >= 1),
            ("data.val_days", self.data.val_days >= 0),
            ("data.feature_source", self.data.feature_source in ("feast", "contract")),
            ("model.embedding_dim", self.model.embedding_dim >= 2),
            ("model.id_dropout", 0.0 <= self.model.id_dropout < 1.0),
            ("model.temperature", self.model.temperature > 0),
            ("model.history_len", self.model.history_len >= 0),
            ("model.cold_rate", 0.0 <= self.model.cold_rate < 1.0),
            ("model.fresh_weight", self.model.fresh_weight >= 0),
            ("model.fresh_floor_days", self.model.fresh_floor_days > 0),
            ("train.recency_half_life_days", self.train.recency_half_life_days >= 0),
            ("model.loss", self.model.loss in ("auto", "full", "in_batch")),
            (
                "model.personal_weights",
                len(self.model.personal_weights) > 0
                and all(w >= 0 for w in self.model.personal_weights),
            ),
            ("model.history_encoder", self.model.history_encoder in ("mean", "attention")),
            (
                "model.attention_heads",
                self.model.attention_heads >= 1
                and self.model.embedding_dim % self.model.attention_heads == 0,
            ),
            ("model.attention_layers", self.model.attention_layers >= 1),
            ("train.epochs", self.train.epochs >= 1),
            ("train.batch_size", self.train.batch_size >= 2),
            ("train.lr", self.train.lr > 0),
            ("train.stream_min_rows", self.train.stream_min_rows >= 1),
            ("train.loader_workers", self.train.loader_workers >= 0),
            (
                "train.device",
                self.train.device in ("auto", "cpu", "cuda")
                or self.train.device.startswith("cuda:"),
            ),
            ("eval.ks", len(self.eval.ks) > 0 and all(k > 0 for k in self.eval.ks)),
            ("eval.exclude", self.eval.exclude in ("all", "positives", "none")),
            ("eval.recent_days", all(d >= 1 for d in self.eval.recent_days)),
            ("eval.bootstrap", self.eval.bootstrap >= 0),
            (
                "eval.baselines",
                set(self.eval.baselines)
                <= {"popularity", "recent_popularity", "als", "bpr", "item_knn"},
            ),
            ("promotion.baseline_tolerance", 0.0 <= self.promotion.baseline_tolerance < 1.0),
            ("promotion.must_beat", self.promotion.must_beat in ("non_personal", "strongest")),
        ]
        for key, ok in checks:
            if not ok:
                group, _, name = key.partition(".")
                value = getattr(getattr(self, group), name)
                raise TrainingConfigError(f"config value {key}={value!r} is out of range")

    # --- exporting --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def flat(self) -> dict[str, Any]:
        """``{"group.key": value}`` for MLflow params."""
        return {f"{g}.{k}": v for g, sub in self.to_dict().items() for k, v in sub.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        return cls().merged(values)

    def value(self, dotted: str) -> Any:
        """The value of one ``group.key`` (a :class:`TrainingConfigError` for an unknown key)."""
        flat = self.flat()
        if dotted not in flat:
            raise TrainingConfigError(f"unknown config key {dotted!r}")
        return flat[dotted]


#: The ``train_recommender`` DAG's Params (manual runs) and the config key each one sets.
PARAM_KEYS: dict[str, str] = {
    "epochs": "train.epochs",
    "learning_rate": "train.lr",
    "embedding_dim": "model.embedding_dim",
    "window_days": "data.window_days",
    "promotion_margin": "promotion.margin",
    "feature_source": "data.feature_source",
}


def config_from_params(
    params: dict[str, Any], base: TrainingConfig | None = None
) -> TrainingConfig:
    """The training config with the DAG Params applied: ``None`` (the default) keeps the config's
    value; ``overrides`` (a list of ``group.key=value``) is applied last."""
    cfg = base or TrainingConfig()
    values: dict[str, dict[str, Any]] = {}
    for param, dotted in PARAM_KEYS.items():
        if params.get(param) is not None:
            group, key = dotted.split(".")
            values.setdefault(group, {})[key] = params[param]
    extra = params.get("overrides") or []
    cfg = cfg.merged(values) if values else cfg
    return cfg.with_overrides(list(extra)) if extra else cfg


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON config file into nested groups."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise TrainingConfigError(
            f"cannot read config file {path}: {exc.strerror or exc}"
        ) from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise TrainingConfigError(f"config file {path} is not valid: {exc}") from None


def _coerce_union(raw: Any, args: tuple[Any, ...], from_text: bool) -> Any:
    """``int | str`` (``data.window_days``: a number of days or "all"); no optional fields."""
    if args != (int, str):
        raise TypeError
    if isinstance(raw, bool):
        raise TypeError
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    raise TypeError


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, raw: Any, hint: Any, from_text: bool) -> Any:
    """Convert ``raw`` to the field type ``hint``; raise naming ``key`` when it does not fit."""
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            (inner, _ellipsis) = typing.get_args(hint)
            if from_text and isinstance(raw, str):
                raw = [p for p in raw.split(",") if p.strip()]
            if not isinstance(raw, list | tuple):
                raise TypeError
            return tuple(_coerce(key, r, inner, from_text) for r in raw)
        if origin in (typing.Union, types.UnionType):
            return _coerce_union(raw, typing.get_args(hint), from_text)
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            if from_text and str(raw).lower() in _TRUE | _FALSE:
                return str(raw).lower() in _TRUE
            raise TypeError
        if hint is int:
            if isinstance(raw, bool):
                raise TypeError
            if isinstance(raw, int):
                return raw
            if from_text and isinstance(raw, str):
                return int(raw)
            raise TypeError
        if hint is float:
            if isinstance(raw, bool):
                raise TypeError
            if isinstance(raw, int | float):
                return float(raw)
            if from_text and isinstance(raw, str):
                return float(raw)
            raise TypeError
        if hint is str:
            if isinstance(raw, str):
                return raw.strip() if from_text else raw
            raise TypeError
    except (TypeError, ValueError):
        pass
    name = getattr(hint, "__name__", str(hint))
    raise TrainingConfigError(f"config key {key!r} expects {name}, got {raw!r}")


def at_catalog_scale(cfg: TrainingConfig, n_items: int) -> TrainingConfig:
    """``cfg`` with ``model.loss="auto"`` decided for a catalog of ``n_items`` items."""
    if cfg.model.loss != "auto":
        return cfg
    if n_items <= FULL_SOFTMAX_MAX_ITEMS:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, loss="full"))
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, loss="in_batch"),
        train=dataclasses.replace(cfg.train, sparse_embeddings=True),
    )
