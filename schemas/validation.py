"""Decode and validate event bytes. Every rejection names its machine-readable reason, the field and the rule.

This package depends on nothing else of learnstream's, so apps can vendor it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from schemas.types import (DLQ_ENTRY, DLQ_REDRIVEN, INTERNAL_SCHEMAS, INTERNAL_TOPIC_SCHEMAS, REDRIVE, SCHEMAS,
                           FieldRule)

DEFAULT_MAX_EVENT_BYTES = 512 * 1024
MAX_DEPTH = 8
# SQLite's integers are 64-bit: a larger JSON integer would fail the store's transaction, not the record.
MAX_INTEGER = 2**63 - 1
MAX_REDRIVE_HEADER_BYTES = 256
# Every machine-readable reason a DLQ entry can give (metrics start at 0 for each): validation's, then the stages'
# (not an anonymized record, an event the anonymizer could not process, a sample that cannot be unsealed).
DLQ_REASONS = (
    "oversize", "invalid_utf8", "invalid_json", "not_an_object", "too_deep", "unknown_schema", "missing_field",
    "missing_consent", "wrong_type", "invalid_value",
    "invalid_record", "anonymizer_error", "unsealable",
)


@dataclass
class InvalidEvent(Exception):
    """reason is machine-readable (dlq_by_reason); field and rule say what to fix."""

    reason: str
    field: str | None = None
    rule: str | None = None

    def __str__(self) -> str:
        where = f" at {self.field}" if self.field else ""
        return f"{self.reason}{where}: {self.rule}" if self.rule else f"{self.reason}{where}"

    def as_dict(self) -> dict[str, str | None]:
        return {"reason": self.reason, "field": self.field, "rule": self.rule}


def decode(raw: bytes, *, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> dict[str, Any]:
    """Bytes to a JSON object, or InvalidEvent (oversize, invalid_utf8, invalid_json, not_an_object, too_deep)."""
    if len(raw) > max_bytes:
        raise InvalidEvent("oversize", None, f"{len(raw)} bytes > limit {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent("invalid_utf8", None, f"byte {exc.start} is not UTF-8") from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson also refuses nesting deeper than 1024; that is too deep for us as well.
        reason = "too_deep" if "depth" in str(exc).lower() else "invalid_json"
        raise InvalidEvent(reason, None, str(exc).split(":")[0]) from None
    if not isinstance(value, dict):
        raise InvalidEvent("not_an_object", None, "an event is a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise InvalidEvent("too_deep", None, f"nesting deeper than {MAX_DEPTH}")
    return value


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


def validate(event: dict[str, Any], *, expected: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Check an event against its schema; returns it unchanged or raises InvalidEvent.

    expected limits the schemas a topic accepts (chat.raw takes only chat.v1); the stages' own record schemas
    (skip.v1, erasure.ledger.v1) are accepted only where a topic expects them.
    """
    if not isinstance(event, dict):
        raise InvalidEvent("not_an_object", None, "an event is a JSON object")
    schema = event.get("schema")
    if not isinstance(schema, str):
        raise InvalidEvent("missing_field" if schema is None else "wrong_type", "schema", "a string such as 'chat.v1'")
    known = SCHEMAS if expected is None else {**SCHEMAS, **INTERNAL_SCHEMAS}
    if schema not in known or (expected is not None and schema not in expected):
        allowed = ", ".join(expected or SCHEMAS)
        raise InvalidEvent("unknown_schema", "schema", f"{schema[:40]!r} is not one of: {allowed}")
    _check_object(event, known[schema], prefix="")
    return event


def validate_dlq_entry(entry: Any) -> dict[str, Any]:
    """Check a dead-letter entry as a stage reads it back (the store indexes it, `dlq` lists and redrives it)."""
    if not isinstance(entry, dict):
        raise InvalidEvent("not_an_object", None, "a DLQ entry is a JSON object")
    _check_object(entry, DLQ_ENTRY, prefix="")
    return entry


def validate_dlq_redriven(marker: Any) -> dict[str, Any]:
    """Check a redrive marker as the store and `dlq` read it back from a DLQ topic."""
    if not isinstance(marker, dict):
        raise InvalidEvent("not_an_object", None, "a redrive marker is a JSON object")
    _check_object(marker, DLQ_REDRIVEN, prefix="")
    return marker


def decode_redrive_header(raw: bytes) -> dict[str, Any]:
    """The redrive header of a record (anyone can set headers, so it is checked like an event)."""
    info = decode(raw, max_bytes=MAX_REDRIVE_HEADER_BYTES)
    _check_object(info, REDRIVE, prefix="")
    return info


def parse(raw: bytes, *, expected: tuple[str, ...] | None = None, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> dict:
    return validate(decode(raw, max_bytes=max_bytes), expected=expected)


def parse_internal(topic: str, raw: bytes) -> dict:
    """A record of an internal topic without a DLQ (`topic` without prefix, a key of INTERNAL_TOPIC_SCHEMAS),
    decoded and checked against the schemas that topic accepts; InvalidEvent for anything else."""
    return parse(raw, expected=INTERNAL_TOPIC_SCHEMAS[topic])


def is_utc_timestamp(text: object) -> bool:
    """An ISO-8601 timestamp with a zero offset (any of its forms)."""
    try:
        parsed = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return False
    return parsed.utcoffset() == timedelta(0)


def _check_object(obj: dict[str, Any], rules: dict[str, FieldRule], prefix: str) -> None:
    for name, rule in rules.items():
        path = f"{prefix}{name}"
        if name not in obj or obj[name] is None:
            if rule.required:
                reason = "missing_consent" if name == "consent" and not prefix else "missing_field"
                raise InvalidEvent(reason, path, "required")
            continue
        _check_value(obj[name], rule, path)


def _check_value(value: Any, rule: FieldRule, path: str) -> None:
    if not rule.accepts(value):
        raise InvalidEvent("wrong_type", path, f"must be {rule.describe()}")
    if rule.choices is not None and value not in rule.choices:
        raise InvalidEvent("invalid_value", path, f"must be one of {', '.join(map(str, rule.choices))}")
    if rule.kind == "integer" and not -MAX_INTEGER <= value <= MAX_INTEGER:
        raise InvalidEvent("invalid_value", path, "must fit in 64 bits")
    if rule.minimum is not None and value < rule.minimum:
        raise InvalidEvent("invalid_value", path, f"must be at least {rule.minimum}")
    if rule.non_empty and len(value) == 0:
        raise InvalidEvent("invalid_value", path, "must not be empty")
    if rule.timestamp and not is_utc_timestamp(value):
        raise InvalidEvent("invalid_value", path, "must be an ISO-8601 UTC time such as 2026-01-18T14:30:00Z")
    if rule.length is not None and len(value) != rule.length:
        raise InvalidEvent("invalid_value", path, f"must have exactly {rule.length} items")
    if rule.fields is not None:
        _check_object(value, rule.fields, prefix=f"{path}.")
    if rule.items is not None:
        for index, item in enumerate(value):
            _check_value(item, rule.items, f"{path}[{index}]")
