"""The streaming training path: shards encoded once, batches per rank and worker, bounded memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from training import stream as st
from training.config import TrainingConfig
from training.data import CONTRACT_COLUMNS, TrainingSet
from training.model import FeatureEncoder, history_index
from training.train import (
    Dist,
    build_job,
    build_stream_job,
    recency_weights,
    seed_everything,
    train_epoch,
)

SMALL = ["model.embedding_dim=16", "model.hidden_dim=16", "model.history_len=5"]


def small_set(rows: int = 1000, users: int = 60, items: int = 40, seed: int = 0) -> TrainingSet:
    """A set whose rows are told apart by ``item_price`` (the row number): contract features,
    several rows per user at one second (shared histories), a validation day."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    seconds = np.sort(rng.integers(0, 5 * 86_400, rows))
    seconds[1::7] = seconds[::7][: len(seconds[1::7])]  # same-second rows of one user
    stamps = start + pd.to_timedelta(np.sort(seconds), unit="s")
    user = rng.integers(0, users, rows)
    user[1::7] = user[::7][: len(user[1::7])]
    item = (user % 8) * (items // 8) + rng.zipf(1.5, rows) % (items // 8)  # a taste per user
    train = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in user],
            "item_id": [f"i{i}" for i in item],
            "event_timestamp": stamps,
            "split": np.where(stamps >= start + pd.Timedelta(days=4), "val", "train"),
            "user_features_missing": 0.0,
            "user_country": np.array(["DE", "FR", None], dtype=object)[user % 3],
            "user_age_bucket": np.array(["18-24", "25-34"], dtype=object)[user % 2],
            "item_price": np.arange(rows, dtype="float64"),
            "item_features_missing": 0.0,
            "item_category": np.array(["a", "b|c", "d|e|f"], dtype=object)[item % 3],
        }
    )
    users_f = pd.DataFrame({"user_id": [f"u{u}" for u in range(users + 5)]})
    users_f["user_country"] = "US"
    items_f = pd.DataFrame({"item_id": [f"i{i}" for i in range(items)], "item_price": 7.0})
    items_f["item_category"] = "g|h"
    meta = {"feature_columns": CONTRACT_COLUMNS.to_dict(), "window_end": "2026-01-06"}
    holdout = train.iloc[:0][["user_id", "item_id", "event_timestamp"]]
    return TrainingSet(train=train, holdout=holdout, users=users_f, items=items_f, meta=meta)


def streaming(cfg: TrainingConfig, min_rows: int, sparse: bool = False):
    """``cfg`` streaming from ``min_rows`` rows (and with sparse embeddings)."""
    return cfg.with_overrides(
        [f"train.stream_min_rows={min_rows}", f"train.sparse_embeddings={sparse}"]
    )


@pytest.fixture
def shards(tmp_path):
    ts = small_set()
    return ts, st.write_shards(ts.train, tmp_path / "shards", rows_per_shard=130)


def encode(ts, paths, cache, n=5, splits=("train",)):
    encoder = st.fit_encoder(paths, ts.users, ts.items, ts.columns, splits)
    return encoder, st.encode_shards(paths, encoder, cache, n, 30.0, ts.items, splits)


def all_rows(manifest: st.Manifest, column: str) -> np.ndarray:
    return np.concatenate(
        [np.load(manifest.shard_dir(k) / f"{column}.npy") for k in range(len(manifest.shard_rows))]
    )


def test_encoder_fit_shard_by_shard_is_the_whole_frame_fit(shards):
    ts, paths = shards
    assert len(paths) == 8 and sum(len(pd.read_parquet(p)) for p in paths) == len(ts.train)
    rows = ts.split("train")
    whole = FeatureEncoder.fit(rows, ts.users, ts.items, ts.columns)
    by_shard = st.fit_encoder(paths, ts.users, ts.items, ts.columns, ("train",))
    for a, b in ((whole.user, by_shard.user), (whole.item, by_shard.item)):
        assert (a.ids, a.categorical, a.max_tokens, a.numeric) == (
            b.ids,
            b.categorical,
            b.max_tokens,
            b.numeric,
        )
        assert a.numeric_mean == pytest.approx(b.numeric_mean, rel=1e-9)
        assert a.numeric_std == pytest.approx(b.numeric_std, rel=1e-9)
    assert by_shard.item.max_tokens == 3 and "unknown" not in by_shard.user.categorical


