"""Drift benchmark: the Evidently report's cost, and how well the decision detects shifts.

1. Time and peak memory of :func:`monitoring.report.run_report` (Evidently 0.7 Report: 30 columns,
   normed Wasserstein for 20 numeric, Jensen-Shannon for 10 categorical, + DriftedColumnsCount)
   on 100k reference × 100k current rows, against a plain scipy/numpy baseline computing the same
   per-column distances on the same data, in the same run. Each in a fresh process.
2. Detection on the simulator: per scenario the delay (days from onset to the first drift
   decision) and false alarms (drift decisions on days without a shift), reference = the first
   week, as in ``tests/unit/test_drift_detection.py`` but on a bigger world.
"""

from __future__ import annotations

import datetime as dt
import tempfile

from benchmarks.common import Row, run_isolated

N_NUM, N_CAT = 20, 10
SCENARIOS = ("stable", "taste_shift", "catalog_shift", "population_shift")


def _frames(rows: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cats = np.array([f"c{k}" for k in range(12)])

    def frame(shift: float):
        cols = {f"num{k}": rng.gamma(2.0 + shift * (k % 3), 1.0, rows) for k in range(N_NUM)}
        p = np.linspace(1, 2 + shift, len(cats))
        for k in range(N_CAT):
            cols[f"cat{k}"] = rng.choice(cats, rows, p=p / p.sum())
        return pd.DataFrame(cols)

    return frame(0.0), frame(0.3)


def evidently_report(rows: int) -> dict:
    from monitoring.config import DriftConfig
    from monitoring.report import run_report

    ref, cur = _frames(rows)
    config = DriftConfig(
        numeric=tuple(f"num{k}" for k in range(N_NUM)),
        categorical=tuple(f"cat{k}" for k in range(N_CAT)),
        per_column={},
    )
    snapshot, columns, share = run_report(ref, cur, config)
    html = snapshot.get_html_str(as_iframe=False)
    return {"share": share, "columns": len(columns), "html_bytes": len(html)}


def scipy_baseline(rows: int) -> dict:
    import numpy as np
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    ref, cur = _frames(rows)
    drifted = 0
    for k in range(N_NUM):
        r, c = ref[f"num{k}"].to_numpy(), cur[f"num{k}"].to_numpy()
        drifted += wasserstein_distance(r, c) / max(float(np.std(r)), 1e-3) >= 0.1
    for k in range(N_CAT):
        r, c = ref[f"cat{k}"].value_counts(), cur[f"cat{k}"].value_counts()
        keys = r.index.union(c.index)
        p, q = r.reindex(keys, fill_value=0), c.reindex(keys, fill_value=0)
        drifted += jensenshannon(p / p.sum(), q / q.sum()) >= 0.1
    return {"share": drifted / (N_NUM + N_CAT), "columns": N_NUM + N_CAT}


def detection(scenario: str, users: int, items: int, days: int, onset: int) -> dict:
    """Delay and false alarms of the default decision on one simulated world."""
    from core.lake import Lake
    from features.compute import compute_features
    from monitoring.monitor import check_drift
    from simulation.simulator import simulate
    from tests.unit.test_drift_detection import validate_raw

    start = dt.date(2026, 1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake.from_uri(f"file://{tmp}")
        shift = None if scenario == "stable" else onset
        simulate(
            lake, days=days, users=users, items=items, scenario=scenario, seed=7, shift_day=shift
        )
        for k in range(days):
            validate_raw(lake, start + dt.timedelta(days=k))
        for k in range(days):
            compute_features(lake, start + dt.timedelta(days=k))
        reference = (start, start + dt.timedelta(days=6))
        decided = []
        for k in range(7, days):
            result, _ = check_drift(lake, start + dt.timedelta(days=k), reference)
            decided.append((k, result.drift_detected))
    pre = [k for k, d in decided if d and (shift is None or k < shift)]
    post = [k for k, d in decided if d and shift is not None and k >= shift]
    return {
        "false_alarms": len(pre),
        "checked_without_shift": sum(1 for k, _ in decided if shift is None or k < shift),
        "delay": (post[0] - shift) if post else None,
    }


def run(quick: bool) -> list[Row]:
    rows_n = 2_000 if quick else 100_000
    rows: list[Row] = []
    base, base_s, base_mb = run_isolated(scipy_baseline, rows_n)
    ev, ev_s, ev_mb = run_isolated(evidently_report, rows_n)
    case = f"{rows_n // 1000}k ref × {rows_n // 1000}k cur × {N_NUM + N_CAT} cols"
    rows.append(
        Row("drift", case, "Evidently report s", ev_s, "scipy per-column distances", ev_s / base_s)
    )
    rows.append(Row("drift", case, "Evidently peak MiB", ev_mb, "scipy peak MiB", ev_mb / base_mb))
    rows.append(
        Row(
            "drift",
            case,
            "drift share (Evidently)",
            ev["share"],
            "same share from scipy",
            ok=abs(ev["share"] - base["share"]) < 1e-9,
        )
    )
    world = (
        {"users": 1000, "items": 300, "days": 10, "onset": 9}
        if quick
        else {"users": 2000, "items": 500, "days": 14, "onset": 9}
    )
    scenarios = ("stable", "catalog_shift") if quick else SCENARIOS
    for scenario in scenarios:
        r, seconds, _ = run_isolated(detection, scenario, **world)
        size = f"{scenario} ({world['users']} users, {world['items']} items, {world['days']} days)"
        rows.append(
            Row(
                "drift",
                size,
                "false alarms",
                r["false_alarms"],
                baseline=f"of {r['checked_without_shift']} unshifted days",
                target="0",
                ok=r["false_alarms"] == 0,
            )
        )
        if scenario != "stable":
            delay = r["delay"]
            rows.append(
                Row(
                    "drift",
                    size,
                    "detection delay days",
                    float("nan") if delay is None else delay,
                    baseline=f"onset day {world['onset']}",
                    target="≤ 2",
                    ok=delay is not None and delay <= 2,
                )
            )
    return rows
