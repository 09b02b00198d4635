"""`learnstream demo`: the whole loop, once, on the local broker with the bundled sample conversations.

Events in -> anonymized -> stored -> a training run at the threshold -> model.updated -> hot swap -> an answer
from the new version; twice. Each demo uses its own topic prefix and data folder, so it can be rerun.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from pathlib import Path

import aiohttp
import orjson

from learnstream.config import Settings
from learnstream.extras import TRAINING
from learnstream.keystore import KeyStore
from ops.broker import LocalBroker, free_port
from ops.up import Pipeline
from producers.jsonl import produce_lines
from producers.sdk import EventProducer

SAMPLES = Path(__file__).resolve().parent.parent / "producers" / "samples" / "chat.jsonl"
HALF = 24  # the sample file holds 48 chat events: two training runs


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


async def _chat(port: int, message: str) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{port}/api/chat",
                             json={"session_id": "demo-visitor", "message": message}) as response:
            return await response.json()


async def _wait_for_version(pipeline: Pipeline, number: int, *, timeout: float = 600) -> float:
    started = time.monotonic()
    while pipeline.serving.holders["chat"].version != number:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"version {number} was not served within {timeout:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def _demo(settings: Settings) -> None:
    lines = SAMPLES.read_bytes().splitlines()
    extra = [
        orjson.dumps({**orjson.loads(lines[0]), "event_id": "demo-no-consent", "consent": {"training": False}}),
        b'{"schema": "chat.v1", "event_id": "demo-broken", "text": "no user, no session"}',
    ]
    async with Pipeline(settings, http_port=settings.http_port) as pipeline:
        await _wait_for_version(pipeline, 0)
        reply = await _chat(settings.http_port, "I feel anxious about work.")
        _say(f"Before any training, version 0 (the base model) answers: {reply}")

        async with EventProducer(settings) as events:
            for number, batch in ((1, lines[:HALF] + extra), (2, lines[HALF:])):
                _say(f"Producing {len(batch)} chat events (threshold {settings.chat_threshold})")
                report = await produce_lines(events, batch, kind="chat", max_bytes=settings.max_event_bytes)
                for error in report.errors:
                    print(f"    rejected line {error['line']}: {error['reason']} at {error['field']}")
                if number == 1:  # what an app that skips validation might send: it lands in chat.raw.dlq
                    await events.send_raw("chat.raw", b'{"schema": "chat.v1", "text": ', key=b"demo")
                seconds = await _wait_for_version(pipeline, number)
                _say(f"Version {number} trained and hot-swapped {seconds:.1f}s after the events were sent")
                reply = await _chat(settings.http_port, "I feel anxious about work.")
                print(f"    /api/chat -> {reply}")

        status = await pipeline.serving.status(None)
        chat = orjson.loads(status.body)["families"]["chat"]
        _say("Training status (GET /api/ai/training-status, chat)")
        for key in ("samples_stored", "skipped_no_consent", "dlq", "dlq_by_reason", "served_version", "runs"):
            print(f"    {key}: {chat[key]}")
        with KeyStore(pipeline.settings.keys_path) as keys:
            sample = (await pipeline.serving.store.samples("chat", keys=keys))[0][1]
        _say("A stored sample: ids are keyed pseudonyms, names and places are placeholders")
        print(f"    {orjson.dumps(sample).decode()}")


def run_demo(settings: Settings) -> int:
    TRAINING["chat"].require()  # the demo shows training runs: without the ml extra it would wait for one forever
    broker = LocalBroker(settings.broker_dir)
    # The demo stops what it started: a broker that was already running (or a cluster) is left as it was.
    started_broker = not settings.bootstrap_servers and broker.status() is None
    bootstrap = settings.bootstrap_servers or broker.start()
    try:
        return _run_demo(settings, bootstrap)
    finally:
        if started_broker:
            broker.stop()
            _say("Stopped the broker the demo started.")


def _run_demo(settings: Settings, bootstrap: str) -> int:
    demo_dir = settings.data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    settings = dataclasses.replace(
        settings,
        bootstrap_servers=bootstrap,
        data_dir=demo_dir,
        topic_prefix=f"demo-{int(time.time())}.",
        dev=True,
        pseudonym_key=None,
        chat_threshold=HALF,
        http_port=free_port(),
    )
    _say(f"Kafka at {bootstrap}; state in {demo_dir}; serving on http://{settings.http_host}:{settings.http_port}")
    asyncio.run(_demo(settings))
    _say("Done. `learnstream up` runs the same services until stopped.")
    return 0
