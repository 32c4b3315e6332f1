"""Scale benchmark: the offline loop at a real company's volume, stage by stage.

``python -m benchmarks --only scale [--sizes 4:250000,14:0] [--keep DIR]``

The ``large`` simulation preset's world (about 1M users, 100k items, long-tailed popularity) at
three sizes: 4 days of 250k events (~1M), 4 days of 1.25M (~5M) and 14 days at the preset's own
~1.5M a day (~20M). For each size every stage runs in a fresh process
(:func:`benchmarks.common.run_isolated`), so its peak RSS is its own:

ingest (the gate) → features → materialize (Redis) → training set → one training epoch +
evaluation → drift.

rows/s are over the stage's work (imports and setup excluded); wall s is the whole process.
Baselines are measured in the same run on the same data: a bare pyarrow read + write of the raw
events (ingest), Feast's stock ``materialize`` (on a 100k-row cut of the same snapshot: at its
speed the full snapshot takes minutes), Feast's stock file offline store on the same entity rows
(smallest size only: its dask scan reads every snapshot of the window) and a bare PyTorch loop of
the same model over the same in-memory tensors. Targets (issue 17): peak RSS < 6 GiB per stage at
every size; training ≥ 100k interactions/s and ≥ 0.7× the bare loop; materialization ≥ 50k
rows/s; training set ≥ 500k rows/s. ``--keep`` keeps the lakes and reuses their simulations.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.bench_features import postgres_db
from benchmarks.common import Row, run_isolated

START = dt.date(2026, 1, 5)
GIB = 1024.0  # MiB
RSS_TARGET_MIB = 6 * GIB


KEY = "0123456789abcdef" * 4  # a pseudonymisation key of the production length


def _env(home: Path, project: str, online: bool = False) -> dict[str, str]:
    """Settings of one stage process; ``online``: the production online store (Redis, SQL
    registry on the Postgres database the run created), else the embedded profile."""
    env = {
        "FLYWHEEL_HOME": str(home),
        "FLYWHEEL_PSEUDONYM_KEY": KEY,
        "FLYWHEEL_FEAST_PROJECT": project,
        "FLYWHEEL_REDIS_URL": "redis://127.0.0.1:6379/0",
        "FLYWHEEL_ENGINE_MEMORY_LIMIT": "3GB",
        "FLYWHEEL_PROFILE": "production" if online else "embedded",
    }
    os.environ.pop("FLYWHEEL_LAKE_URI", None)
    if online:
        env["FLYWHEEL_FEAST_REGISTRY_URL"] = os.environ["BENCH_SCALE_REGISTRY"]
    else:
        os.environ.pop("FLYWHEEL_FEAST_REGISTRY_URL", None)
    os.environ.update(env)
    return env


# --- stages (module level: each runs in a spawned process) -------------------------------------


def simulate(home: str, days: int, events_per_day: int | None, quick: bool) -> dict:
    """``days`` days of the large preset (``events_per_day`` a day) into ``home``'s lake."""
    _env(Path(home), "bench_scale")
    from core.lake import get_lake
    from simulation.simulator import simulate as sim

    preset = "medium" if quick else "large"
    summary = sim(get_lake(), days=days, preset=preset, start=START, events_per_day=events_per_day)
    return {"events": summary.total_events, "per_day": summary.events_per_day}


def bare_copy(home: str) -> dict:
    """Baseline of ingest: pyarrow reads every raw events file and writes it back."""
    import pyarrow.parquet as pq

    rows = 0
    for path in sorted((Path(home) / "lake" / "raw" / "events").rglob("*.parquet")):
        table = pq.read_table(path)
        pq.write_table(table, Path(home) / "bare.parquet", compression="zstd")
        rows += table.num_rows
    return {"rows": rows}


