"""Stored samples -> what the training code of each family takes, read from the store a chunk at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from learnstream.keystore import KeyStore
from learnstream.store import Store

Dialogue = list[tuple[str, str]]  # (role, text) turns in time order
Stored = list[tuple[int, dict[str, Any]]]  # (store id, anonymized sample), in id order
# draw(pool size, new conversations) -> the indices of the older conversations a run reads (replayed or held out)
ReplayDraw = Callable[[int, int], set[int]]


class DrawnPool(Sequence[Dialogue]):
    """The replay pool: as long as every older conversation, holding only those the run draws (the store may be
    far larger than a run's replay)."""

    def __init__(self, size: int, drawn: dict[int, Dialogue]) -> None:
        self._size, self._drawn = size, drawn

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> Dialogue:  # type: ignore[override] - no slices: the run never takes one
        return self._drawn[index]


# What lineage needs of each sample read: whose it is and when it was appended (learnstream.store.erasure_instant).
LINEAGE_FIELDS = ("owner", "ts", "appended_at")


async def chat_dialogues(store: Store, keys: KeyStore, *, after: int, up_to: int, draw: ReplayDraw
                         ) -> tuple[list[Dialogue], DrawnPool, list[dict[str, Any]]]:
    """(the conversations with a sample newer than `after`: what this run learns; the older ones: the replay pool
    that keeps what was learnt; the samples read, with the fields lineage dates them by). Conversations come in the order of their
    first sample; only the new ones and the older ones `draw` picks are read from the store."""
    groups = await store.groups("chat", up_to=up_to)
    new = [group for group, newest in groups if newest > after]
    older = [group for group, newest in groups if newest <= after]
    drawn = {older[index]: index for index in draw(len(older), len(new))}
    turns: dict[str, list[tuple[str, int, str, str]]] = {group: [] for group in [*new, *drawn]}
    read = []
    async for sample_id, sample in store.iter_samples("chat", keys=keys, up_to=up_to, groups=list(turns)):
        turns[sample["session"]].append((sample["ts"], sample_id, sample["role"], sample["text"]))
        read.append({field: sample[field] for field in LINEAGE_FIELDS if field in sample})

    def dialogue(group: str) -> Dialogue:
        return [(role, text) for _, _, role, text in sorted(turns.pop(group))]

    return ([dialogue(group) for group in new], DrawnPool(len(older), {index: dialogue(group)
                                                                       for group, index in drawn.items()}), read)


def image_samples(samples: Stored, *, after: int) -> tuple[list[dict[str, Any]], set[str]]:
    """All image samples, and the event ids of those newer than `after`."""
    return [s for _, s in samples], {s["event_id"] for i, s in samples if i > after}
