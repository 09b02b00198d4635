"""The key store's in-memory cache is bounded, and what it answers is what the file holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings, strategies as st

from learnstream.keystore import KeyStore

CACHE_SIZE = 3
OWNERS = [f"u_{n}" for n in range(8)]  # more owners than the cache holds

operations = st.lists(st.tuples(st.sampled_from(["seal", "read", "erase"]), st.sampled_from(OWNERS)),
                      min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_the_cache_holds_at_most_its_size_and_answers_as_the_file_does(steps: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder, KeyStore(Path(folder) / "keys.sqlite",
                                                           cache_size=CACHE_SIZE) as keys:
        known: dict[str, tuple[str, bytes]] = {}  # owner -> (kid, key) as first given
        destroyed: set[str] = set()  # kids
        for operation, owner in steps:
            if operation == "seal":
                kid, key = keys.key_for_owner(owner)
                assert known.setdefault(owner, (kid, key)) == (kid, key)
            elif operation == "read" and owner in known:
                kid, key = known[owner]
                assert keys.key(kid) == (None if kid in destroyed else key)
            elif operation == "erase":
                keys.destroy(owner)
                if owner in known:
                    destroyed.add(known.pop(owner)[0])
            assert len(keys._cache) <= CACHE_SIZE
        # A fresh store on the same file agrees with the cached one.
        with KeyStore(keys.path) as reopened:
            for owner, (kid, key) in known.items():
                assert keys.key(kid) == reopened.key(kid) == key
