"""The photo-library loop on the real broker: image events -> anonymized store -> image training at the
threshold -> hot swap -> enhance, search, people and identify answer from the new version; nothing identifying at
rest."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from producers.sdk import EventProducer
from tests.image_synth import SyntheticWorld
from tests.test_pipeline import stored_samples

pytestmark = pytest.mark.kafka

N = 240


async def wait_image_version(pipeline, version: int, *, timeout: float = 180) -> None:
    started = time.monotonic()
    while pipeline.serving.holders["image"].version != version:
        assert time.monotonic() - started < timeout, f"image version {version} not served in {timeout}s"
        await asyncio.sleep(0.1)


async def test_image_loop_learns_and_serves(make_settings, start_pipeline):
    world = SyntheticWorld(seed=3)
    library = world.library(N, seed=11)
    settings = make_settings(image_threshold=N)
    pipeline = await start_pipeline(settings)
    await wait_image_version(pipeline, 0)
    async with EventProducer(settings) as events:
        for event in library.events:
            await events.send(event, wait=False)
        await events.flush()
    await wait_image_version(pipeline, 1)

    base = f"http://127.0.0.1:{settings.http_port}"
    probe = next(e for e in library.events if e.get("embedding"))
    category = library.truth[probe["image_id"]].category
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/images/enhance", json={"embedding": probe["embedding"]}) as r:
            enhanced = await r.json()
        async with http.post(f"{base}/api/images/enhance", json={}) as r:
            assert r.status == 400
        tag = sorted(world.vocabulary(category))[0]
        async with http.get(f"{base}/api/images/search", params={"q": tag, "limit": "5"}) as r:
            found = await r.json()
        async with http.get(f"{base}/api/images/people") as r:
            people = (await r.json())["people"]
        clustered = {image_id for person in people for image_id in person["image_ids"]}
        seen = next(e for e in library.events if e["image_id"] in clustered)
        faces = {"faces": [face["embedding"] for face in seen["faces"]], "consent": {"faces": True}}
        async with http.post(f"{base}/api/images/identify", params={"user_id": seen["user_id"]}, json=faces) as r:
            identified = await r.json()
        async with http.get(f"{base}/api/ai/training-status") as r:
            image_status = (await r.json())["families"]["image"]
    assert enhanced["model_version"] == 1 and enhanced["category"] == category
    assert len(enhanced["suggested_tags"]) >= 3 and enhanced["description"]
    assert found["results"] and found["expanded_terms"]
    assert people and all(p["image_ids"] for p in people)
    assert identified["model_version"] == 1 and len(identified["people"]) == len(seen["faces"])
    assert set(identified["people"]) - {None} <= {p["person_id"] for p in people if seen["image_id"] in p["image_ids"]}
    assert any(identified["people"])
    assert image_status["report"]["total_images"] == N and image_status["served_version"] == 1

    no_consent = {e["image_id"] for e in library.events if not e["consent"].get("faces")}
    assert not no_consent & {i for p in people for i in p["image_ids"]} - _images_with_consented_faces(library)
    stored = await stored_samples(settings, "image")
    assert all(not s["faces"] for s in stored if s["image_id"] in no_consent)
    at_rest = b"".join(p.read_bytes() for p in settings.data_dir.rglob("*") if p.is_file())
    for secret in library.secrets:
        assert secret.encode() not in at_rest, f"{secret!r} found at rest"


def _images_with_consented_faces(library) -> set[str]:
    return {e["image_id"] for e in library.events if e["consent"].get("faces") and e.get("faces")}
