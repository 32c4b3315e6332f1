"""The A/B split between ``champion`` and ``challenger``, and the per-variant report.

Split: a user is served by the challenger when the challenger alias exists and the user's bucket
``sha256("flywheel-ab:" + pseudonym)`` (as a number in [0, 1)) is below
``settings.ab_challenger_share``. The bucket depends only on the user, so a user stays in one
variant for the whole test, and the share of users in the challenger is close to the setting.

Report (:func:`ab_report`): from the raw impressions and the serving feedback events
(``event_id`` ``fb:<request_id>:<n>``) of a window: per variant the impressions, the clicked
impressions (at least one ``click``), the click-through rate ``clicked / impressions`` with a
Wilson score 95 % interval, the add-to-cart and purchase counts, and the model versions that
served the variant (``model_versions``: version -> impressions). Feedback is read from the
window plus one day, since a click may come just after midnight.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import TYPE_CHECKING, Any

from core.contract import EVENTS, IMPRESSIONS
from core.lake import RAW, Lake
from core.names import CHALLENGER, CHAMPION, VARIANTS
from serving.feedback import EVENT_ID_PREFIX, EVENTS_FILE_PREFIX, IMPRESSIONS_FILE_PREFIX

if TYPE_CHECKING:
    import pyarrow as pa

_SALT = b"flywheel-ab:"


def bucket(user_id: str) -> float:
    """A stable number in [0, 1) for a user (hash of the id)."""
    digest = hashlib.sha256(_SALT + user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_variant(user_id: str, challenger_share: float) -> str:
    """``"challenger"`` for the configured share of users, else ``"champion"``."""
    return CHALLENGER if bucket(user_id) < challenger_share else CHAMPION


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default); (0, 0) when n = 0."""
    if n <= 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _days(lake: Lake, table: str, start: dt.date | None, end: dt.date | None) -> list[dt.date]:
    return [
        d
        for d in lake.partitions(RAW, table)
        if (start is None or d >= start) and (end is None or d <= end)
    ]


def _new_counts() -> dict[str, Any]:
    return {
        "impressions": 0,
        "clicked": set(),
        "clicks": 0,
        "add_to_cart": 0,
        "purchase": 0,
        "versions": {},
    }


def _count(imps: pa.Table | None, events: pa.Table | None) -> dict[str, dict[str, Any]]:
    """Per variant: impressions, clicked request ids, clicks, add-to-carts, purchases and the
    impressions per model version that served them."""
    variant_of: dict[str, str] = {}
    counts = {v: _new_counts() for v in VARIANTS}
    if imps is not None:
        for request_id, variant, version in zip(
            imps.column("request_id").to_pylist(),
            imps.column("variant").to_pylist(),
            imps.column("model_version").to_pylist(),
            strict=True,
        ):
            if request_id in variant_of:
                continue  # the same response written twice (a replayed spool batch)
            variant_of[request_id] = variant
            c = counts.setdefault(variant, _new_counts())
            c["impressions"] += 1
            c["versions"][str(version)] = c["versions"].get(str(version), 0) + 1
    if events is None:
        return counts
    for event_id, event_type in zip(
        events.column("event_id").to_pylist(),
        events.column("event_type").to_pylist(),
        strict=True,
    ):
        request_id = event_id[len(EVENT_ID_PREFIX) :].rsplit(":", 1)[0]
        variant = variant_of.get(request_id)
        if variant is None:
            continue  # an impression outside the window
        c = counts[variant]
        if event_type == "click":
            c["clicks"] += 1
            c["clicked"].add(request_id)
        elif event_type in ("add_to_cart", "purchase"):
            c[event_type] += 1
    return counts


def _row(variant: str, c: dict[str, Any]) -> dict[str, Any]:
    """One report row: the counts, the CTR and its Wilson interval."""
    n, clicked = c["impressions"], len(c["clicked"])
    lo, hi = wilson_interval(clicked, n)
    return {
        "variant": variant,
        "impressions": n,
        "clicked_impressions": clicked,
        "clicks": c["clicks"],
        "add_to_cart": c["add_to_cart"],
        "purchases": c["purchase"],
        "ctr": clicked / n if n else 0.0,
        "ctr_ci_low": lo,
        "ctr_ci_high": hi,
        "model_versions": dict(sorted(c["versions"].items())),
    }


def ab_report(
    lake: Lake, start: dt.date | None = None, end: dt.date | None = None
) -> dict[str, Any]:
    """Per-variant impressions, clicks and CTR with a Wilson 95 % interval (see module doc)."""
    imp_days = _days(lake, IMPRESSIONS.name, start, end)
    ev_end = end + dt.timedelta(days=1) if end else None
    ev_days = _days(lake, EVENTS.name, start, ev_end)
    imps = lake.read(
        IMPRESSIONS.name,
        imp_days,
        ["request_id", "variant", "model_version"],
        zone=RAW,
        name_prefix=IMPRESSIONS_FILE_PREFIX,
    )
    events = lake.read(
        EVENTS.name, ev_days, ["event_id", "event_type"], zone=RAW, name_prefix=EVENTS_FILE_PREFIX
    )
    counts = _count(imps, events)
    rows = [
        _row(variant, c)
        for variant, c in counts.items()
        if c["impressions"] or variant in (CHAMPION, CHALLENGER)
    ]
    first = start or (imp_days[0] if imp_days else None)
    last = end or (imp_days[-1] if imp_days else None)
    return {
        "start": first.isoformat() if first else None,
        "end": last.isoformat() if last else None,
        "confidence": 0.95,
        "variants": rows,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table (``flywheel ab-report``)."""
    start, end = report.get("start"), report.get("end")
    head = f"A/B report {start or '-'} .. {end or '-'} (CTR = clicked impressions / impressions, Wilson 95% CI)"
    cols = ["variant", "impressions", "clicked", "CTR", "95% CI", "clicks", "carts", "purchases"]
    body = [
        [
            r["variant"],
            str(r["impressions"]),
            str(r["clicked_impressions"]),
            f"{r['ctr']:.2%}",
            f"[{r['ctr_ci_low']:.2%}, {r['ctr_ci_high']:.2%}]",
            str(r["clicks"]),
            str(r["add_to_cart"]),
            str(r["purchases"]),
        ]
        for r in report["variants"]
    ]
    widths = [
        max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(cols)
    ]
    lines = [head, "  ".join(h.ljust(w) for h, w in zip(cols, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in body
    ]
    return "\n".join(lines)
