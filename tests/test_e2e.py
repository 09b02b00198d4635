"""The whole loop on the real broker: N events at threshold N -> version 1 served -> N more -> version 2 served,
while a client keeps chatting, with 0 failed requests."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from producers.sdk import EventProducer
from tests.test_pipeline import chat_event

pytestmark = pytest.mark.kafka

N = 8


class Chatter:
    """Chats without pause; records every answer's version and every failure."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/api/chat"
        self.versions: list[int] = []
        self.failures: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    async with http.post(self.url, json={"session_id": f"c-{n % 4}", "message": "I feel tense"}) as r:
                        body = await r.json()
                        if r.status != 200 or not body.get("reply"):
                            self.failures.append(f"{r.status}: {body}")
                        else:
                            self.versions.append(body["model_version"])
                except aiohttp.ClientError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()


async def wait_served(pipeline, version: int, *, timeout: float = 180) -> float:
    started = time.monotonic()
    while pipeline.serving.holders["chat"].version != version:
        assert time.monotonic() - started < timeout, f"version {version} not served in {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_threshold_to_hot_swap_with_zero_failed_requests(make_settings, start_pipeline, capsys):
    settings = make_settings(chat_threshold=N)
    pipeline = await start_pipeline(settings)
    await wait_served(pipeline, 0)
    chatter = Chatter(settings.http_port)
    client = asyncio.create_task(chatter.run())
    seconds = []
    async with EventProducer(settings) as events:
        for run in (1, 2):
            for n in range(N):  # two conversations per run (so the trainer can hold one out), roles alternating
                await events.send(chat_event(n, session=f"s-{run}-{n // (N // 2)}"))
            seconds.append(await wait_served(pipeline, run))
    await asyncio.sleep(0.5)  # a few requests on version 2
    chatter.stop()
    await client
    assert chatter.failures == []
    assert {0, 1, 2} <= set(chatter.versions)
    assert chatter.versions == sorted(chatter.versions)  # never back to an older model
    status = (await pipeline.serving.status(None)).text
    assert '"runs":2' in status.replace(" ", "")
    with capsys.disabled():
        print(f"\n[e2e] threshold crossing -> new version answering: {seconds[0]:.1f}s, {seconds[1]:.1f}s; "
              f"{len(chatter.versions)} requests, 0 failed")