def ingest(home: str, days: int) -> dict:
    _env(Path(home), "bench_scale")
    from ingestion.bulk import ingest_range

    end = START + dt.timedelta(days=days - 1)
    t0 = time.perf_counter()
    res = ingest_range(START, end, now=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    if res["quarantined_days"]:
        raise RuntimeError(f"the gate quarantined {res['quarantined_days']}: {res['failures']}")
    return {"rows": res["rows"], "work_s": time.perf_counter() - t0}


def features(home: str, days: int) -> dict:
    _env(Path(home), "bench_scale")
    from features import store

    all_days = [START + dt.timedelta(days=d) for d in range(days)]
    t0 = time.perf_counter()
    out = store.compute_days(all_days)
    work_s = time.perf_counter() - t0
    return {"rows": _validated_rows(all_days), "days": out["days"], "work_s": work_s}


def _validated_rows(days: list[dt.date]) -> int:
    from core.engine import get_engine

    return get_engine().dataset("validated", "events", days).count_rows()


def _days(days: int) -> list[dt.date]:
    return [START + dt.timedelta(days=d) for d in range(days)]


def materialize(home: str, days: int) -> dict:
    """The newest day's snapshots into the online store (Redis), the platform's path."""
    _env(Path(home), Path(home).name.replace("-", "_"), online=True)
    from features import store

    fs = store.get_store()
    store.apply_if_changed(fs)
    t0 = time.perf_counter()
    out = store.materialize_day_fast(_days(days)[-1], store=fs)
    return {"rows": sum(out["rows"].values()), "work_s": time.perf_counter() - t0}


def cut_snapshot(home: str, cut_home: str, days: int, rows: int) -> None:
    """``cut_home``'s lake: the newest day's feature snapshots, first ``rows`` rows per view."""
    import pyarrow.parquet as pq

    day = _days(days)[-1].isoformat()
    for path in (Path(home) / "lake" / "features").glob(f"*/dt={day}/*.parquet"):
        target = Path(cut_home) / "lake" / path.relative_to(Path(home) / "lake")
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(path).slice(0, rows), target)


def materialize_stock(home: str, days: int) -> dict:
    """Feast's stock ``materialize`` of the same day (on a cut of the snapshot)."""
    _env(Path(home), Path(home).name.replace("-", "_"), online=True)
    from features import store

    fs = store.get_store()
    store.apply_if_changed(fs)
    day = _days(days)[-1]
    start, end = store.interval_of(day)
    t0 = time.perf_counter()
    fs.materialize(start_date=start, end_date=end)
    work_s = time.perf_counter() - t0
    n = sum(pq_rows(p) for p in (Path(home) / "lake" / "features").glob(f"*/dt={day}/*.parquet"))
    return {"rows": n, "work_s": work_s}


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def teardown(home: str) -> None:
    _env(Path(home), Path(home).name.replace("-", "_"), online=True)
    from features import store

    store.get_store().teardown()


def training_set(home: str, days: int) -> dict:
    _env(Path(home), "bench_scale")
    from core.lake import get_lake
    from training.config import TrainingConfig
    from training.data import build_training_set

    cfg = TrainingConfig.load(None, [f"data.window_days={days}"])
    t0 = time.perf_counter()
    out = build_training_set(get_lake(), _days(days)[-1], cfg.data, Path(home) / "set")
    return {
        "rows": out["rows"]["train"] + out["rows"]["val"],
        "location": out["location"],
        "work_s": time.perf_counter() - t0,
    }


def entity_rows(location: str, n: int):
    import pyarrow.parquet as pq

    from training.data import train_shards

    shard = train_shards(location)[-1]
    table = pq.read_table(shard, columns=["user_id", "item_id", "event_timestamp"])
    return table.slice(0, n)


def join_platform(home: str, location: str, n: int) -> dict:
    """The point-in-time join of :mod:`features.pit` on ``n`` of the set's entity rows."""
    _env(Path(home), "bench_scale")
    from features.pit import point_in_time

    rows = entity_rows(location, n)
    t0 = time.perf_counter()
    out = point_in_time(rows, missing_ok=True)
    return {"rows": out.num_rows, "seconds": time.perf_counter() - t0}


def join_feast(home: str, location: str, n: int) -> dict:
    """Feast's stock file offline store (``get_historical_features``) on the same rows."""
    _env(Path(home), "bench_scale")
    from features import store

    fs = store.get_store()
    store.apply_if_changed(fs)
    rows = entity_rows(location, n).to_pandas()
    t0 = time.perf_counter()
    out = store.build_training_frame(rows, store=fs, missing_ok=True)
    return {"rows": len(out), "seconds": time.perf_counter() - t0}


#: The default model (``model.loss="auto"``: at 100k items in-batch negatives with sparse
#: embedding updates), one epoch, no refit.
SCALE_TRAINING = ["train.epochs=1", "train.refit=false"]


