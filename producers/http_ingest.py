"""POST /api/events: for apps that cannot speak Kafka (the photo library is PHP).

Body: one JSON event, or JSON lines. Answer: {"sent": n, "errors": [{"line", "reason", "field", "rule"}]} with
202 when all were sent, 207 when some lines were rejected, 400 when none were.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from producers.jsonl import produce_lines
from producers.sdk import EventProducer

MAX_BODY_BYTES = 16 * 1024 * 1024


def _lines(body: bytes) -> list[bytes]:
    """A body that is one (possibly pretty-printed) JSON object is one event; otherwise it is JSON lines."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.splitlines()
    return [orjson.dumps(value)] if isinstance(value, dict) else body.splitlines()


def events_handler(events: EventProducer, *, max_event_bytes: int):
    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if not body.strip():
            raise web.HTTPBadRequest(text=orjson.dumps({"error": "the body is empty: send one JSON event or JSON "
                                                                  "lines"}).decode(), content_type="application/json")
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(body))
        report = await produce_lines(events, _lines(body), kind=None, max_bytes=max_event_bytes)
        status = 202 if not report.errors else (207 if report.sent else 400)
        return web.json_response({"sent": report.sent, "errors": report.errors}, status=status)

    return handle
