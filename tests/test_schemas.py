"""Schema validation: valid events pass; every rejection names its reason, field and rule."""

import orjson
import pytest

from schemas import InvalidEvent, decode, parse, utc_now, validate

CHAT = {"schema": "chat.v1", "event_id": "e1", "ts": "2026-11-01T10:00:00Z", "user_id": "u-1",
        "session_id": "s-1", "role": "patient", "text": "hello", "consent": {"training": True}}
IMAGE = {"schema": "image.v1", "event_id": "i1", "ts": "2026-11-01T10:00:00Z", "user_id": "u-7",
         "image_id": "img-42", "caption": "a red dress", "tags": ["portrait"], "embedding": [0.1, 0.2],
         "faces": [{"embedding": [0.3, 0.4], "box": [1, 2, 3, 4]}], "consent": {"training": True, "faces": False}}
UPDATED = {"schema": "model.updated.v1", "event_id": "m1", "ts": utc_now(), "family": "chat", "version": 3,
           "decision": "promoted", "reason": "better", "path": "chat/3", "manifest_sha256": "ab", "metrics": {},
           "parent_version": 2}


@pytest.mark.parametrize("event", [CHAT, IMAGE, UPDATED,
                                   {**CHAT, "mood": {"score": 3, "label": "low"}, "assessment": {"phq9": 14}},
                                   {"schema": "erasure.v1", "event_id": "x", "ts": utc_now(), "user_id": "u-1"}])
def test_valid_events_pass(event):
    assert validate(dict(event)) == event


@pytest.mark.parametrize("change, reason, field", [
    ({"schema": "chat.v9"}, "unknown_schema", "schema"),
    ({"user_id": None}, "missing_field", "user_id"),
    ({"event_id": ""}, "invalid_value", "event_id"),
    ({"role": "doctor"}, "invalid_value", "role"),
    ({"text": 42}, "wrong_type", "text"),
    ({"consent": None}, "missing_consent", "consent"),
    ({"consent": {"training": "yes"}}, "wrong_type", "consent.training"),
    ({"mood": {"score": "3"}}, "wrong_type", "mood.score"),
    ({"assessment": {"phq9": 1.5}}, "wrong_type", "assessment.phq9"),
    ({"ts": "2026-11-01T10:00:00+02:00"}, "invalid_value", "ts"),
    ({"ts": True}, "wrong_type", "ts"),
])
def test_invalid_chat_events_name_reason_and_field(change, reason, field):
    with pytest.raises(InvalidEvent) as caught:
        validate({**CHAT, **change})
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.rule


@pytest.mark.parametrize("change, field", [
    ({"embedding": ["x"]}, "embedding[0]"),
    ({"faces": [{"embedding": [1.0], "box": [1, 2, 3]}]}, "faces[0].box"),
    ({"tags": "portrait"}, "tags"),
    ({"consent": {"training": True, "faces": 1}}, "consent.faces"),
])
def test_invalid_image_fields(change, field):
    with pytest.raises(InvalidEvent) as caught:
        validate({**IMAGE, **change})
    assert caught.value.field == field


@pytest.mark.parametrize("raw, reason", [
    (b"\xff\xfe", "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b"[" * 5000 + b"]" * 5000, "too_deep"),
    (orjson.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}), "too_deep"),
])
def test_undecodable_bytes(raw, reason):
    with pytest.raises(InvalidEvent) as caught:
        decode(raw)
    assert caught.value.reason == reason


def test_oversize_and_topic_schema():
    with pytest.raises(InvalidEvent) as caught:
        parse(orjson.dumps({**CHAT, "text": "x" * 2000}), max_bytes=1000)
    assert caught.value.reason == "oversize"
    with pytest.raises(InvalidEvent) as caught:
        parse(orjson.dumps(IMAGE), expected=("chat.v1",))
    assert caught.value.reason == "unknown_schema"
