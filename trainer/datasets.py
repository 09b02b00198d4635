"""Stored samples -> what the training code of each family takes."""

from __future__ import annotations

from typing import Any

Stored = list[tuple[int, dict[str, Any]]]  # (store id, anonymized sample), in id order


def chat_dialogues(samples: Stored, *, after: int) -> tuple[list[list[tuple[str, str]]], list[list[tuple[str, str]]]]:
    """Conversations as (role, text) turns in time order, split into those with a sample newer than `after`
    (what this run learns) and the older ones (the replay pool that keeps what was learnt)."""
    sessions: dict[str, list[tuple[str, int, str, str]]] = {}
    newest: dict[str, int] = {}
    for sample_id, sample in samples:
        sessions.setdefault(sample["session"], []).append((sample["ts"], sample_id, sample["role"], sample["text"]))
        newest[sample["session"]] = max(newest.get(sample["session"], 0), sample_id)
    new, old = [], []
    for session, turns in sessions.items():
        dialogue = [(role, text) for _, _, role, text in sorted(turns)]
        (new if newest[session] > after else old).append(dialogue)
    return new, old


def image_samples(samples: Stored, *, after: int) -> tuple[list[dict[str, Any]], set[str]]:
    """All image samples, and the event ids of those newer than `after`."""
    return [s for _, s in samples], {s["event_id"] for i, s in samples if i > after}
