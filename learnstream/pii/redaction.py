"""Reversible redaction for one request to a remote API: the remote sees placeholders, the user sees their values.

A request's turns are anonymized under a fresh random conversation id, so the placeholders differ on every
request and the remote can link nothing across requests. The map from placeholder back to the user's value
lives in the returned Redacted object only, for the lifetime of that one request: it is never stored, logged
or sent anywhere, and it is gone when the request is.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from learnstream.pii import TextAnonymizer

__all__ = ["Redacted", "RequestRedactor"]

# A placeholder as the remote may write it back: with or without its brackets ("[PERSON_3f2a]", "PERSON_3f2a").
_WRITTEN_PLACEHOLDER = re.compile(r"\[?\b([A-Z][A-Z_]*_[0-9a-f]{4})\b\]?")


@dataclass(frozen=True)
class Redacted:
    turns: list[str]  # the anonymized turns, for the remote
    _values: dict[str, str] = field(repr=False)  # "[PERSON_3f2a]" -> the user's own value; never logged (no repr)

    def restore(self, reply: str) -> str:
        """The reply with each placeholder of this request replaced by the user's value; others are left."""
        return _WRITTEN_PLACEHOLDER.sub(lambda m: self._values.get(f"[{m.group(1)}]", m.group()), reply)


class RequestRedactor:
    """Anonymizes the turns of one remote request and keeps, for that request only, the way back.

    ner_model: the spaCy pipeline for names, as TextAnonymizer takes it (None: word lists and rules only).
    The placeholder key is random per process: these placeholders never meet the stored ones.
    """

    def __init__(self, *, ner_model: str | None = "en_core_web_sm") -> None:
        self._anonymizer = TextAnonymizer(key=secrets.token_bytes(32), ner_model=ner_model)
        self._lock = threading.Lock()  # one spaCy pipeline, requests from several threads

    def redact(self, turns: Sequence[str]) -> Redacted:
        conversation = secrets.token_hex(16)  # per request: placeholders never repeat across requests
        values: dict[str, str] = {}
        with self._lock:
            found = self._anonymizer.detect_batch(list(turns))
        redacted = [self._anonymizer.render(text, conversation, spans, values) for text, spans in zip(turns, found)]
        return Redacted(redacted, values)

    async def redact_async(self, turns: Sequence[str]) -> Redacted:
        """redact() off the event loop: the NER model is CPU work."""
        return await asyncio.to_thread(self.redact, turns)
