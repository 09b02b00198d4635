"""The app-side SDK: validate an event, then publish it to its raw topic.

Idempotent and acks=all (a retry never writes twice; an ack means the broker has it), keyed by session (chat),
image (image) or user (erasure) so one conversation stays in order on one partition.

    async with EventProducer(settings) as events:
        await events.send({"schema": "chat.v1", ...})
"""

from __future__ import annotations

from typing import Any

import orjson

from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.metrics import PRODUCED
from schemas import InvalidEvent, validate

# schema -> (raw topic, the field that keys it)
_ROUTES = {
    "chat.v1": (topics.raw("chat"), "session_id"),
    "image.v1": (topics.raw("image"), "image_id"),
    "erasure.v1": (topics.ERASURE_REQUESTS, "user_id"),
}


def route(event: dict[str, Any]) -> tuple[str, bytes]:
    """(raw topic without prefix, key) for a valid app event; InvalidEvent for other schemas."""
    try:
        topic, key_field = _ROUTES[event["schema"]]
    except KeyError:
        raise InvalidEvent("unknown_schema", "schema", f"apps send one of: {', '.join(_ROUTES)}") from None
    return topic, str(event[key_field]).encode()


class EventProducer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer = kafka.producer(settings)

    async def start(self) -> None:
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()  # a producer that never connected is still closed: no "Unclosed" warning
            raise

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> "EventProducer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, event: dict[str, Any], *, wait: bool = True) -> None:
        """Validate and publish; raises InvalidEvent (nothing sent) when the event is not valid.
        wait=False returns once the event is queued (call flush() before relying on it)."""
        validate(event)
        topic, key = route(event)
        await self.send_raw(topic, orjson.dumps(event), key=key, wait=wait)

    async def send_raw(self, topic: str, value: bytes, *, key: bytes | None, wait: bool = True) -> None:
        """Publish bytes as they are (tests and tools that need to send what an app might get wrong)."""
        name = topics.prefixed(self.settings, topic)
        if wait:
            await self._producer.send_and_wait(name, value, key=key)
        else:
            await self._producer.send(name, value, key=key)
        PRODUCED.labels(topic=topic).inc()

    async def flush(self) -> None:
        await self._producer.flush()
