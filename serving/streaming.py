"""POST /api/chat as server-sent events: the local model's reply token by token, anything else whole.

Every event is `data: {json}\\n\\n`: {"text": piece} for each piece of the reply, then one final
{"done": true, "reply", "model_version", "backend"}, or, if the reply fails, {"done": true, "error"} instead.
Once the response has started its status is 200 for good, so failures are told in the stream, never as a
traceback. Only a local-mode reply streams: a crisis reply, a remote one and a hybrid one (whose confidence
fallback needs the whole local reply first) arrive as one text event before the final event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from serving.backends import BackendError

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
STALL_SECONDS = 20.0  # a local model silent this long between two tokens ends the stream with an error


def wants_stream(request: web.Request, body: dict[str, Any]) -> bool:
    """True for "stream": true or Accept: text/event-stream; a "stream" that is not a boolean is a 400."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise web.HTTPBadRequest(text=orjson.dumps({"error": "stream must be true or false"}).decode(),
                                 content_type="application/json")
    return stream or EVENT_STREAM in request.headers.get("Accept", "")


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class TokenStreamer:
    """transformers' streamer protocol (put, end), handing each new piece of reply text to emit.

    generate() puts the prompt first (skipped), then each new token. The tokens so far are decoded whole and
    only the new suffix is emitted, so a character split over byte tokens is sent once complete (a trailing
    U+FFFD waits, for at most MAX_CHAR_TOKENS tokens: no UTF-8 character is longer, so beyond that it is what
    the model wrote), and leading blanks are dropped as generate_reply strips them. end() flushes the rest.
    Called from the engine thread.
    """

    MAX_CHAR_TOKENS = 4

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]) -> None:
        self._tokenizer = tokenizer
        self._emit = emit
        self._prompt_seen = False
        self._tokens: list[int] = []
        self._held = 0  # tokens put since the last piece was emitted
        self._sent = 0  # characters of the reply emitted so far

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._tokens.extend(value.reshape(-1).tolist())
        self._held += 1
        if self._held >= self.MAX_CHAR_TOKENS or not self._text().endswith("\ufffd"):
            self._flush()

    def end(self) -> None:
        self._flush()

    def _text(self) -> str:
        return self._tokenizer.decode(self._tokens, skip_special_tokens=True).lstrip()

    def _flush(self) -> None:
        text = self._text()
        self._held = 0
        if len(text) > self._sent:
            self._emit(text[self._sent:])
            self._sent = len(text)


async def stream_local(response: web.StreamResponse, served: Any, turns: list[str]) -> dict[str, Any] | None:
    """Streams the served chat model's reply to turns; the final event's fields, or None if nothing was sent
    before generation failed (the caller may then answer another way)."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    streamer = TokenStreamer(served.model.tokenizer,
                             lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))
    job = asyncio.ensure_future(served.model.reply(turns, streamer=streamer))
    # The engine queued every piece (call_soon_threadsafe) before it set the result: None comes last.
    job.add_done_callback(lambda _: pieces.put_nowait(None))
    sent = False
    try:
        while (piece := await asyncio.wait_for(pieces.get(), STALL_SECONDS)) is not None:
            await response.write(event({"text": piece}))
            sent = True
        text, _confidence = await job
    except TimeoutError:
        raise BackendError("local model stalled") from None
    except (BackendError, ConnectionError):
        raise
    except Exception as error:  # the model's failure; "from None": a chained error could carry the conversation
        if not sent:
            return None
        raise BackendError(f"local model failed: {type(error).__name__}") from None
    finally:
        job.cancel()  # a stall or a client gone: its sequence leaves the engine's batch (no-op once done)
    if not sent:  # the model wrote nothing but eos: generate_reply's fallback reply, whole
        await response.write(event({"text": text}))
    return {"reply": text, "model_version": served.version, "backend": "local"}


async def respond(
    request: web.Request,
    *,
    served: Any | None,
    turns: list[str],
    whole: Callable[[], Awaitable[dict[str, Any]]],
    remember: Callable[[str], None] = lambda reply: None,
) -> web.StreamResponse:
    """The chat reply as an event stream: streamed from served (a ModelHolder's current chat model) when given,
    else, or if it fails before its first token, whole() as one event; remember(reply) once it is complete."""
    response = web.StreamResponse(headers={"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        final = await stream_local(response, served, turns) if served is not None else None
        if final is None:
            final = await whole()
            await response.write(event({"text": final["reply"]}))
        remember(final["reply"])
        await response.write(event({"done": True, **final}))
    except ConnectionError:  # the client left; stream_local has taken its sequence out of the batch
        return response
    except web.HTTPException as error:  # whole()'s own account, e.g. 503 "no chat backend available"
        await response.write(event({"done": True, **_error_fields(error)}))
    except BackendError as error:
        log.error("chat stream: %s", error)
        await response.write(event({"done": True, "error": str(error)}))
    except Exception as error:  # never a traceback in the stream; only the type is logged, never user text
        log.error("chat stream failed: %s", type(error).__name__)
        await response.write(event({"done": True, "error": "the reply failed"}))
    await response.write_eof()
    return response


def _error_fields(error: web.HTTPException) -> dict[str, Any]:
    try:
        fields = orjson.loads(error.text or "")
    except orjson.JSONDecodeError:
        fields = None
    return fields if isinstance(fields, dict) and "error" in fields else {"error": error.reason}


__all__ = ["EVENT_STREAM", "TokenStreamer", "event", "respond", "stream_local", "wants_stream"]
