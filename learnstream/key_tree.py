"""A key per millisecond of the broker's clock, from a tree that an erasure cuts at its instant.

A binary tree of depth DEPTH over the append instants (ms since the epoch): a node (height, idx) covers the
instants idx * 2**height up to (idx + 1) * 2**height - 1, and its children's keys are keyed BLAKE2b of a bit under
its own, so a node's key derives every key beneath it and, the hash being one-way, nothing above or beside it (a
puncturable PRF, as in Goldreich-Goldwasser-Micali). A leaf is the data key of one millisecond.

`puncture(nodes, after=E)` keeps only the fewest nodes covering the instants after E (at most DEPTH of them),
derived from the nodes held, and drops the rest: from then on no key of an instant up to E can be derived, while
every later instant keeps the very key it had. An owner's nodes always cover one suffix of time, so an erasure
older than one already applied cuts nothing more.
"""

from __future__ import annotations

import hashlib
import os

DEPTH = 48  # 2**48 ms: instants until the year 10889
# The nodes Blocks remembers: 2**16 ms, about a minute, so the keys of a conversation's turns derive in 16 steps.
BLOCK_HEIGHT = 16
Nodes = dict[tuple[int, int], bytes]  # (height, idx) -> key


def _child(key: bytes, bit: int) -> bytes:
    return hashlib.blake2b(b"\x01" if bit else b"\x00", key=key, digest_size=32).digest()


def _derive(nodes: Nodes, height: int, idx: int) -> bytes | None:
    """The key of node (height, idx), from the held node above it (or itself); None when none is held."""
    for above in range(height, DEPTH + 1):
        key = nodes.get((above, idx >> (above - height)))
        if key is not None:
            for level in range(above - 1, height - 1, -1):
                key = _child(key, (idx >> (level - height)) & 1)
            return key
    return None


def _cover(start: int, end: int) -> list[tuple[int, int]]:
    """The fewest aligned nodes covering the instants start..end-1, where `end` is a node's end (aligned)."""
    nodes, instant = [], start
    while instant < end:
        height = DEPTH if instant == 0 else (instant & -instant).bit_length() - 1
        while instant + (1 << height) > end:
            height -= 1
        nodes.append((height, instant >> height))
        instant += 1 << height
    return nodes


def puncture(nodes: Nodes, *, after: int) -> Nodes:
    """The nodes deriving exactly the keys of the instants after `after` that `nodes` derive (held nodes are
    disjoint: each is kept, dropped, or replaced by the part of it after `after`)."""
    kept = {}
    for (height, idx), key in nodes.items():
        start, end = idx << height, (idx + 1) << height
        if start > after:
            kept[(height, idx)] = key
        elif end - 1 > after:
            for node in _cover(after + 1, end):
                kept[node] = _derive({(height, idx): key}, *node)
    return kept


def new_tree(*, after: int | None = None) -> Nodes:
    """A fresh random tree; with `after`, holding only the instants after it."""
    root = {(DEPTH, 0): os.urandom(32)}
    return root if after is None else puncture(root, after=after)


def leaf(nodes: Nodes, instant: int) -> bytes | None:
    """The data key of one millisecond; None when it is not derivable (erased)."""
    if not 0 <= instant < 1 << DEPTH:
        raise ValueError("an instant outside the key tree")
    return _derive(nodes, 0, instant)


class Blocks:
    """The block nodes (BLOCK_HEIGHT) of recently used leaves, per owner, at most `size` of them: nearby keys then
    derive in BLOCK_HEIGHT steps instead of DEPTH. Not thread-safe (the key store calls it under its lock)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._keys: dict[tuple[str, int], bytes] = {}

    def leaf(self, owner: str, nodes: Nodes, instant: int) -> bytes | None:
        if not 0 <= instant < 1 << DEPTH:
            raise ValueError("an instant outside the key tree")
        block = instant >> BLOCK_HEIGHT
        key = self._keys.get((owner, block))
        if key is None:
            key = _derive(nodes, BLOCK_HEIGHT, block)
            if key is None:  # erased up to a point within this block (or wholly): what is left is finer
                return leaf(nodes, instant)
            if len(self._keys) >= self._size:
                del self._keys[next(iter(self._keys))]
            self._keys[(owner, block)] = key
        return _derive({(BLOCK_HEIGHT, block): key}, 0, instant)

    def forget(self, owner: str) -> None:
        """Drop an owner's blocks (on erasure: a block may derive erased keys)."""
        for cached in [k for k in self._keys if k[0] == owner]:
            del self._keys[cached]
