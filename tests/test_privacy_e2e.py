"""Privacy end to end on the real broker: no raw PII at rest or in logs; erasure through store, topics and models."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from learnstream import kafka
from learnstream.keystore import KeyStore, unseal
from learnstream.pseudonym import pseudonym
from learnstream.registry import Registry
from learnstream.store import Store
from ops.logs import quiet_libraries
from producers.sdk import EventProducer
from schemas import utc_now
from tests.test_e2e import wait_served
from tests.test_pipeline import stored, stored_samples, wait_for

pytestmark = pytest.mark.kafka

PII = ["Priya Ramanathan", "07700 900461", "priya.r@example.com", "943 476 5919", "LS6 2QT", "alice-raw-id",
       "session-raw-77", "14 Cardigan Road"]
TEXT = ("Hi, I'm Priya Ramanathan, call me on 07700 900461 or priya.r@example.com. My NHS number is 943 476 5919 "
        "and I live at 14 Cardigan Road, Leeds LS6 2QT. I felt low on Monday and my GP suggested CBT.")


def event(n: int, *, user: str, session: str, text: str, role: str = "patient") -> dict:
    return {"schema": "chat.v1", "event_id": f"{session}-{n}", "ts": utc_now(), "user_id": user,
            "session_id": session, "role": role, "text": text, "consent": {"training": True}}


async def anon_records(settings) -> list[dict]:
    return [orjson.loads(r.value) async for r in kafka.read_to_end(settings, ["chat.anon"])]


async def test_known_pii_is_nowhere_at_rest_nor_in_logs(make_settings, start_pipeline, caplog):
    caplog.set_level(logging.DEBUG)
    quiet_libraries(verbose=True)  # what `learnstream -v` runs with: our DEBUG, libraries at INFO
    settings = make_settings(chat_threshold=6)
    pipeline = await start_pipeline(settings)
    async with EventProducer(settings) as events:
        for n in range(6):
            role = "patient" if n % 2 == 0 else "therapist"
            reply = "Thank you Priya Ramanathan, I will ring 07700 900461."
            await events.send(event(n, user="alice-raw-id", session=f"session-raw-7{n // 3 + 6}",
                                    text=TEXT if role == "patient" else reply, role=role))
    await wait_served(pipeline, 1)
    samples = await stored_samples(settings)
    assert len(samples) == 6 and "GP suggested CBT" in samples[0]["text"]  # clinical words are kept
    # Every file at rest: store (with its WAL), keys, registry (weights, tokenizer, manifests), trainer state.
    files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    at_rest = b"".join(p.read_bytes() for p in files)
    topic = b"".join(orjson.dumps(r) for r in await anon_records(settings))
    keys = KeyStore(settings.keys_path)
    opened = b"".join(orjson.dumps(unseal(r, keys)) for r in await anon_records(settings) if "sealed" in r)
    logs = caplog.text.encode()
    for secret in PII:
        for variant in {secret, secret.lower(), secret.replace(" ", "")}:
            needle = variant.encode()
            assert needle not in at_rest, f"{secret!r} found in the data dir"
            assert needle not in topic and needle not in opened, f"{secret!r} found on chat.anon"
            assert needle not in logs, f"{secret!r} found in the logs"


async def test_erasure_end_to_end(make_settings, start_pipeline):
    settings = make_settings(chat_threshold=8)
    pipeline = await start_pipeline(settings)
    async with EventProducer(settings) as events:
        for n in range(8):
            user = "erase-me" if n < 4 else "keep-me"
            # two conversations each, so even the retrain on keep-me alone holds one out (no blind promotion)
            await events.send(event(n, user=user, session=f"s-{user}-{n // 2}", text=f"turn {n} about sleep",
                                    role="patient" if n % 2 == 0 else "therapist"))
        await wait_served(pipeline, 1)
        await events.send({"schema": "erasure.v1", "event_id": "erase-1", "ts": utc_now(), "user_id": "erase-me"})
    owner = pseudonym(settings.key_bytes(), "user", "erase-me")

    async def erased() -> bool:
        async with Store(settings.store_path) as store:
            remaining = await store.db.execute_fetchall("SELECT 1 FROM samples WHERE owner = ?", (owner,))
            return not remaining and await store.count("chat") == 4

    await wait_for(erased)
    # The long-retention topic still holds their records, but nobody can read them any more.
    keys = KeyStore(settings.keys_path)
    theirs = [r for r in await anon_records(settings) if r.get("owner") == owner and "sealed" in r]
    assert len(theirs) == 4 and all(unseal(r, keys) is None for r in theirs)
    status = orjson.loads((await pipeline.serving.status(None)).body)["families"]["chat"]
    assert status["erased_in_versions"] == [1]
    # Nobody asks: the erasure itself schedules a from-scratch run (threshold far away), which trains from the base
    # on keep-me's samples alone and is not marked.
    await wait_served(pipeline, 2)
    manifest = Registry(settings.registry_dir).get("chat", 2).manifest
    assert manifest["from_scratch"] and manifest["parent_version"] == 0
    assert manifest["samples"] == 4  # keep-me's four stored samples; erase-me's four are gone
    status = orjson.loads((await pipeline.serving.status(None)).body)["families"]["chat"]
    assert status["erased_in_versions"] == [1]
    assert status["erasure_retrain_pending"] is False
    assert status["versions"][-1]["version"] == 2
    # Nothing else was due: no run follows (the image family had none of their samples).
    await asyncio.sleep(1)
    assert [v.number for v in Registry(settings.registry_dir).versions("chat")] == [0, 1, 2]
    assert Registry(settings.registry_dir).served("image") == 0


async def test_replayed_store_skips_erased_owners(make_settings, start_pipeline):
    from consumers.replay import replay

    settings = make_settings()
    pipeline = await start_pipeline(settings, roles=("anonymizer", "store"))
    async with EventProducer(settings) as events:
        for n in range(4):
            await events.send(event(n, user="gone" if n < 2 else "stays", session=f"r-{n}", text="hello"))
        await asyncio.sleep(0.5)
        await events.send({"schema": "erasure.v1", "event_id": "e-gone", "ts": utc_now(), "user_id": "gone"})

    async def settled() -> str | None:
        async with Store(settings.store_path) as store:
            return await store.content_hash() if await store.count("chat") == 2 else None

    live_hash = await wait_for(settled)
    await pipeline.stop()  # replay refuses to swap the store under a running store writer
    result = await replay(settings)
    assert result.content_sha256 == live_hash and result.records >= 6


async def test_a_person_who_comes_back_is_erased_again_with_everything_given_in_between(make_settings,
                                                                                        start_pipeline):
    """Erase, new consented events (their app's clock hours ahead), a run on them, erase again: that run's version
    is marked, the store keeps none of their samples, and the from-scratch run that follows trains on none."""
    from datetime import UTC, datetime, timedelta

    from learnstream import lineage

    settings = make_settings(chat_threshold=8)
    pipeline = await start_pipeline(settings)
    owner = pseudonym(settings.key_bytes(), "user", "returns")
    ahead = (datetime.now(UTC) + timedelta(hours=3)).isoformat()

    async def turns(run: int, users: tuple[str, ...], **fields) -> None:
        async with EventProducer(settings) as events:
            for user in users:
                for n in range(4):  # two conversations each: a from-scratch run on one person still holds one out
                    await events.send({**event(n, user=user, session=f"s-{user}-{run}-{n // 2}", text=f"turn {n}",
                                               role="patient" if n % 2 == 0 else "therapist"), **fields})

    async def erased(n: int, *, after: str | None = None) -> str:
        """Erase them; the ledger's instant once the store applied it (a new one, when after is given)."""
        async with EventProducer(settings) as events:
            await events.send({"schema": "erasure.v1", "event_id": f"erase-{n}", "ts": utc_now(), "user_id": "returns"})

        async def applied() -> str | None:
            async with Store(settings.store_path) as store:
                theirs = await store.db.execute_fetchall("SELECT 1 FROM samples WHERE owner = ?", (owner,))
                at = (await store.erasures()).get(owner)
            return at if not theirs and at not in (None, after) else None
        return await wait_for(applied)

    async def four_stored() -> bool:
        return await stored(settings) == 4

    await turns(1, ("returns",))  # below the threshold: no model sees these
    await wait_for(four_stored)
    first = await erased(1)
    await turns(2, ("returns", "keep-me"), ts=ahead)  # they come back, consenting again: v1 trains on it
    await wait_served(pipeline, 1)
    second = await erased(2, after=first)
    await wait_served(pipeline, 2)  # the from-scratch run the second erasure scheduled, promoted
    assert datetime.fromisoformat(second) > datetime.fromisoformat(first)  # the ledger keeps the latest erasure
    status = orjson.loads((await pipeline.serving.status(None)).body)["families"]["chat"]
    assert status["erased_in_versions"] == [1]
    assert status["versions"][1]["erased"] == "trained on samples of 1 erased person(s)"
    v2 = Registry(settings.registry_dir).get("chat", 2)
    assert v2.manifest["from_scratch"] and owner not in lineage.read(v2.path, v2.manifest)
    assert v2.manifest["samples"] == 4  # keep-me's; none of theirs from either time
    async with Store(settings.store_path) as store:
        assert await store.count("chat") == 4
