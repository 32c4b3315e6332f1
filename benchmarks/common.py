"""Shared helpers for benchmarks: isolated measurement and the result row.

Every benchmark module ``benchmarks/bench_<area>.py`` defines ``run(quick: bool) -> list[Row]``.
Figures are reported as ratios against a baseline measured in the same run, because the
machines are shared and noisy. ``quick`` shrinks the data (used by the smoke test of the runner).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    benchmark: str  # e.g. "simulator"
    case: str  # e.g. "1M events"
    metric: str  # e.g. "events/s"
    value: float
    baseline: str = ""  # what the ratio compares against, measured in the same run
    ratio: float | None = None  # value / baseline (or overhead factor), when meaningful
    target: str = ""  # the target, e.g. "< 60 s"
    ok: bool | None = None  # whether the target holds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _child(conn, fn, args, kwargs):
    t0 = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
        err = None
    except BaseException as exc:  # report, don't hang the parent
        result, err = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send((result, seconds, peak_mb, err))
    conn.close()


def run_isolated(fn: Callable, *args, **kwargs) -> tuple[Any, float, float]:
    """Run ``fn(*args, **kwargs)`` in a fresh (spawned) process.

    Returns ``(result, seconds, peak_rss_mib)``; the peak includes the interpreter and the
    imports the function does, nothing of the parent. ``fn`` must be importable (module level).
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs))
    proc.start()
    child.close()
    result, seconds, peak_mb, err = parent.recv()
    proc.join()
    if err:
        raise RuntimeError(f"benchmark step {getattr(fn, '__name__', fn)} failed: {err}")
    return result, seconds, peak_mb


def timed(fn: Callable, *args, repeat: int = 1, **kwargs) -> tuple[Any, float]:
    """Best-of-``repeat`` wall time of ``fn`` in this process."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return result, best
