"""The fast paths of ingestion give exactly what the simple ones give.

Vectorised pseudonyms are byte-identical to :func:`core.privacy.pseudonymise`, and the GX
frame built with one category per row for a unique key equals the dictionary-encoded one,
falling back to encoding when the key is not distinct (duplicates, nulls).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.privacy import pseudonymise, pseudonymise_array, pseudonymise_many
from ingestion.conform import encode_strings
from ingestion.gate import gx_frame
from ingestion.publish import Pseudonyms

IDS = ["", "u1", "ü日本", "x" * 3000, "p_" + "a" * 24, "p_short", "p_" + "é" * 24, "u1"]
KEYS = [b"", b"k", b"x" * 64, b"y" * 65, b"z" * 200, "ключ".encode()]


@pytest.mark.parametrize("key", KEYS)
def test_pseudonymise_array_matches_pseudonymise(key):
    arr = pa.chunked_array([IDS[:3], IDS[3:] + [None]])
    got = pseudonymise_array(arr, key).to_pylist()
    assert got == [pseudonymise(u, key) for u in IDS] + [None]
    assert pseudonymise_many(IDS, key) == [pseudonymise(u, key) for u in IDS]


def test_pseudonymise_array_empty():
    assert len(pseudonymise_array(pa.array([], pa.string()), b"k")) == 0


def test_pseudonyms_shared_between_tables():
    users = pa.table({"user_id": ["a", "b", "c"], "n": [1, 2, 3]})
    events = pa.table({"user_id": ["c", "d", "a", "d", None]})
    p = Pseudonyms([users["user_id"]], b"k")
    enc = pc.dictionary_encode(events["user_id"].combine_chunks())
    p2 = p.extended(enc.dictionary)
    want = [None if u is None else pseudonymise(u, b"k") for u in events["user_id"].to_pylist()]
    assert p2.apply(events, "user_id", enc)["user_id"].to_pylist() == want
    assert p2.apply(events, "user_id")["user_id"].to_pylist() == want
    assert p.apply(users, "user_id")["user_id"].to_pylist() == [
        pseudonymise(u, b"k") for u in "abc"
    ]


def _reference_frame(tbl: pa.Table) -> pd.DataFrame:
    """What the gate got before the fast paths: every string column dictionary-encoded."""
    cols = [pc.dictionary_encode(a) if pa.types.is_string(a.type) else a for a in tbl.columns]
    return pa.table(cols, names=tbl.column_names).to_pandas()


@pytest.mark.parametrize(
    "ids",
    [
        ["e1", "e2", "e3", "e4"],  # distinct: one category per row
        ["e1", "e2", "e1", "e4"],  # duplicates: encoded
        ["e1", None, "e3", "e4"],  # nulls: encoded
        [],
    ],
)
def test_gx_frame_matches_dictionary_encoding(ids):
    n = len(ids)
    tbl = pa.table(
        {
            "event_id": pa.chunked_array([ids[:2], ids[2:]], pa.string()),
            "user_id": pa.array(["u1", "u2", "u1", "u3"][:n], pa.string()),
            "value": pa.array([1.0, 2.0, 3.0, 4.0][:n]),
        }
    )
    want = _reference_frame(tbl)
    for frame in (
        gx_frame(tbl, ("event_id",)),
        gx_frame(encode_strings(tbl, ("event_id",)), ("event_id",)),
        gx_frame(tbl),
    ):
        assert list(frame.columns) == list(want.columns)
        assert frame.dtypes.equals(want.dtypes)
        assert frame.equals(want)
        for c in ("event_id", "user_id"):
            assert list(frame[c].cat.categories) == list(want[c].cat.categories)
            assert frame[c].cat.codes.dtype == want[c].cat.codes.dtype
