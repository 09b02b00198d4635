"""The key store's in-memory caches are bounded, and what they answer is what the file holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings, strategies as st

from learnstream.keystore import KeyStore

CACHE_SIZE = 3
OWNERS = [f"u_{n}" for n in range(8)]  # more owners than the cache holds
START_MS = 1_700_000_000_000

operations = st.lists(st.tuples(st.sampled_from(["seal", "read", "erase"]), st.sampled_from(OWNERS)),
                      min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(operations)
def test_the_cache_holds_at_most_its_size_and_answers_as_the_file_does(steps: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as folder, KeyStore(Path(folder) / "keys.sqlite",
                                                           cache_size=CACHE_SIZE) as keys:
        sealed: dict[str, list[tuple[int, str, bytes]]] = {}  # owner -> (instant, kid, key) of each seal
        erased_at: dict[str, int] = {}
        for step, (operation, owner) in enumerate(steps):
            instant = START_MS + step  # one broker millisecond per step
            if operation == "seal":
                given_key = keys.key_for_owner(owner, appended_ms=instant)
                assert given_key is not None  # appended after any erasure of the owner
                sealed.setdefault(owner, []).append((instant, *given_key))
            elif operation == "read":
                for at, kid, key in sealed.get(owner, []):
                    assert keys.key(kid, owner) == (None if at <= erased_at.get(owner, -1) else key)
            else:
                keys.destroy(owner, appended_ms=instant)
                erased_at[owner] = instant
            assert len(keys._trees) <= CACHE_SIZE and len(keys._legacy) <= CACHE_SIZE
        # A fresh store on the same file agrees with the cached one.
        with KeyStore(keys.path) as reopened:
            for owner, seals in sealed.items():
                for _, kid, _ in seals:
                    assert keys.key(kid, owner) == reopened.key(kid, owner)
