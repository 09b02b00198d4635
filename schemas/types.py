"""The event schemas as data: which fields, which types, which are required (see docs/ARCHITECTURE.md, "Events")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_KINDS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True, kw_only=True)
class FieldRule:
    kind: str  # a key of _KINDS
    required: bool = False
    choices: tuple[Any, ...] | None = None
    non_empty: bool = False  # strings and arrays
    length: int | None = None  # exact array length (a face box is [x, y, w, h])
    fields: dict[str, "FieldRule"] | None = None  # rules for an object's known fields
    items: "FieldRule | None" = None  # rule for every array item
    timestamp: bool = False  # an ISO-8601 string with a UTC offset
    minimum: int | None = None  # integers

    def accepts(self, value: Any) -> bool:
        # bool is an int in Python; a JSON true is never a valid number or integer here.
        if isinstance(value, bool) and self.kind != "boolean":
            return False
        return isinstance(value, _KINDS[self.kind])

    def describe(self) -> str:
        if self.items is not None:
            return f"an array of {self.items.kind}s"
        return {"integer": "an integer", "object": "an object", "array": "an array"}.get(self.kind, f"a {self.kind}")


def _req(kind: str, **kw: Any) -> FieldRule:
    return FieldRule(kind=kind, required=True, **kw)


def _opt(kind: str, **kw: Any) -> FieldRule:
    return FieldRule(kind=kind, **kw)


_ENVELOPE = {
    "event_id": _req("string", non_empty=True),
    "ts": _req("string", non_empty=True, timestamp=True),
}
_ID = _req("string", non_empty=True)
_VECTOR = FieldRule(kind="array", items=_opt("number"), non_empty=True)

CHAT_V1 = {
    **_ENVELOPE,
    "user_id": _ID,
    "session_id": _ID,
    "role": _req("string", choices=("patient", "therapist", "assistant")),
    "text": _req("string"),
    "consent": _req("object", fields={"training": _opt("boolean")}),
    "mood": _opt("object", fields={"score": _opt("number"), "label": _opt("string")}),
    "assessment": _opt("object", fields={"phq9": _opt("integer"), "gad7": _opt("integer")}),
}

IMAGE_V1 = {
    **_ENVELOPE,
    "user_id": _ID,
    "image_id": _ID,
    "caption": _opt("string"),
    "tags": _opt("array", items=_opt("string")),
    "category": _opt("string"),
    "embedding": _VECTOR,
    "faces": _opt(
        "array",
        items=_opt("object", fields={"embedding": _VECTOR, "box": _opt("array", items=_opt("number"), length=4)}),
    ),
    "exif": _opt("object"),
    "consent": _req("object", fields={"training": _opt("boolean"), "faces": _opt("boolean")}),
}

ERASURE_V1 = {**_ENVELOPE, "user_id": _ID}

MODEL_UPDATED_V1 = {
    **_ENVELOPE,
    "family": _req("string", choices=("chat", "image")),
    "version": _req("integer"),
    "decision": _req("string", choices=("promoted", "rejected")),
    "reason": _opt("string"),
    "path": _req("string", non_empty=True),
    "manifest_sha256": _req("string", non_empty=True),
    "metrics": _opt("object"),
    "parent_version": _opt("integer"),
}

SCHEMAS: dict[str, dict[str, FieldRule]] = {
    "chat.v1": CHAT_V1,
    "image.v1": IMAGE_V1,
    "erasure.v1": ERASURE_V1,
    "model.updated.v1": MODEL_UPDATED_V1,
}

# Records that only stages write, on the topics stages read: checked as strictly as the apps' events, because a
# record from anyone else (an operator's kcat, a buggy tool) must not stop the stage that reads it. A DLQ entry
# has no "schema" field of its own in old records, so its rules are looked up by topic, not by schema.
_SOURCE_POSITION = {
    "topic": _req("string", non_empty=True), "partition": _req("integer", minimum=0),
    "offset": _req("integer", minimum=0),
}
# Where a redriven record first failed, and which redrive sent it back (1 for the first): the redrive command sets
# it in a record header, and the DLQ entry of a record that fails again carries it, so that entry and the first one
# count as one failure, and a later redrive knows whether the last attempt failed too.
REDRIVE = {
    "partition": _req("integer", minimum=0), "offset": _req("integer", minimum=0),
    "generation": _req("integer", minimum=1),
}
DLQ_ENTRY = {
    "reason": _req("string", non_empty=True),
    "ts": _req("string", non_empty=True, timestamp=True),
    "source": _req("object", fields=_SOURCE_POSITION),
    "redrive": _opt("object", fields=REDRIVE),
}
# Written to a DLQ topic by `learnstream dlq redrive` once the entry's original bytes were sent back: the entry is
# no longer outstanding unless an entry of the same or a later generation says the attempt failed again.
DLQ_REDRIVEN = {
    "schema": _req("string", choices=("dlq.redriven.v1",)),
    "source": _req("object", fields=_SOURCE_POSITION),
    "generation": _req("integer", minimum=1),
    "ts": _req("string", non_empty=True, timestamp=True),
}
_FAMILY = _req("string", choices=("chat", "image"))
_TS = _req("string", non_empty=True, timestamp=True)
INTERNAL_SCHEMAS: dict[str, dict[str, FieldRule]] = {
    "skip.v1": {"event_id": _ID, "family": _FAMILY, "reason": _ID},
    # erased_at: when the erasure request was appended (the broker's clock), what the store erases up to; older
    # entries without it erase up to the app's ts.
    "erasure.ledger.v1": {"owner": _ID, "ts": _req("string", non_empty=True, timestamp=True),
                          "erased_at": _opt("string", non_empty=True, timestamp=True)},
    # The store writer's announcement of what a batch added (and an erasure removed, from which stored id on).
    "samples.stored.v1": {"family": _FAMILY, "watermark": _req("integer", minimum=0),
                          "added": _req("integer", minimum=0), "ts": _TS, "erased": _opt("integer", minimum=0),
                          "erased_from": _opt("integer", minimum=0)},
    "training.request.v1": {**_ENVELOPE, "family": _FAMILY, "from_scratch": _opt("boolean")},
    "safety.flag.v1": {**_ENVELOPE, "session": _ID, "category": _req("string"), "score": _req("number"),
                       "layer": _req("string")},
    "safety.cleared.v1": {**_ENVELOPE, "session": _ID},
}

# The schemas each topic a stage reads from another accepts, beside the raw topics, the *.anon topics and the DLQs
# (see consumers/store_writer.py and consumers/dlq.py). These topics have no DLQ: their readers count and log what
# they refuse (learnstream/refusals.py) and go on.
INTERNAL_TOPIC_SCHEMAS = {
    "samples.stored": ("samples.stored.v1",),
    "training.requests": ("training.request.v1",),
    "model.updated": ("model.updated.v1",),
    "safety.flags": ("safety.flag.v1", "safety.cleared.v1"),
}

# The schemas each raw topic accepts; anything else on that topic goes to its DLQ.
RAW_TOPIC_SCHEMAS = {"chat": ("chat.v1",), "image": ("image.v1",), "erasure": ("erasure.v1",)}
