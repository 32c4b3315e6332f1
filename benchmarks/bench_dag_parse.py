"""DAG parse time: seconds to import each DAG file, against importing ``airflow.sdk`` alone.

Each measurement is a fresh interpreter (so nothing is cached between files); the figure per DAG
is its import time minus the baseline (``import airflow.sdk``) measured in the same run, best of
a few repeats. Target: each DAG adds under 0.3 s of its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.common import Row

ROOT = Path(__file__).resolve().parent.parent

_SNIPPET = """
import time, importlib.util, sys
t0 = time.perf_counter()
import airflow.sdk  # noqa
t1 = time.perf_counter()
path = sys.argv[1]
if path != "-":
    spec = importlib.util.spec_from_file_location("dagfile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
t2 = time.perf_counter()
print(t1 - t0, t2 - t0)
"""


def _measure(path: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _SNIPPET, path],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.split()
        best = min(best, float(out[1]))
    return best


def run(quick: bool = False) -> list[Row]:
    repeat = 1 if quick else 3
    base = _measure("-", repeat)
    rows = [Row("dag_parse", "import airflow.sdk", "seconds", base, baseline="(baseline)")]
    for path in sorted((ROOT / "dags").glob("*.py")):
        total = _measure(str(path), repeat)
        own = max(total - base, 0.0)
        rows.append(
            Row(
                "dag_parse",
                path.name,
                "own seconds",
                own,
                baseline="import airflow.sdk",
                ratio=total / base,
                target="< 0.3 s own",
                ok=own < 0.3,
            )
        )
    return rows
