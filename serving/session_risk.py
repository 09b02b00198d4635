"""Session risk: once a turn is flagged, its session stays on the safety path for `safety_sticky_minutes` after
its last flag, unless a clinician clears it; and three turns in a row each under the crisis threshold whose
scores add up to it flag the session too (layer "combined"). A turn flagged only because its session is
(layer "session") is published too, but does not extend the window.

The state is rebuilt from safety.flags, which every replica follows from its beginning (no consumer group, one
partition, kept forever): a restarted replica and all its peers agree on which sessions are flagged. The
recent sub-threshold scores are per replica (a session's turns reach one replica while it is up); the flag
they cause is published like any other.

Events on safety.flags (no text, a pseudonymous session):
    {"schema": "safety.flag.v1", "event_id", "ts", "session", "category", "score", "layer"}
    {"schema": "safety.cleared.v1", "event_id", "ts", "session"}
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from datetime import datetime

from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError

from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.refusals import refuse
from schemas import InvalidEvent, parse_internal

log = logging.getLogger(__name__)

COMBINED_TURNS = 3


def _epoch(ts: object) -> float:
    if not isinstance(ts, str):
        raise ValueError("ts must be an ISO-8601 string")
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class SessionRisk:
    def __init__(self, *, sticky_s: float) -> None:
        self.sticky_s = sticky_s
        self._last_flag: dict[str, float] = {}  # session -> epoch seconds of its last flag
        self._recent: dict[str, deque[float]] = {}  # session -> its last sub-threshold scores

    def flagged(self, session: str, now: float | None = None) -> bool:
        last = self._last_flag.get(session)
        return last is not None and (time.time() if now is None else now) - last < self.sticky_s

    def combined(self, session: str, score: float, threshold: float) -> bool:
        """Record a sub-threshold score; True when the last COMBINED_TURNS scores together reach threshold."""
        recent = self._recent.setdefault(session, deque(maxlen=COMBINED_TURNS))
        recent.append(score)
        return len(recent) == COMBINED_TURNS and sum(recent) >= threshold

    def apply(self, event: dict) -> None:
        """One safety.flags event; raises ValueError on a malformed one (the caller logs and skips it)."""
        session, schema = event.get("session"), event.get("schema")
        if not isinstance(session, str) or not session:
            raise ValueError("session must be a non-empty string")
        at = _epoch(event.get("ts"))
        if schema == "safety.flag.v1":
            if event.get("layer") == "session":
                return  # a turn flagged only because its session was: it neither extends the window nor races a clear
            self._last_flag[session] = max(at, self._last_flag.get(session, at))
        elif schema == "safety.cleared.v1":
            if self._last_flag.get(session, at) <= at:
                self._last_flag.pop(session, None)
            self._recent.pop(session, None)
        else:
            raise ValueError(f"unknown schema {schema!r}")


class SessionRiskFollower:
    """Reads safety.flags from its beginning into a SessionRisk at start(), then follows it in run()."""

    def __init__(self, settings: Settings, risk: SessionRisk) -> None:
        self.risk = risk
        self._partition = TopicPartition(topics.prefixed(settings, topics.SAFETY_FLAGS), 0)
        self._consumer = kafka.consumer(settings, group_id=f"safety-{uuid.uuid4().hex[:12]}")
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign([self._partition])
        await self._consumer.seek_to_beginning(self._partition)
        end = (await self._consumer.end_offsets([self._partition]))[self._partition]
        while await self._consumer.position(self._partition) < end:
            await self._apply_batch(timeout_ms=1000)

    async def stop(self) -> None:
        self._stopping.set()
        await self._consumer.stop()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._apply_batch(timeout_ms=500)
            except ConsumerStoppedError:
                return

    async def _apply_batch(self, *, timeout_ms: int) -> None:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms)
        for records in batch.values():
            for record in records:
                try:
                    self.risk.apply(parse_internal(topics.SAFETY_FLAGS, record.value or b""))
                except InvalidEvent as error:
                    refuse(topics.SAFETY_FLAGS, record.partition, record.offset, error)
