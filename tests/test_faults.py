"""Faults on the real broker, with 0 lost and 0 duplicated as the bar: consumer processes killed -9 mid-stream and
restarted; the broker stopped and started mid-stream (its data kept). After each, the stored event ids are exactly
the produced ones, and every consent skip and DLQ entry is counted once. CI runs the short versions; `-m slow`
the long ones."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaError

from consumers.store_writer import StoreWriterService
from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.pseudonym import pseudonym
from learnstream.store import Store
from ops.broker import LocalBroker, free_port
from producers.sdk import EventProducer
from tests.procs import RoleProcess
from tests.test_pipeline import chat_event, stored, stored_at_least, wait_for

pytestmark = pytest.mark.kafka

SESSIONS = 40  # keys spread over every partition
START = datetime(2026, 11, 1, tzinfo=UTC)
CHUNK = 50  # records sent (and acknowledged) together
DRAIN_TIMEOUT_S = 180


@dataclass
class Stream:
    """A stream of raw chat events: mostly valid, some without consent, some not even JSON."""

    valid: list[bytes] = field(default_factory=list)
    no_consent: list[bytes] = field(default_factory=list)
    broken: list[bytes] = field(default_factory=list)
    event_ids: set[str] = field(default_factory=set)  # of the valid ones

    @classmethod
    def make(cls, count: int, *, tag: str) -> "Stream":
        stream = cls()
        for n in range(count):
            event = chat_event(n, session=f"{tag}-{n % SESSIONS}", consent=n % 10 != 3)
            event["event_id"] = f"{tag}-{n}"
            event["ts"] = (START + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")
            if n % 50 == 7:
                stream.broken.append(b'{"schema": "chat.v1", "event_id": "' + str(n).encode() + b'"')
            elif event["consent"]["training"]:
                stream.valid.append(orjson.dumps(event))
                stream.event_ids.add(event["event_id"])
            else:
                stream.no_consent.append(orjson.dumps(event))
        return stream

    def records(self) -> list[bytes]:
        """Every record, interleaved in a fixed shuffled order."""
        records = self.valid + self.no_consent + self.broken
        random.Random(len(records)).shuffle(records)
        return records


async def produce(settings: Settings, records: list[bytes], *, per_second: float | None) -> None:
    """Send in acknowledged chunks, at a steady rate (None: at once). A send that fails (the broker is away) is sent
    again, as an app would: a retry must not store anything twice."""
    async with EventProducer(settings) as events:
        for start in range(0, len(records), CHUNK):
            pending = list(enumerate(records[start:start + CHUNK], start))
            while pending:
                results = await asyncio.gather(
                    *(events.send_raw("chat.raw", raw, key=f"k{n % SESSIONS}".encode()) for n, raw in pending),
                    return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException) and not isinstance(result, KafkaError):
                        raise result
                pending = [item for item, result in zip(pending, results) if isinstance(result, KafkaError)]
                if pending:
                    await asyncio.sleep(0.5)
            if per_second:
                await asyncio.sleep(CHUNK / per_second)


def shares(records: list[bytes], parts: int) -> list[list[bytes]]:
    """The records in `parts` contiguous slices, in order. A fault test sends one before each fault, so every fault
    has events in flight however fast the consumers got through the earlier ones."""
    bounds = [len(records) * part // parts for part in range(parts + 1)]
    return [records[start:end] for start, end in zip(bounds, bounds[1:])]


async def store_contents(settings: Settings) -> tuple[set[str], list[str], int, int]:
    """(stored event ids, the same as a list, consent skips, DLQ index rows) of the chat family."""
    async with Store(settings.store_path) as store:
        ids = [row[0] for row in await (await store.db.execute("SELECT event_id FROM samples")).fetchall()]
        dlq = sum((await store.dlq_by_reason("chat")).values())
        return set(ids), ids, await store.skipped_count("chat"), dlq


async def wait_drained(settings: Settings, stream: Stream, *, processes: list[RoleProcess]) -> None:
    deadline = asyncio.get_running_loop().time() + DRAIN_TIMEOUT_S
    expected = (len(stream.event_ids), len(stream.no_consent), len(stream.broken))
    while True:
        ids, _, skipped, dlq = await store_contents(settings) if settings.store_path.exists() else (set(), [], 0, 0)
        if all(have >= want for have, want in zip((len(ids), skipped, dlq), expected)):
            return
        if asyncio.get_running_loop().time() > deadline:
            logs = "\n".join(p.log_tail() for p in processes)
            raise AssertionError(f"stored {(len(ids), skipped, dlq)} of {expected} in time; logs:\n{logs}")
        await asyncio.sleep(0.5)


async def assert_exactly_once(settings: Settings, stream: Stream) -> None:
    key = settings.key_bytes()
    ids, id_list, skipped, dlq = await store_contents(settings)
    assert len(id_list) == len(ids), "a sample stored twice"
    assert ids == {pseudonym(key, "event", e) for e in stream.event_ids}, "lost or foreign samples"
    assert skipped == len(stream.no_consent), "consent skips lost or counted twice"
    assert dlq == len(stream.broken), "DLQ entries lost or counted twice"


async def anon_duplicates(settings: Settings) -> int:
    """Records on chat.anon beyond one per event: the redeliveries the store absorbed."""
    seen: dict[str, int] = {}
    async for record in kafka.read_to_end(settings, [topics.anon("chat")]):
        event_id = orjson.loads(record.value)["event_id"]
        seen[event_id] = seen.get(event_id, 0) + 1
    return sum(seen.values()) - len(seen)


@pytest.mark.parametrize("events, rounds", [(4000, 2), pytest.param(20000, 10, marks=pytest.mark.slow)])
async def test_consumers_killed_mid_stream_lose_and_double_nothing(make_settings, tmp_path, capsys, events, rounds):
    # No NER model: this is about delivery, and each restart would load it again.
    settings = make_settings(ner_model="")
    await kafka.ensure_topics(settings)
    stream = Stream.make(events, tag="kill")
    records = stream.records()
    backlog = len(records) // 2
    await produce(settings, records[:backlog], per_second=None)  # the consumers start busy...
    roles = [RoleProcess(settings, role, log_path=tmp_path / f"{role}.log") for role in ("anonymizer", "store")]
    for process in roles:
        process.start()
    try:
        # ...and the rest arrives while they are being killed, a share in each round.
        for round_, share in enumerate(shares(records[backlog:], rounds)):
            before = await stored(settings)
            producing = asyncio.create_task(produce(settings, share, per_second=events / (rounds * 12)))
            # Both are up and consuming: kill them mid-batch.
            await wait_for(lambda: stored_at_least(settings, before + 1), timeout=DRAIN_TIMEOUT_S, every=0.02)
            victims = roles if round_ % 3 == 0 else [roles[round_ % 2]]
            for process in victims:
                process.kill()
                process.start()
            await producing
        await wait_drained(settings, stream, processes=roles)
        assert all(p.alive for p in roles), "a role process died on its own"
        await assert_exactly_once(settings, stream)
    finally:
        for process in roles:
            process.stop()
    with capsys.disabled():
        print(f"\n[faults] {rounds} kill rounds over {events} events: 0 lost, 0 doubled; "
              f"{await anon_duplicates(settings)} redelivered records absorbed")


@pytest.mark.parametrize("restarts", [1, pytest.param(3, marks=pytest.mark.slow)])
async def test_broker_stopped_and_started_mid_stream(make_settings, tmp_path, restarts):
    broker = LocalBroker(tmp_path / "broker")  # its own broker: stopping the session's would disturb other tests
    settings = make_settings(bootstrap_servers=broker.start(), ner_model="")
    stream = Stream.make(600 * restarts, tag="broker")
    role = RoleProcess(settings, "anonymizer,store", log_path=tmp_path / "roles.log")
    role.start()
    try:
        for share in shares(stream.records(), restarts):
            before = await stored(settings)
            producing = asyncio.create_task(produce(settings, share, per_second=100))
            # The consumers are up and consuming.
            await wait_for(lambda: stored_at_least(settings, before + 1), timeout=DRAIN_TIMEOUT_S, every=0.05)
            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(2)  # a real outage: clients find nobody home for a while
            await asyncio.to_thread(broker.start)
            await producing
        await wait_drained(settings, stream, processes=[role])
        assert role.alive, "the consumers did not survive the broker restart"
        await assert_exactly_once(settings, stream)
    finally:
        role.stop()
        await asyncio.to_thread(broker.stop)


async def test_a_batch_failing_on_the_disk_or_kafka_is_retried_never_skipped(make_settings, start_pipeline):
    settings = make_settings(ner_model="")
    await start_pipeline(settings, roles=("anonymizer",))
    stream = Stream.make(300, tag="flaky")

    class FlakyStoreWriter(StoreWriterService):
        """Its first batches fail as they would while the disk or the broker is away."""

        def __init__(self, settings: Settings) -> None:
            super().__init__(settings)
            self.failures = [sqlite3.OperationalError("database is locked"), KafkaConnectionError("broker away")]

        async def persist(self, decoded) -> None:
            if self.failures:
                raise self.failures.pop()
            await super().persist(decoded)

    async with FlakyStoreWriter(settings) as writer:
        running = asyncio.create_task(writer.run())
        await produce(settings, stream.records(), per_second=None)
        await wait_drained(settings, stream, processes=[])
        assert not running.done(), "the loop gave up"
        await writer.stop()
        await running
        assert writer.failures == []
    await assert_exactly_once(settings, stream)


async def test_up_waits_for_a_broker_that_is_not_there_yet_and_stops_cleanly(make_settings, tmp_path):
    """Compose starts the service beside Kafka: an unreachable broker at start is waited for, not a crash."""
    settings = make_settings(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    role = RoleProcess(settings, "anonymizer,store", log_path=tmp_path / "up.log")
    role.start()
    try:
        for _ in range(300):
            if "is not reachable" in role.log_tail():
                break
            assert role.alive, role.log_tail()
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no word about the broker:\n{role.log_tail()}")
    finally:
        role.stop()
    assert role.process.returncode == 0, role.log_tail()
