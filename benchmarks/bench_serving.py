"""Serving latency and throughput over real HTTP, with the Redis online store.

Setup (in a spawned process): a production-profile Flywheel in a temporary folder -- Feast with
the Redis online store (``127.0.0.1:6379``, a project of its own) and a SQL registry in a
Postgres database of its own, features computed and materialised from synthetic validated data,
a toy recommender (same pyfunc contract as the real one) registered as ``@champion`` in MLflow.
Then ``flywheel serve`` runs as its own process and a load generator here (asyncio + aiohttp,
open loop: requests are sent on a fixed schedule and latency counts from the scheduled time, so
a slow server cannot hide its queueing) sends:

* ``GET /health`` -- the baseline: the framework's floor on this machine;
* ``GET /recommendations/{user}?k=10`` (9 in 10 users with online features, 1 in 10 unknown,
  served by the fallback) at rising rates, to find the highest rate held with p99 ≤ 50 ms and no
  errors.

Also reported: the service's resident memory, and that a SIGTERM flushed every impression to the
lake. Everything created is removed at the end (Feast teardown, the database dropped). Both the
server and the load generator share this machine's 2 cores, so the rates are a floor.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import Row, run_isolated

P99_TARGET_MS = 50.0


def _env(root: Path, tag: str, redis: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env.update(
        FLYWHEEL_HOME=str(root / "home"),
        FLYWHEEL_PSEUDONYM_KEY="bench-serving-key",
        FLYWHEEL_LAKE_URI=(root / "lake").as_uri(),
        FLYWHEEL_MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        FLYWHEEL_SERVE_FLUSH_S="2",
        FLYWHEEL_SERVE_FLUSH_ROWS="2000",
    )
    if redis:
        env.update(
            FLYWHEEL_PROFILE="production",
            FLYWHEEL_FEAST_PROJECT=f"bench_serving_{tag}",
            FLYWHEEL_FEAST_REGISTRY_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{_db(tag)}",
            FLYWHEEL_REDIS_URL="redis://127.0.0.1:6379/0",
        )
    return env


def _db(tag: str) -> str:
    return f"flywheel_bench_serving_{tag}"


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(sql)


def _setup(
    env: dict[str, str], n_users: int, n_items: int, events_per_day: int, redis: bool
) -> list[str]:
    """Runs in a spawned process: data, features in Redis (if asked), the champion in MLflow."""
    import datetime as dt

    os.environ.update(env)
    from core.lake import get_lake
    from features.store import apply_if_changed, compute_day, get_store, materialize_day
    from tests.fixtures.lake import item_id, user_id, write_validated
    from tests.fixtures.models import register_toy

    days = write_validated(
        get_lake(),
        dt.date(2026, 1, 1),
        3,
        n_users=n_users,
        n_items=n_items,
        events_per_day=events_per_day,
    )
    if redis:
        compute_day(days[-1])
        store = get_store()
        apply_if_changed(store)
        materialize_day(days[-1], store)
    items = [item_id(i) for i in range(n_items)]
    register_toy({item: float(n_items - n) for n, item in enumerate(items)}, None)
    return [user_id(i) for i in range(n_users)]


def _teardown(env: dict[str, str]) -> None:
    os.environ.update(env)
    from features.store import get_store

    get_store().teardown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _open_loop(base: str, paths: list[str], rate: float, seconds: float) -> dict:
    """Send ``rate`` requests/s for ``seconds`` on a fixed schedule; latencies from the schedule."""
    import aiohttp

    loop = asyncio.get_running_loop()
    n = max(1, int(rate * seconds))
    lat: list[float] = []
    errors = 0

    async with aiohttp.ClientSession(
        base_url=base,
        connector=aiohttp.TCPConnector(limit=512),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.get(paths[i % len(paths)]) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except Exception:
                errors += 1
            lat.append(loop.time() - scheduled)

        t0 = loop.time() + 0.05
        tasks = []
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        wall = loop.time() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    return {
        "rate": rate,
        "n": n,
        "errors": errors,
        "p50": pct(0.50),
        "p99": pct(0.99),
        "achieved": n / wall,
    }


def _load(base: str, paths: list[str], rate: float, seconds: float) -> dict:
    return asyncio.run(_open_loop(base, paths, rate, seconds))


def _rss_mib(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return (
        proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
    ) / 2**20


def run(quick: bool) -> list[Row]:
    import httpx

    n_users, n_items, per_day = (300, 100, 2000) if quick else (5000, 2000, 50_000)
    step_s = 1.0 if quick else 4.0
    rates = [20, 50] if quick else [25, 50, 75, 100, 150, 200, 300, 400, 600, 800]
    redis = not quick  # quick: a smoke run without Feast (users judged by validated data)
    tag = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="flywheel-bench-serving-"))
    env = _env(root, tag, redis)
    if redis:
        _admin(f"CREATE DATABASE {_db(tag)}")
    server = None
    rows: list[Row] = []
    try:
        users, setup_s, _ = run_isolated(_setup, env, n_users, n_items, per_day, redis)
        port = _free_port()
        log = open(root / "serve.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flywheel.cli",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(base + "/health", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "serve did not start: " + (root / "serve.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.25)
        if health.get("champion") is None:
            raise RuntimeError(f"no champion loaded: {health}")
        paths = [
            f"/recommendations/{u if i % 10 else 'newcomer-' + str(i)}?k=10"
            for i, u in enumerate(users[:1000])
        ]
        probe = httpx.get(base + paths[1]).json()
        if probe["variant"] != "champion" or len(probe["items"]) != 10:
            raise RuntimeError(f"the benchmark user was not served by the model: {probe}")

        _load(base, paths, 20, 1.0)  # warm-up
        floor = _load(base, ["/health"], rates[0], step_s)
        base_rec = _load(base, paths, rates[0], step_s)
        held, steps = None, []
        for rate in rates:
            # two tries per step: other tenants of this shared machine cause one-off stalls
            for _ in range(2):
                res = _load(base, paths, rate, step_s)
                steps.append(res)
                ok = (
                    not res["errors"]
                    and res["p99"] <= P99_TARGET_MS
                    and res["achieved"] >= 0.9 * rate
                )
                if ok:
                    break
            if not ok:
                break
            held = res
        rss = _rss_mib(server.pid)
        served = 1 + 20 + sum(r["n"] for r in (base_rec, *steps))

        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
        from core.lake import Lake

        lake = Lake.from_uri(env["FLYWHEEL_LAKE_URI"])
        written = (
            lake.read_parquet("raw/impressions/").num_rows if lake.list("raw/impressions/") else 0
        )

        case = f"{n_users} users, {n_items} items, " + (
            "Redis features" if redis else "no feature store"
        )
        rows += [
            Row("serving", "GET /health (framework floor)", "p50 ms", floor["p50"]),
            Row("serving", "GET /health (framework floor)", "p99 ms", floor["p99"]),
            Row(
                "serving",
                f"recommendations k=10 @{rates[0]} req/s, {case}",
                "p50 ms",
                base_rec["p50"],
                baseline="/health p50",
                ratio=base_rec["p50"] / floor["p50"] if floor["p50"] else None,
            ),
            Row(
                "serving",
                f"recommendations k=10 @{rates[0]} req/s, {case}",
                "p99 ms",
                base_rec["p99"],
                baseline="/health p99",
                ratio=base_rec["p99"] / floor["p99"] if floor["p99"] else None,
                target=f"≤ {P99_TARGET_MS:g} ms",
                ok=base_rec["p99"] <= P99_TARGET_MS and not base_rec["errors"],
            ),
            Row(
                "serving",
                "highest rate held (open loop, p99 ≤ 50 ms, 0 errors)",
                "req/s",
                held["achieved"] if held else 0.0,
                target=f"steps {rates[0]}..{rates[-1]} req/s",
                ok=held is not None,
            ),
            Row(
                "serving",
                "at the highest rate held",
                "p99 ms",
                held["p99"] if held else float("nan"),
                target=f"≤ {P99_TARGET_MS:g} ms",
                ok=held is not None,
            ),
            Row("serving", "service after the load", "RSS MiB", rss),
            Row(
                "serving",
                "SIGTERM: impressions written / served",
                "ratio",
                written / served,
                target="1.0 (nothing lost)",
                ok=written == served,
            ),
            Row("serving", "setup (data, Feast apply+materialize, MLflow)", "s", setup_s),
            Row(
                "serving",
                "served with online features (Feast/Redis)",
                "yes=1",
                float(health.get("features", False)),
            ),
        ]
        for res in steps:
            print(
                f"  serving @{res['rate']} req/s: achieved {res['achieved']:.0f}, p50 {res['p50']:.1f} ms, "
                f"p99 {res['p99']:.1f} ms, errors {res['errors']}",
                file=sys.stderr,
            )
        return rows
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        try:
            if redis:
                run_isolated(_teardown, env)
        finally:
            if redis:
                _admin(f"DROP DATABASE IF EXISTS {_db(tag)} WITH (FORCE)")
            shutil.rmtree(root, ignore_errors=True)
