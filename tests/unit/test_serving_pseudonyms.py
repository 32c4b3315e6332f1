"""Ids from outside are always hashed: a pseudonym-shaped id is no pseudonym (issue 15, item 3)."""

from __future__ import annotations

import pyarrow as pa

from core.privacy import is_pseudonym, pseudonymise, pseudonymise_array, pseudonymise_many

KEY = b"k" * 32


def test_an_id_shaped_like_a_pseudonym_is_hashed_like_any_other():
    alice = pseudonymise("alice", KEY)
    assert is_pseudonym(alice)  # the shape, for checks on output
    posing = pseudonymise(alice, KEY)
    assert posing != alice and is_pseudonym(posing)
    ids = ["alice", alice, "p_" + "0" * 24, None]
    want = [pseudonymise(u, KEY) for u in ids[:3]]
    assert pseudonymise_many(ids[:3], KEY) == want
    assert pseudonymise_array(pa.array(ids, pa.string()), KEY).to_pylist() == [*want, None]
    assert alice not in want[1:]
    sliced = pa.chunked_array([pa.array(ids, pa.string()).slice(1)])  # offsets and nulls hold
    assert pseudonymise_array(sliced, KEY).to_pylist() == [*want[1:], None]