def test_shards_are_encoded_once_as_the_in_memory_path_would(shards, tmp_path, monkeypatch):
    ts, paths = shards
    calls = []
    real = st._encode_frame
    monkeypatch.setattr(st, "_encode_frame", lambda *a: calls.append(1) or real(*a))
    encoder, manifest = encode(ts, paths, tmp_path / "cache")
    assert len(calls) == len(paths)
    stream = st.ShardStream(manifest, 64, seed=1)
    for epoch in (1, 2):
        stream.set_epoch(epoch)
        assert sum(len(b["user"]["id"]) for b in stream) == manifest.rows
    again = st.encode_shards(paths, encoder, tmp_path / "cache", 5, 30.0, ts.items, ("train",))
    assert len(calls) == len(paths) and again.folder == manifest.folder  # the cache, not again

    rows = ts.split("train")  # what build_job encodes in memory
    assert manifest.rows == len(rows)
    items = encoder.item.encode(rows["item_id"].tolist(), rows)
    codes = pd.factorize(rows["user_id"])[0]
    stamps = pd.to_datetime(rows["event_timestamp"], utc=True).astype("int64").to_numpy()
    want = history_index(codes, stamps, items["id"].numpy(), 5)
    assert want[:, 0].any() and (all_rows(manifest, "user_hist") == want).all()
    assert (all_rows(manifest, "item_id") == items["id"].numpy()).all()
    assert np.allclose(all_rows(manifest, "item_num"), items["num"].numpy(), atol=1e-6)
    weight = recency_weights(rows["event_timestamp"], 30.0).numpy()
    assert np.allclose(all_rows(manifest, "weight"), weight, rtol=1e-6)
    counts = np.bincount(items["id"].numpy(), minlength=len(encoder.item.ids) + 1)
    assert (manifest.stats()["counts"] == counts).all()
    assert manifest.catalog()["cat"].shape == (len(encoder.item.ids), 1, 3)


def test_every_row_once_per_epoch_across_ranks_and_workers(shards, tmp_path):
    ts, paths = shards
    _, manifest = encode(ts, paths, tmp_path / "cache", splits=("train", "val"))
    every = all_rows(manifest, "item_num")[:, 0]
    assert len(np.unique(every)) == len(every) == 1000
    seen, batches = [], []
    for rank in range(2):
        stream = st.ShardStream(manifest, 32, seed=3, rank=rank, world_size=2, buffer_shards=2)
        stream.set_epoch(5)
        out = list(st.loader(stream, workers=2))
        batches.append(len(out))
        assert len(out) == len(stream) and min(len(b["user"]["id"]) for b in out) >= 2
        assert out[0]["user"]["hist"].dtype == torch.int64 and "weight" in out[0]
        seen += [v for b in out for v in b["item"]["num"][:, 0].tolist()]
    assert batches[0] == batches[1]  # DDP: the same number of steps on every rank
    assert len(seen) == len(set(seen)) == 1000  # 1000 rows over 2 ranks: none left out
    assert set(seen) == set(every.tolist())


def test_seeded_order_is_reproducible_and_changes_per_epoch(shards, tmp_path):
    ts, paths = shards
    _, manifest = encode(ts, paths, tmp_path / "cache")

    def order(seed: int, epoch: int) -> list[float]:
        stream = st.ShardStream(manifest, 50, seed=seed)
        stream.set_epoch(epoch)
        return [v for b in stream for v in b["item"]["num"][:, 0].tolist()]

    assert order(7, 1) == order(7, 1)
    assert order(7, 1) != order(7, 2) and order(7, 1) != order(8, 1)
    assert sorted(order(7, 1)) == sorted(order(8, 2))


