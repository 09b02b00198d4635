"""`learnstream replay` on the real broker: the store rebuilt from the *.anon topics has the live store's content
hash, honours erasures, repairs what the live store lost while every sample keeps its id, and refuses to run
beside a store writer."""

from __future__ import annotations

import asyncio
import json

import pytest

from consumers.replay import ReplayRefused, replay
from learnstream.pseudonym import pseudonym
from learnstream.store import Store
from producers.sdk import EventProducer
from tests.procs import run_cli
from tests.test_dlq import image_event
from tests.test_pipeline import chat_event, stored_at_least, wait_for

pytestmark = pytest.mark.kafka


async def ids_by_event(store: Store) -> dict[str, int]:
    rows = await (await store.db.execute("SELECT event_id, id FROM samples")).fetchall()
    return dict(rows)


async def fill(settings, start_pipeline) -> None:
    """Both families, a consent skip, a bad event, and an erasure with a sample from after it."""
    pipeline = await start_pipeline(settings, roles=("anonymizer", "store"))
    async with EventProducer(settings) as events:
        for n in range(30):
            event = chat_event(n, session=f"s-{n % 3}")
            await events.send({**event, "user_id": "u-bob" if n % 3 == 0 else "u-alice"}, wait=False)
        await events.send(chat_event(40, consent=False), wait=False)
        for n in range(6):
            await events.send(image_event(event_id=f"img-e{n}", image_id=f"img-{n}", tags=["beach", "sunset"]),
                              wait=False)
        await events.send_raw("chat.raw", b"{broken", key=b"k")
        await events.flush()
        await wait_for(lambda: stored_at_least(settings, 30))  # bob's samples are stored before he is erased
        await events.send({"schema": "erasure.v1", "event_id": "erase-bob", "ts": "2026-11-01T11:00:00Z",
                           "user_id": "u-bob"})
    async with Store(settings.store_path) as store:
        await wait_for(lambda: _erased(store))
    async with EventProducer(settings) as events:  # bob comes back, after his erasure
        await events.send({**chat_event(50), "user_id": "u-bob", "ts": "2026-11-01T12:00:00Z"})
    await wait_for(lambda: stored_at_least(settings, 20 + 1))
    await wait_for(lambda: stored_at_least(settings, 6, "image"))
    await pipeline.stop()  # replay needs the store writer stopped


async def _erased(store: Store) -> bool:
    return bool(await store.erased_samples("chat"))


async def _dlq(store: Store) -> bool:
    return bool(await store.dlq_by_reason("chat"))


async def test_replay_rebuilds_the_live_content_repairs_losses_and_keeps_ids(make_settings, start_pipeline):
    settings = make_settings(ner_model="")
    await fill(settings, start_pipeline)
    async with Store(settings.store_path) as store:
        live_hash = await store.content_hash()
        live_ids = await ids_by_event(store)
        erased = await store.erased_samples("chat")
        # A damaged live store: three samples lost, one altered, one that is on no topic.
        lost, altered = sorted(live_ids)[:3], sorted(live_ids)[3]
        await store.db.execute(f"DELETE FROM samples WHERE event_id IN ({','.join('?' * len(lost))})", lost)
        await store.db.execute("UPDATE samples SET body = ? WHERE event_id = ?", (b"{}", altered))
        await store.db.execute("INSERT INTO samples(event_id, family, ts, owner, grp, body) "
                               "SELECT 'stray', family, ts, owner, grp, body FROM samples LIMIT 1")
        await store.db.commit()
        assert await store.content_hash() != live_hash
    key = settings.key_bytes()
    bob_before_erasure = {pseudonym(key, "event", f"e-s-{n % 3}-{n}") for n in range(0, 30, 3)}
    assert not bob_before_erasure & set(live_ids)

    done = await asyncio.to_thread(run_cli, settings, "replay")
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["content_sha256"] == live_hash
    assert report["rebuild_seconds"] > 0 and report["swap_seconds"] > 0  # where the time went
    assert "records" in done.stderr and "/s" in done.stderr  # the progress bar with its rate

    async with Store(settings.store_path) as store:
        assert await store.content_hash() == live_hash
        rebuilt_ids = await ids_by_event(store)
        assert set(rebuilt_ids) == set(live_ids)
        assert {e: rebuilt_ids[e] for e in live_ids if e not in lost} == {e: i for e, i in live_ids.items()
                                                                          if e not in lost}
        assert min(rebuilt_ids[e] for e in lost) > max(live_ids.values())  # new to the trainer: trained next run
        assert await store.erased_samples("chat") == erased
        assert await store.skipped_count("chat") == 1
        assert sum((await store.dlq_by_reason("chat")).values()) == 1


async def test_replay_refuses_while_a_store_writer_runs(make_settings, start_pipeline):
    settings = make_settings(ner_model="")
    await start_pipeline(settings, roles=("store",))
    async with EventProducer(settings) as events:
        await events.send_raw("chat.anon", b"not a sample", key=b"k")
    async with Store(settings.store_path) as store:  # the writer is consuming: it indexed the bad record
        await wait_for(lambda: _dlq(store))
    with pytest.raises(ReplayRefused, match="stop the store role"):
        await replay(settings)
