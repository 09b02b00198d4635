"""POST /api/chat as server-sent events: tokens from the local model, whole replies otherwise, errors in-stream."""

from __future__ import annotations

import orjson
import pytest
from aiohttp.test_utils import TestClient, make_mocked_request
from aiohttp.web import HTTPBadRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving import safety, streaming
from serving.chat_model import ChatModel
from serving.generation import GenerationSettings, generate_reply
from tests.test_generation import talkative_model, tokenizer  # noqa: F401 - fixtures
from tests.test_serving_app import (CRISIS, ROUTINE, Serve, remote_settings, serve, standin,  # noqa: F401
                                    template)

GREEDY = GenerationSettings(do_sample=False, max_new_tokens=12)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                    max_leaves=8)


# ---- pieces of the body and the stream -------------------------------------------------------------------------


def test_streamed_pieces_join_to_the_reply(talkative_model, tokenizer) -> None:  # noqa: F811
    pieces: list[str] = []
    streamer = streaming.TokenStreamer(tokenizer, pieces.append)
    streamed, _ = generate_reply(talkative_model, tokenizer, ["hello"], settings=GREEDY, streamer=streamer)
    whole, _ = generate_reply(talkative_model, tokenizer, ["hello"], settings=GREEDY)
    assert streamed == whole
    assert len(pieces) >= 2 and all(pieces)
    assert "".join(pieces).strip() == whole


@settings(max_examples=100, deadline=None)
@given(stream=JSON, accept=st.text())
def test_stream_flag_is_a_boolean_or_a_json_400(stream, accept: str) -> None:
    try:
        request = make_mocked_request("POST", "/api/chat", headers={"Accept": accept})
    except ValueError:  # a header value aiohttp itself refuses (e.g. a newline): no request to judge
        return
    try:
        wants = streaming.wants_stream(request, {"stream": stream})
    except HTTPBadRequest as error:
        assert not isinstance(stream, bool)
        assert "error" in orjson.loads(error.text)
        return
    assert isinstance(stream, bool)
    assert wants == (stream or streaming.EVENT_STREAM in accept)


# ---- over HTTP -------------------------------------------------------------------------------------------------


async def stream_chat(client: TestClient, message: str, *, session: str = "s-1", **extra) -> list[dict]:
    """The events of one streamed chat; every one but the last is a piece of text, the last says done."""
    headers = extra.pop("headers", {})
    response = await client.post("/api/chat", json={"session_id": session, "message": message, **extra},
                                 headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == streaming.EVENT_STREAM
    raw = await response.text()
    assert raw.endswith("\n\n")
    events = [orjson.loads(chunk.removeprefix("data: ")) for chunk in raw.split("\n\n") if chunk]
    assert all(set(event) == {"text"} for event in events[:-1]) and events[-1]["done"] is True
    return events


@pytest.mark.kafka
async def test_local_reply_streams_token_by_token_then_says_who_answered(serve: Serve) -> None:  # noqa: F811
    client, serving = await serve()
    events = await stream_chat(client, ROUTINE, stream=True)
    *pieces, final = events
    assert len(pieces) >= 2
    assert final["backend"] == "local" and final["model_version"] == 0
    assert "".join(piece["text"] for piece in pieces).strip() == final["reply"]
    assert serving.history.get(next(iter(serving.history._sessions))) [-1] == final["reply"]  # noqa: SLF001
    by_header = await stream_chat(client, ROUTINE, session="s-2", headers={"Accept": "text/event-stream"})
    assert len(by_header) >= 3 and by_header[-1]["backend"] == "local"


@pytest.mark.kafka
async def test_crisis_turn_streams_the_vetted_reply_whole_and_no_model_runs(
    serve: Serve, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    client, _ = await serve()
    calls: list[object] = []
    monkeypatch.setattr(ChatModel, "reply", lambda *args, **kwargs: calls.append(args))
    for message in CRISIS:
        # A session of its own: a flagged session stays on the safety path (and replicas share that through
        # safety.flags), which would turn the other tests' routine turns into safety replies.
        events = await stream_chat(client, message, session="s-crisis", stream=True)
        assert events[0] == {"text": safety.CRISIS_REPLY}
        assert len(events) == 2 and events[1]["backend"] == "safety"
        assert events[1]["model_version"] == 0
    assert calls == []


@pytest.mark.kafka
async def test_remote_reply_arrives_whole_as_one_event(serve: Serve, standin) -> None:  # noqa: F811
    client, _ = await serve(use_local_ai=False, **remote_settings(standin))
    events = await stream_chat(client, ROUTINE, stream=True)
    assert events == [{"text": standin.behaviour.reply},
                      {"done": True, "reply": standin.behaviour.reply, "model_version": None, "backend": "remote"}]


@pytest.mark.kafka
async def test_a_failing_model_ends_the_stream_with_an_error_event(
    serve: Serve, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    client, _ = await serve()

    async def broken(*args, **kwargs):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(ChatModel, "reply", broken)
    events = await stream_chat(client, ROUTINE, stream=True)
    assert events == [{"done": True, "error": "no chat backend available"}]


@pytest.mark.kafka
async def test_bad_streaming_bodies_get_a_json_400(serve: Serve) -> None:  # noqa: F811
    client, _ = await serve()
    for body in ({"session_id": "s", "message": ROUTINE, "stream": "yes"}, {"session_id": "s", "stream": True},
                 {"session_id": "s", "message": " ", "stream": True}):
        response = await client.post("/api/chat", json=body)
        assert response.status == 400, body
        assert "error" in await response.json()
    response = await client.post("/api/chat", data=b"{not json", headers={"Accept": "text/event-stream"})
    assert response.status == 400 and "error" in await response.json()