def test_the_shuffle_buffer_bounds_memory(shards, tmp_path):
    ts, paths = shards
    _, manifest = encode(ts, paths, tmp_path / "cache")
    for buffer in (1, 3):
        stream = st.ShardStream(manifest, 40, seed=0, buffer_shards=buffer)
        stream.set_epoch(1)
        assert sum(len(b["user"]["id"]) for b in stream) == manifest.rows
        assert max(manifest.shard_rows) < stream.peak_rows <= buffer * 130 + 40
    # every shard with train rows is read once (the last one holds validation rows only)
    assert manifest.shard_rows[-1] == 0
    assert len(st.ShardStream(manifest, 40).plan()) == len(paths) - 1


def test_training_on_the_stream_lowers_the_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    ts = small_set(rows=2000, users=80, items=50)
    base = TrainingConfig.load(None, [*SMALL, "train.batch_size=64", "train.lr=0.01"])
    cfg = streaming(base, 1)
    seed_everything(0)
    job = build_job(cfg, ts, torch.device("cpu"))  # above the threshold: streams
    assert job.stream is not None and job.rows == len(ts.split("train"))
    losses = [train_epoch(job.model, job, cfg.train, e, Dist())[0] for e in range(1, 5)]
    cfg = streaming(base, len(ts.train) + 1)
    seed_everything(0)
    memory = build_job(cfg, ts, torch.device("cpu"))  # below it: in-memory tensors
    assert memory.stream is None and memory.encoder.item.ids == job.encoder.item.ids
    in_memory = [train_epoch(memory.model, memory, cfg.train, e, Dist())[0] for e in range(1, 5)]
    assert losses[-1] < losses[0] - 0.2, losses
    assert losses[-1] == pytest.approx(in_memory[-1], abs=0.1), (losses, in_memory)
    refit = build_stream_job(cfg, ts, torch.device("cpu"), with_val=True)
    assert refit.rows == len(ts.train) > job.rows


def test_sparse_embeddings_train_and_checkpoint(tmp_path, monkeypatch):
    from training.train import SparseDenseAdam

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("training.train.SPARSE_MIN_ROWS", 40)  # the 50-item tables are "large"
    ts = small_set(rows=2000, users=80, items=50)
    cfg = TrainingConfig.load(None, [*SMALL, "train.batch_size=64", "train.lr=0.01"])
    cfg = streaming(cfg, 1, sparse=True)
    seed_everything(0)
    job = build_job(cfg, ts, torch.device("cpu"))
    assert isinstance(job.optimizer, SparseDenseAdam) and job.model.item_tower.id_embedding.sparse
    losses = [train_epoch(job.model, job, cfg.train, e, Dist())[0] for e in range(1, 5)]
    assert losses[-1] < losses[0] - 0.2, losses
    state = job.optimizer.state_dict()
    assert state["sparse"]["state"] and state["dense"]["state"]
    torch.save(state, tmp_path / "opt.pt")
    again = build_job(cfg, ts, torch.device("cpu"))
    again.optimizer.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert again.optimizer.state_dict()["sparse"]["state"].keys() == state["sparse"]["state"].keys()


def test_a_whole_run_streams_and_beats_popularity(tmp_path, monkeypatch):
    """run_training end to end on the streaming path (validation, early stopping, refit on
    train + validation, holdout): the model still beats popularity on a simulated lake."""
    import training.train as tt
    from core.lake import get_lake
    from tests.fixtures.lake import write_simulated
    from training.data import build_training_set, load_training_set
    from training.train import run_training, stream_shards

    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    lake = get_lake()
    end = write_simulated(lake, days=8, users=300, items=120, seed=3)
    fast = ["data.feature_source=contract", "data.window_days=8", "train.epochs=4"]
    cfg = streaming(TrainingConfig.load(None, [*fast, "train.patience=2"]), 1)
    location = build_training_set(lake, end, cfg.data, tmp_path / "set")["location"]
    loaded = []
    monkeypatch.setattr(
        tt, "load_training_set", lambda *a, **kw: loaded.append(kw) or load_training_set(*a, **kw)
    )
    result = run_training(cfg, location, run_key="stream", log_mlflow=False)
    assert loaded == [{"lean": True}]  # the trainer never held the features as pandas
    m = result.metrics
    assert m["holdout_ndcg_at_10"] > m["popularity_ndcg_at_10"], m
    assert result.interactions_per_s > 0 and m["refit"] == 1.0
    cache = tmp_path / "cache" / "train-stream"
    encoded = list((cache / "encoded").iterdir())
    assert len(encoded) == 2  # the train split and train + validation (the refit), once each
    shards = stream_shards(location, cfg)  # the set's own shards were read, none from a frame
    assert shards and not (cache / "shards").exists()
    assert stream_shards(location, streaming(cfg, 10**9)) is None  # small: loaded whole

    in_memory = load_training_set(location)  # the same set handed over in memory: shards written
    again = run_training(cfg, in_memory, run_key="stream-2", log_mlflow=False)
    assert list((cache / "shards").iterdir())
    assert again.metrics["holdout_ndcg_at_10"] > again.metrics["popularity_ndcg_at_10"]