def train_epoch(home: str, days: int, location: str) -> dict:
    """One epoch of the streaming trainer on the set, then its evaluation (sampled users)."""
    _env(Path(home), "bench_scale")
    from training.config import TrainingConfig
    from training.train import run_training

    cfg = TrainingConfig.load(None, [f"data.window_days={days}", *SCALE_TRAINING])
    t0 = time.perf_counter()
    r = run_training(cfg, location, run_key="bench-scale", log_mlflow=False)
    return {
        "interactions_per_s": r.interactions_per_s,
        "wall_s": time.perf_counter() - t0,
        "ndcg_at_10": r.metrics.get("holdout_ndcg_at_10"),
        "holdout_users": r.metrics.get("holdout_users"),
    }


def drift(home: str, days: int) -> dict:
    _env(Path(home), "bench_scale")
    from core.lake import get_lake
    from monitoring.monitor import check_drift

    all_days = _days(days)
    ref = (all_days[0], all_days[-2]) if days > 1 else (all_days[0], all_days[0])
    t0 = time.perf_counter()
    result, _ = check_drift(get_lake(), all_days[-1], ref)
    return {
        "rows": result.reference_rows + result.current_rows,
        "sampled": result.sampled_rows,
        "work_s": time.perf_counter() - t0,
    }


def prepare_large(home: str, days: int = 14, events_per_day: int | None = None) -> str:
    """The large size's training set under ``home`` (simulate → gate → features → set, in this
    process; no online store): what ``benchmarks/gpu_train.sh SIZE=large`` trains on."""
    simulate(home, days, events_per_day, False)
    ingest(home, days)
    features(home, days)
    return training_set(home, days)["location"]


# --- the run -----------------------------------------------------------------------------------


def _stage(
    rows: list[Row],
    size: str,
    stage: str,
    res: dict,
    wall: float,
    peak: float,
    target_rate: float | None = None,
    **kw,
) -> None:
    """rows/s over the stage's work (imports and setup excluded), the process's wall time
    (what an Airflow task pays) and its peak RSS."""
    rate = res["rows"] / res["work_s"] if res["work_s"] else 0.0
    target = {"target": f"≥ {target_rate:,.0f}", "ok": rate >= target_rate} if target_rate else {}
    case = f"{size}: {stage}"
    rows.append(Row("scale", case, f"rows/s ({res['rows']:,} rows)", rate, **kw, **target))
    rows.append(Row("scale", case, "wall s (process)", wall))
    rows.append(
        Row("scale", case, "peak RSS MiB", peak, target="< 6 GiB", ok=peak < RSS_TARGET_MIB)
    )


def run_size(
    root: Path, days: int, epd: int | None, quick: bool, rows: list[Row], first: bool
) -> str:
    """Every stage on one size; returns the training set's location."""
    home = root / f"d{days}-{epd or 'full'}"
    if not (home / "lake" / "raw" / "events").is_dir():
        home.mkdir(parents=True, exist_ok=True)
        sim, sim_s, sim_peak = run_isolated(simulate, str(home), days, epd, quick)
        case = f"simulate {sim['events'] / 1e6:.1f}M events ({days} d)"
        rows.append(Row("scale", case, "events/s", sim["events"] / sim_s))
        rows.append(Row("scale", case, "peak RSS MiB", sim_peak))
    _, base_s, _ = run_isolated(bare_copy, str(home))
    res, secs, peak = run_isolated(ingest, str(home), days)
    size = f"{res['rows'] / 1e6:.1f}M events, {days} d"
    _stage(rows, size, "ingest (gate + publish)", res, secs, peak,
           baseline="bare pyarrow copy (×slower)", ratio=res["work_s"] / base_s)  # fmt: skip
    res, secs, peak = run_isolated(features, str(home), days)
    _stage(rows, size, "features (events in the days computed)", res, secs, peak)
    _materialize(root, home, days, size, rows)
    ts, secs, peak = run_isolated(training_set, str(home), days)
    _stage(rows, size, "training set", ts, secs, peak, target_rate=500_000)
    if first:  # Feast's dask scan reads every snapshot of the window: the smallest size only
        _join(home, ts["location"], size, 20_000 if quick else 50_000, rows)
    tr, secs, peak = run_isolated(train_epoch, str(home), days, ts["location"])
    case = f"{size}: 1 training epoch + evaluation"
    rows.append(Row("scale", case, "interactions/s (train steps)", tr["interactions_per_s"],
                    target="≥ 100k", ok=tr["interactions_per_s"] >= 100_000))  # fmt: skip
    rows.append(Row("scale", case, "wall s (process)", secs))
    rows.append(
        Row("scale", case, "peak RSS MiB", peak, target="< 6 GiB", ok=peak < RSS_TARGET_MIB)
    )
    users = tr["holdout_users"] or 0
    rows.append(Row("scale", case, f"holdout NDCG@10 ({users:.0f} users)", tr["ndcg_at_10"] or 0.0))
    res, secs, peak = run_isolated(drift, str(home), days)
    compared = "sampled" if res["sampled"] else "all compared"
    _stage(rows, size, f"drift (feature rows, {compared})", res, secs, peak)
    return ts["location"]


