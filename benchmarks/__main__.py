"""``python -m benchmarks [--quick] [--only NAME…] [--json FILE] [MODULE OPTIONS…]``: run every
benchmark, print a table.

Each ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool) -> list[Row]``; one that also takes
``argv`` receives the options this runner does not know (e.g. ``--only realdata --ratings FILE``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import sys
import time
from pathlib import Path

from benchmarks.common import Row


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def fmt(v: float | None) -> str:
    if v is None:
        return ""
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def print_table(rows: list[Row]) -> None:
    headers = ["benchmark", "case", "metric", "value", "baseline", "ratio", "target", "ok"]
    cells = [
        [
            r.benchmark,
            r.case,
            r.metric,
            fmt(r.value),
            r.baseline,
            fmt(r.ratio),
            r.target,
            "" if r.ok is None else ("yes" if r.ok else "NO"),
        ]
        for r in rows
    ]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--only", nargs="*", help="benchmark module names without bench_")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args, extra = ap.parse_known_args(argv)

    names = discover()
    if args.only:
        names = [n for n in names if n.removeprefix("bench_") in args.only]
    modules = {n: importlib.import_module(f"benchmarks.{n}") for n in names}
    takes = [n for n, m in modules.items() if "argv" in inspect.signature(m.run).parameters]
    if extra and not takes:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    rows: list[Row] = []
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"running {name} …", file=sys.stderr, flush=True)
        try:
            run = modules[name].run
            kwargs = {"argv": extra} if name in takes else {}
            rows += run(quick=args.quick, **kwargs)
        except Exception as exc:  # one broken benchmark must not hide the others
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"  {name} took {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    print()
    print_table(rows)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    for f in failed:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