def test_large_shards_are_kept_as_bounded_chunks(shards, tmp_path):
    ts, paths = shards
    big = st.write_shards(ts.train, tmp_path / "big", rows_per_shard=600)  # 2 shards: 600 + 400
    encoder = st.fit_encoder(big, ts.users, ts.items, ts.columns, None)
    manifest = st.encode_shards(big, encoder, tmp_path / "c", 5, 0.0, ts.items, None, chunk_rows=64)
    assert max(manifest.shard_rows) == 64 and manifest.rows == 1000 and not manifest.weighted
    stream = st.ShardStream(manifest, 32, seed=0, buffer_shards=2)
    stream.set_epoch(1)
    seen = [v for b in stream for v in b["item"]["num"][:, 0].tolist()]
    assert len(seen) == len(set(seen)) == 1000 and stream.peak_rows <= 2 * 64 + 32
    assert "weight" not in next(iter(stream))


def test_auto_loss_is_the_full_softmax_on_small_catalogs_in_batch_and_sparse_on_large():
    from training.config import FULL_SOFTMAX_MAX_ITEMS, TrainingConfig, at_catalog_scale

    cfg = TrainingConfig()
    assert cfg.model.loss == "auto"
    small = at_catalog_scale(cfg, FULL_SOFTMAX_MAX_ITEMS)
    assert small.model.loss == "full" and not small.train.sparse_embeddings
    large = at_catalog_scale(cfg, FULL_SOFTMAX_MAX_ITEMS + 1)
    assert large.model.loss == "in_batch" and large.train.sparse_embeddings
    pinned = TrainingConfig.load(None, ["model.loss=full"])
    assert at_catalog_scale(pinned, 10**6) is pinned  # an explicit choice is kept


@pytest.mark.parametrize("where", ["embedded", "s3"])
def test_a_lake_set_streams_from_local_files_and_loads_lean(where, request, tmp_path):
    """A set at a lake prefix (what the DAG passes): the embedded lake's shards are read where
    they lie; an object store's are copied once into the cache (one shard in memory at a time).
    Either way the trainer loads the keys only."""
    from tests.fixtures.lake import write_simulated
    from training.data import build_training_set, load_training_set, train_shards
    from training.train import stream_shards

    lake = request.getfixturevalue("s3_lake" if where == "s3" else "lake")
    end = write_simulated(lake, days=6, users=80, items=40, seed=5)
    cfg = streaming(TrainingConfig.load(None, ["data.feature_source=contract"]), 1)
    location = build_training_set(lake, end, cfg.data)["location"]
    paths = stream_shards(location, cfg)
    assert paths and all(p.is_file() for p in paths)
    assert [p.name for p in paths] == [k.rsplit("/", 1)[-1] for k in train_shards(location)]
    cached = "cache" in str(paths[0])
    assert cached == (where == "s3")
    assert stream_shards(location, cfg) == paths  # copied once: the second call reads the cache
    whole, lean = load_training_set(location), load_training_set(location, lean=True)
    assert lean.lean and len(lean.train) == len(whole.train)
    assert set(lean.train.columns) < set(whole.train.columns)
    assert lean.histories(5) == whole.histories(5)
