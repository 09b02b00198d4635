"""Event schemas and validation: the one place that says what a valid event is."""

from datetime import UTC, datetime
from uuid import uuid4

from schemas.types import INTERNAL_TOPIC_SCHEMAS, RAW_TOPIC_SCHEMAS, SCHEMAS, FieldRule
from schemas.validation import (
    DEFAULT_MAX_EVENT_BYTES,
    DLQ_REASONS,
    InvalidEvent,
    decode,
    decode_redrive_header,
    is_utc_timestamp,
    parse,
    parse_internal,
    validate,
    validate_dlq_entry,
    validate_dlq_redriven,
)


def utc_now() -> str:
    """The `ts` of a new event."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_instant(text: str) -> datetime:
    """A validated `ts` (any ISO-8601 form with an offset) as an aware UTC instant, so that timestamps compare by
    time, never as strings."""
    return datetime.fromisoformat(text).astimezone(UTC)


def new_event_id() -> str:
    return uuid4().hex


__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DLQ_REASONS",
    "FieldRule",
    "INTERNAL_TOPIC_SCHEMAS",
    "InvalidEvent",
    "RAW_TOPIC_SCHEMAS",
    "SCHEMAS",
    "decode",
    "decode_redrive_header",
    "is_utc_timestamp",
    "new_event_id",
    "parse",
    "parse_internal",
    "utc_instant",
    "utc_now",
    "validate",
    "validate_dlq_entry",
    "validate_dlq_redriven",
]
