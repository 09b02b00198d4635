"""HTTP limits: JSON error bodies for every status, per-route body limits, 429 with Retry-After under a burst."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings as hsettings, strategies as st

from serving import limits


async def client_for(*, max_concurrent: int = 2) -> tuple[TestClient, asyncio.Event]:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request.read())})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    app = web.Application(client_max_size=1 << 20, middlewares=[
        limits.json_errors, limits.concurrency_limit(max_concurrent),
        limits.body_limits({"/big": 1 << 20}, default=1024)])
    app.router.add_get("/slow", slow)
    app.router.add_post("/small", echo)
    app.router.add_post("/big", echo)
    app.router.add_get("/healthz", healthz)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, release


async def test_a_burst_gets_429_with_retry_after_and_health_still_answers() -> None:
    client, release = await client_for(max_concurrent=2)
    try:
        held = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
        await asyncio.sleep(0.2)
        refused = await client.get("/slow")
        assert refused.status == 429 and refused.headers["Retry-After"] == "1"
        assert "error" in await refused.json()
        assert (await client.get("/healthz")).status == 200
        release.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.get("/slow")).status == 200
    finally:
        await client.close()


async def chunks(chunk: bytes, count: int):
    for _ in range(count):
        yield chunk


async def test_every_error_is_json_and_bodies_have_per_route_limits() -> None:
    client, _ = await client_for()
    try:
        for response, status in (
            (await client.get("/nowhere"), 404),
            (await client.get("/small"), 405),
            (await client.post("/small", data=b"x" * 2048), 413),
            (await client.post("/small", data=chunks(b"x" * 512, 4)), 413),  # chunked: no Content-Length
        ):
            assert response.status == status
            assert response.content_type == "application/json" and (await response.json())["error"]
        assert (await client.get("/small")).headers["Allow"] == "POST"
        assert (await (await client.post("/big", data=b"x" * 4096)).json()) == {"bytes": 4096}
    finally:
        await client.close()


@hsettings(max_examples=50, deadline=None)
@given(st.integers(min_value=400, max_value=599), st.text())
def test_json_error_bodies_carry_any_reason(status: int, reason: str) -> None:
    response = limits.json_error(status, reason)
    assert response.status == status and response.content_type == "application/json"
