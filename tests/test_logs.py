"""Log hygiene: library retry loops do not drown the service's own messages."""

from __future__ import annotations

import logging

from ops.logs import RepeatLimiter


def record(name: str, msg: str, created: float, *args: object) -> logging.LogRecord:
    entry = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)
    entry.created = created
    return entry


def test_a_library_message_repeating_in_a_retry_loop_passes_once_per_period_with_a_count() -> None:
    limiter = RepeatLimiter(every_s=30)
    retries = [record("aiokafka.conn", "Unable connect to %r", 100 + n / 10, "127.0.0.1:9092") for n in range(50)]
    passed = [r for r in retries if limiter.filter(r)]
    assert passed == retries[:1]
    later = record("aiokafka.conn", "Unable connect to %r", 131, "127.0.0.1:9092")
    assert limiter.filter(later) and later.getMessage() == (
        "Unable connect to '127.0.0.1:9092' (49 more like this in the last 31s)")


def test_other_messages_and_our_own_loggers_are_never_held_back() -> None:
    limiter = RepeatLimiter(every_s=30)
    assert limiter.filter(record("aiokafka.conn", "Unable connect to %r", 100, "a"))
    assert limiter.filter(record("aiokafka.producer", "Got error produce response", 100))
    assert all(limiter.filter(record("consumers.stage", "pausing %.1fs", 100 + n, 0.5)) for n in range(5))
