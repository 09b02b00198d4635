"""HTTP middlewares: JSON error bodies everywhere, per-route body limits, a concurrency limit with 429.

* Every error (401/403/404/405/413/429 included, whoever raised it: a handler, the router, aiohttp's body
  reader) answers {"error": reason} as JSON, keeping its headers (WWW-Authenticate, Allow, Retry-After).
* A request body larger than its route's limit is a 413 before it is read whole.
* At most `max_concurrent` requests are served at once; the next get 429 with Retry-After at once rather
  than queueing behind a slow model. Health checks and /metrics are never refused: probes must see the truth.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_SECONDS = 1


def json_error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"error": reason}), content_type="application/json",
                        headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return json_error(exc.status, exc.reason if not exc.text or exc.text.startswith(f"{exc.status}:")
                          else exc.text, headers)


def body_limits(limits: Mapping[str, int], *, default: int):
    """413 for a body over its route's limit (by path template, e.g. "/api/chat"); `default` for the rest."""

    @web.middleware
    async def limit_body(request: web.Request, handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        limit = limits.get(route.canonical if route is not None else "", default)
        if request.content_length is not None and request.content_length > limit:
            return json_error(413, f"the body is larger than this route's {limit} bytes")
        return await handler(request.clone(client_max_size=limit))

    return limit_body


def concurrency_limit(max_concurrent: int):
    in_flight = 0

    @web.middleware
    async def limit_concurrency(request: web.Request, handler) -> web.StreamResponse:
        nonlocal in_flight
        if request.path in UNLIMITED_PATHS:
            return await handler(request)
        if in_flight >= max_concurrent:
            return json_error(429, "too many requests at once; retry later",
                              {"Retry-After": str(RETRY_AFTER_SECONDS)})
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return limit_concurrency


__all__ = ["body_limits", "concurrency_limit", "json_error", "json_errors"]
