"""The lake snapshot behind serving: catalog, purchases, countries, popularity fallback."""

from __future__ import annotations

import datetime as dt

from core.privacy import pseudonymise
from serving.fallback import POPULAR_COUNTRY, POPULAR_OVERALL, ServingData
from tests.fixtures.lake import write_rows

D0 = dt.date(2026, 1, 1)


def test_snapshot_and_fallback(lake):
    items = {f"i{n}": "c" for n in range(6)}
    write_rows(lake, D0, items=items, users={"fr1": "FR", "fr2": "FR", "us1": "US", "de1": "DE"})
    write_rows(
        lake,
        D0 + dt.timedelta(days=1),
        events=[
            ("fr1", "i1", "purchase"),
            ("fr2", "i1", "click"),
            ("fr2", "i2", "view"),
            ("us1", "i3", "purchase"),
            ("us1", "i3", "click"),
            ("us1", "i4", "click"),
            ("us1", "i0", "view"),
            ("ghost", "i5", "purchase"),  # not in users: counts overall only
        ],
    )
    # an event older than the history window is ignored
    write_rows(lake, D0 - dt.timedelta(days=40), events=[("us1", "i2", "purchase")] * 50)
    data = ServingData.from_lake(lake, history_days=28)
    assert data.catalog == frozenset(items)
    assert data.as_of == D0 + dt.timedelta(days=1)
    fr1, us1 = pseudonymise("fr1"), pseudonymise("us1")
    assert data.purchased_by(fr1) == {"i1"}
    assert data.user_country[us1] == "US"

    items_fr, scores_fr, kind = data.fallback(pseudonymise("fr2"), 2)
    assert kind == POPULAR_COUNTRY and items_fr == ["i1", "i2"]
    assert scores_fr[0] == 1.0 and scores_fr[1] < 1.0
    # the user's own purchases are skipped; short country lists are topped up from overall
    items_us, _, kind = data.fallback(us1, 4, exclude=data.purchased_by(us1))
    assert kind == POPULAR_COUNTRY and "i3" not in items_us and items_us[:2] == ["i4", "i0"]
    assert len(items_us) == 4
    # known country without activity, and a user nobody knows: overall popularity
    assert data.fallback(pseudonymise("de1"), 3)[2] == POPULAR_OVERALL
    items_any, _, kind = data.fallback(pseudonymise("stranger"), 3)
    assert kind == POPULAR_OVERALL and items_any[0] in {"i3", "i1", "i5"}
    assert "i2" not in items_any[:2]  # old purchases outside the window do not count

    data.add_purchase(fr1, "i2")
    assert data.purchased_by(fr1) == {"i1", "i2"}
    fresh = ServingData.from_lake(lake)
    fresh.carry_purchases_from(data)
    assert fresh.purchased_by(fr1) == {"i1", "i2"}


def test_empty_lake_gives_an_empty_fallback(lake):
    data = ServingData.from_lake(lake)
    assert data.catalog == frozenset() and data.fallback("p_x", 5) == ([], [], POPULAR_OVERALL)
