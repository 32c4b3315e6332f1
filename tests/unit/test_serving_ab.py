"""A/B split stability and share, Wilson intervals, and the per-variant report from the lake."""

from __future__ import annotations

import datetime as dt

import pytest

from serving.ab import ab_report, assign_variant, bucket, format_report, wilson_interval
from serving.feedback import FeedbackLog, Impression


def test_split_is_stable_and_near_the_share():
    users = [f"p_user{i:05d}" for i in range(20_000)]
    first = [assign_variant(u, 0.3) for u in users]
    assert first == [assign_variant(u, 0.3) for u in users]  # same user, same variant
    share = first.count("challenger") / len(users)
    assert abs(share - 0.3) < 0.015
    assert all(v == "champion" for v in (assign_variant(u, 0.0) for u in users[:500]))
    assert all(v == "challenger" for v in (assign_variant(u, 1.0) for u in users[:500]))
    # growing the share only moves users champion -> challenger, never back
    assert all(
        assign_variant(u, 0.5) == "challenger"
        for u, v in zip(users, first, strict=True)
        if v == "challenger"
    )
    assert 0.0 <= bucket("x") < 1.0


def test_wilson_interval_matches_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    lo, hi = wilson_interval(1000, 10_000)
    assert lo < 0.1 < hi and hi - lo < 0.013


def _serve(log: FeedbackLog, request_id: str, variant: str, ts: dt.datetime) -> None:
    log.record_impression(Impression(request_id, "u1", ("i1", "i2"), (0.9, 0.5), "3", variant, ts))


def test_ab_report_counts_clicked_impressions_per_variant(lake):
    day = dt.datetime(2026, 3, 1, 23, 0, tzinfo=dt.UTC)
    log = FeedbackLog(lake, flush_rows=10_000)
    for n in range(10):
        _serve(log, f"c{n}", "champion", day)
    for n in range(4):
        _serve(log, f"x{n}", "challenger", day)
    _serve(log, "f0", "fallback", day)
    late = day + dt.timedelta(hours=2)  # next day's partition, still counted
    for n in range(3):
        log.record_feedback(f"c{n}", "i1", "click", now=day)
    log.record_feedback("c0", "i2", "click", now=late)  # second click on one impression
    log.record_feedback("x0", "i1", "click", now=late)
    log.record_feedback("x0", "i1", "purchase", now=late)
    log.record_feedback("c5", "i2", "rating", 4, now=day)
    assert log.flush() == 15 + 7
    assert {d.isoformat() for d in lake.partitions("raw", "events")} == {"2026-03-01", "2026-03-02"}

    report = ab_report(lake, dt.date(2026, 3, 1), dt.date(2026, 3, 1))
    rows = {r["variant"]: r for r in report["variants"]}
    assert rows["champion"]["impressions"] == 10
    assert rows["champion"]["clicked_impressions"] == 3 and rows["champion"]["clicks"] == 4
    assert rows["champion"]["ctr"] == pytest.approx(0.3)
    lo, hi = wilson_interval(3, 10)
    assert (rows["champion"]["ctr_ci_low"], rows["champion"]["ctr_ci_high"]) == (lo, hi)
    assert rows["challenger"]["impressions"] == 4 and rows["challenger"]["clicked_impressions"] == 1
    assert rows["challenger"]["purchases"] == 1
    assert rows["fallback"]["impressions"] == 1 and rows["fallback"]["ctr"] == 0.0
    assert report["start"] == "2026-03-01" and report["end"] == "2026-03-01"
    text = format_report(report)
    assert "champion" in text and "30.00%" in text and "95% CI" in text
    # a window without impressions
    empty = ab_report(lake, dt.date(2026, 4, 1), dt.date(2026, 4, 2))
    assert all(r["impressions"] == 0 for r in empty["variants"])
