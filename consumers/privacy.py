"""Raw event bytes -> what may go onward: an anonymized sample, a consent skip, an erasure ledger entry, or a
reason for the DLQ. The anonymizer consumer and `learnstream anonymize` call this same code.

Only fields the anonymizer knows are written onward; unknown extra fields stay on the raw topic.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime
from dataclasses import dataclass
from typing import Any

from consumers.image_anon import SAMPLE_SCHEMA as IMAGE_SAMPLE, anonymize_image_event
from learnstream.pii import TextAnonymizer
from learnstream.embedding_dim import EmbeddingDim
from learnstream.keystore import KeyStore, seal
from learnstream.metrics import NAMES_NOT_REMOVED
from learnstream.pseudonym import pseudonym
from schemas import RAW_TOPIC_SCHEMAS, InvalidEvent, decode, validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """kind: "sample" | "skip" | "erasure" | "invalid". record is what goes onward (None when invalid)."""

    kind: str
    record: dict[str, Any] | None = None
    error: InvalidEvent | None = None


class Anonymizer:
    def __init__(self, *, key: bytes, ner_model: str | None, max_event_bytes: int,
                 embedding_dim: EmbeddingDim | None = None, keys: KeyStore | None = None) -> None:
        """keys: seal samples for the *.anon topics and shred erased owners (the service); None leaves samples
        readable (`learnstream anonymize`). embedding_dim: the deployment's (recorded in the data dir by the
        service); None decides it in memory."""
        self._key = key
        self._keys = keys
        self.max_event_bytes = max_event_bytes
        self.text = TextAnonymizer(key=key, ner_model=ner_model or None)
        NAMES_NOT_REMOVED.set(0 if self.text.names_enabled else 1)
        self.embedding_dim = embedding_dim or EmbeddingDim()

    @property
    def names_enabled(self) -> bool:
        return self.text.names_enabled

    def pseudonym(self, kind: str, value: str) -> str:
        return pseudonym(self._key, kind, value)

    def process(self, family: str, raws: list[bytes], appended_ms: list[int | None] | None = None) -> list[Outcome]:
        """One outcome per input, same order. family: "chat", "image" or "erasure" (the raw topic's kind).
        appended_ms: when each raw record was appended, by the broker's clock (the service passes it): an erasure
        holds from its request's append time on, and an erased owner's event appended until then is skipped
        ("erased"), never sealed under a new key. Text of the whole batch goes through NER in one batch."""
        appended = appended_ms or [None] * len(raws)
        outcomes: list[Outcome] = []
        texts: list[tuple[str, str]] = []
        for raw, at_ms in zip(raws, appended):
            try:
                event = validate(decode(raw, max_bytes=self.max_event_bytes), expected=RAW_TOPIC_SCHEMAS[family])
                self._check_embedding(event)
            except InvalidEvent as error:
                outcomes.append(Outcome("invalid", error=error))
                continue
            # Apps choose event ids and may put anything in them: onward they are keyed pseudonyms too, which
            # keeps them unique and stable (a redelivered event still dedupes) without carrying the app's text.
            event = {**event, "event_id": self.pseudonym("event", event["event_id"])}
            if family == "erasure":
                entry = self._ledger_entry(event, at_ms)
                if self._keys is not None:
                    # Before the ledger entry goes out: from now on no copy of their samples can be read.
                    self._keys.destroy(entry["owner"], appended_ms=at_ms)
                outcomes.append(Outcome("erasure", entry))
            elif not event["consent"].get("training", False):
                outcomes.append(_skip(event, family, "no_consent"))
            elif family == "chat":
                session = self.pseudonym("session", event["session_id"])
                texts.append((event["text"], session))
                outcomes.append(Outcome("sample", self._chat_sample(event, session)))
            else:
                outcomes.append(Outcome("sample", anonymize_image_event(
                    event, anonymize_text=self.text.anonymize, pseudonymize=lambda u: self.pseudonym("user", u))))
            if outcomes[-1].kind == "sample" and at_ms is not None:
                # The store compares this with the erasure's own append time, whatever the app's clocks said.
                outcomes[-1].record["appended_at"] = broker_instant(at_ms)
        self._decide_embedding_dim(outcomes)
        self._fill_texts(outcomes, texts)
        if self._keys is not None:
            outcomes = [self._seal(o, at_ms) if o.kind == "sample" else o for o, at_ms in zip(outcomes, appended)]
        return outcomes

    def _seal(self, outcome: Outcome, appended_ms: int | None) -> Outcome:
        sealed = seal(outcome.record, self._keys, appended_ms=appended_ms)
        if sealed is None:  # in flight when its owner was erased
            return _skip(outcome.record, outcome.record["schema"].split(".", 1)[0], "erased")
        return Outcome("sample", sealed)

    def _fill_texts(self, outcomes: list[Outcome], texts: list[tuple[str, str]]) -> None:
        """Chat text is anonymized for the whole batch at once (NER is much faster batched)."""
        if not texts:
            return
        anonymized = iter(self.text.anonymize_batch(texts))
        for outcome in outcomes:
            if outcome.kind == "sample" and outcome.record["schema"] == "chat.sample.v1":
                outcome.record["text"] = next(anonymized)

    def _chat_sample(self, event: dict[str, Any], session: str) -> dict[str, Any]:
        sample = {
            "schema": "chat.sample.v1",
            "event_id": event["event_id"],
            "ts": event["ts"],
            "owner": self.pseudonym("user", event["user_id"]),
            "session": session,
            "role": event["role"],
            "text": None,  # set by _fill_texts
        }
        # Mood and assessment scores are what the model learns context from; their free-text label is not
        # copied (it is typed by the patient).
        if "mood" in event and event["mood"].get("score") is not None:
            sample["mood"] = {"score": event["mood"]["score"]}
        if "assessment" in event:
            sample["assessment"] = {k: v for k, v in event["assessment"].items() if k in ("phq9", "gad7")}
        return sample

    def _ledger_entry(self, event: dict[str, Any], appended_ms: int | None) -> dict[str, Any]:
        entry = {"schema": "erasure.ledger.v1", "event_id": event["event_id"], "ts": event["ts"],
                 "owner": self.pseudonym("user", event["user_id"])}
        if appended_ms is not None:
            entry["erased_at"] = broker_instant(appended_ms)  # what the store erases up to (not the app's ts)
        return entry

    def _check_embedding(self, event: dict[str, Any]) -> None:
        """An image embedding must have the deployment's dimension, once there is one (_decide_embedding_dim)."""
        embedding = event.get("embedding")
        dim = None if embedding is None else self.embedding_dim.value
        if dim is not None and len(embedding) != dim:
            raise InvalidEvent("invalid_value", "embedding", f"must have {dim} numbers")

    def _decide_embedding_dim(self, outcomes: list[Outcome]) -> None:
        """Before the deployment has a dimension: the length most of this batch's image samples have decides it
        (the earliest of equals), and the samples of another length become DLQ outcomes. Only events that became
        samples count: one refused for any other reason never decides it."""
        lengths = Counter(len(o.record["embedding"]) for o in outcomes if o.kind == "sample"
                          and o.record["schema"] == IMAGE_SAMPLE and o.record["embedding"] is not None)
        if not lengths or self.embedding_dim.value is not None:
            return
        dim = self.embedding_dim.decide(lengths.most_common(1)[0][0])
        for n, outcome in enumerate(outcomes):
            if (outcome.kind == "sample" and outcome.record["schema"] == IMAGE_SAMPLE
                    and outcome.record["embedding"] is not None and len(outcome.record["embedding"]) != dim):
                outcomes[n] = Outcome("invalid", error=InvalidEvent("invalid_value", "embedding",
                                                                    f"must have {dim} numbers"))


def _skip(event: dict[str, Any], family: str, reason: str) -> Outcome:
    return Outcome("skip", {"schema": "skip.v1", "event_id": event["event_id"], "ts": event["ts"], "family": family,
                            "reason": reason})


def broker_instant(ms: int) -> str:
    """A record timestamp (ms since the epoch) as a `ts`-style UTC instant."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