def _join(home: Path, location: str, size: str, n: int, rows: list[Row]) -> None:
    ours, _, _ = run_isolated(join_platform, str(home), location, n)
    stock, _, _ = run_isolated(join_feast, str(home), location, n)
    rate, stock_rate = ours["rows"] / ours["seconds"], stock["rows"] / stock["seconds"]
    case = f"{size}: point-in-time join alone, {ours['rows']:,} rows"
    rows.append(Row("scale", case, "rows/s", rate, f"Feast file offline store {stock_rate:,.0f}",
                    rate / stock_rate))  # fmt: skip


def _materialize(root: Path, home: Path, days: int, size: str, rows: list[Row]) -> None:
    cut = root / f"{home.name}-stock"
    shutil.rmtree(cut, ignore_errors=True)
    run_isolated(cut_snapshot, str(home), str(cut), days, 100_000)
    try:
        res, secs, peak = run_isolated(materialize, str(home), days)
        stock, _, _ = run_isolated(materialize_stock, str(cut), days)
    finally:
        for h in (home, cut):
            run_isolated(teardown, str(h))
    stock_rate = stock["rows"] / stock["work_s"]
    _stage(rows, size, "materialize into Redis (newest day)", res, secs, peak,
           baseline=f"Feast materialize {stock_rate:,.0f} rows/s ({stock['rows']:,} rows)",
           ratio=res["rows"] / res["work_s"] / stock_rate, target_rate=50_000)  # fmt: skip


def bare_vs_stream(root: Path, quick: bool, rows: list[Row]) -> None:
    """The streaming trainer against a bare PyTorch loop of the same model on the same
    in-memory tensors (:func:`benchmarks.bench_training.stream_throughput`), catalog-sized."""
    from benchmarks.bench_training import stream_throughput

    n, users, items = (50_000, 20_000, 20_000) if quick else (500_000, 200_000, 100_000)
    home = root / "throughput"
    home.mkdir(exist_ok=True)
    tp, _, peak = run_isolated(stream_throughput, str(home), n, users, items, 200, [])
    case = f"training, {n:,} rows, {users:,} users × {items:,} items (default model)"
    bare = tp["bare"]
    rows.append(Row("scale", case, "interactions/s, bare PyTorch loop", bare))
    rows.append(Row("scale", case, "interactions/s, streaming trainer", tp["stream"],
                    "bare loop (same model, in-memory tensors)", tp["ratio"], "≥ 0.7",
                    tp["ratio"] >= 0.7))  # fmt: skip
    rows.append(Row("scale", case, "peak RSS MiB", peak))


#: (days, events a day) of each size: ~1M, ~5M and ~20M events of the large preset's world
SIZES = ((4, 250_000), (4, 1_250_000), (14, None))
QUICK_SIZES = ((4, 20_000),)


def run(quick: bool, argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks --only scale")
    ap.add_argument("--sizes", help="days:events-a-day,… e.g. 4:250000,14:0 (0: the preset's)")
    ap.add_argument("--keep", type=Path, help="keep (and reuse) the lakes under this folder")
    args = ap.parse_args(argv or [])
    sizes = QUICK_SIZES if quick else SIZES
    if args.sizes:
        sizes = tuple(
            (int(d), int(e) or None) for d, e in (p.split(":") for p in args.sizes.split(","))
        )
    root = args.keep or Path(tempfile.mkdtemp(prefix="flywheel-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    try:
        with postgres_db() as registry:
            os.environ["BENCH_SCALE_REGISTRY"] = registry
            bare_vs_stream(root, quick, rows)
            for k, (days, epd) in enumerate(sizes):
                t0 = time.perf_counter()
                run_size(root, days, epd, quick, rows, first=k == 0)
                rows.append(
                    Row("scale", f"{days} d: every stage", "wall s", time.perf_counter() - t0)
                )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return rows
