"""Bench: ingestion throughput, raw -> anon -> store, against baselines measured in the same run.

    .venv/bin/python bench/ingest.py [--events 30000] [--store-events 300000] [--repeat 3] [--ner en_core_web_sm]
    .venv/bin/python bench/ingest.py --nodes 3 [--events 30000] [--repeat 3]

With --nodes N only ingest_1 is measured, on a single-node local broker and on a local N-node cluster (topics with
replication min(3, N) and min.insync.replicas one less, as `up` makes them), in --repeat paired runs taking turns;
nodes_vs_single is the median of the paired ratios (goal >= 0.7). A full run takes ~9 minutes; --nodes with a
smaller --events (e.g. 3000) a few minutes, most of it starting role processes.

Events per second of:
  anonymizer_alone  Anonymizer.process over the events in batches of 500, no Kafka, in a process of its own on one
                    core
  bare_raw          plain aiokafka consumption of the raw topic those events are on (no processing)
  ingest_1          one `learnstream up --roles anonymizer,store` process on one core: raw topic -> store
  ingest_2          two such processes, one core each, sharing the partitions of the same amount of events
  ingest_split      `up --roles anonymizer` on one core and `up --roles store` on the other: not a goal, it shows how
                    much of ingest_1's shortfall is the store writer's CPU on the anonymizer's core
  bare_anon         plain aiokafka consumption of a topic of --store-events anonymized samples
  store_alone       the store writer alone, on one core, on that topic
  sqlite_floor      SQLite itself inserting those samples, already decoded, a row each into a table with no index
                    (no Kafka, no decoding, no fsync) on one core: what any store with a row per sample could at best
                    add
  blob_floor        SQLite inserting each batch of those records as one blob (no row per sample, no Kafka, no
                    fsync) on one core: what any SQLite store at all could at best add
  id_index_floor    SQLite inserting each sample's event_id, and nothing else, into a table keyed on it (no Kafka,
                    no fsync) on one core: the durable uniqueness that makes the store's writes idempotent on
                    event_id, so that a redelivered or re-anonymized event is stored once
  parse_floor       orjson parsing each of those records, nothing else, on one core: what any writer that looks
                    inside its records (as sorting bad ones out for the DLQ must) could at best add
Goals: ingest_1 >= 0.8 x anonymizer_alone; store_alone >= 0.5 x bare_anon; ingest_2 >= 1.5 x ingest_1.
The floors bound store_vs_bare. store_floor_vs_bare: one core consuming at bare_anon's pace and inserting at
sqlite_floor's, floor / (bare + floor). exactly_once_ceiling_vs_bare: the most any SQLite writer that keeps the
store's guarantees could reach even on both cores, one consuming and parsing, the other writing blobs and the
event_id index, each at its floors' pace and perfectly overlapped: bare consumption's cost per sample over the
larger of the two cores' costs. Above 0.5 only if each core's work costs less than twice bare consumption.

The runs are long enough (several seconds each) that filling and draining the pipeline is a few percent of them:
about one anonymizer batch at each end, and the store writer's fetch_max_wait_ms at each end too (its first fetch
waits for a fuller batch, its last for bytes that never come), which --store-events 300,000 also keeps to a few
percent of store_alone. Every rate is the best of --repeat
runs, as timeit takes the best: on a shared machine the slow outliers come from other loads. The anonymizer
alone and the ingest runs take turns, so each sees the same conditions.

Every measured anonymizer, alone or in a role, is a fresh process held to one core from its start, that has loaded
its model and then seen the same --warmup events and no others: spaCy's vocabulary and the word caches make an
anonymizer faster the more text it has seen, so a baseline that had already seen the timed messages, or more
messages, would be unfairly fast. The warm-up messages are drawn apart from the timed ones.

Every timed topic is produced before its clock starts. Role processes are paused (SIGSTOP) after their warm-up while
the timed events are produced, and the clock starts when they resume (SIGCONT). In-process consumers are timed from
their partition assignment, before their first fetch. The bench starts its own local broker in a temporary folder
unless KAFKA_BOOTSTRAP_SERVERS names one. The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pii_corpus import generate  # noqa: E402
from consumers.anonymizer import AnonymizerService  # noqa: E402
from consumers.privacy import Anonymizer  # noqa: E402
from consumers.store_writer import StoreWriterService  # noqa: E402
from learnstream import kafka, topics  # noqa: E402
from learnstream.config import Settings, load_settings  # noqa: E402
from learnstream.keystore import KeyStore  # noqa: E402
from learnstream.store import CACHE_SIZE_PRAGMA, Store, sample_row  # noqa: E402
from ops.broker import LocalBroker  # noqa: E402
from tests.procs import RoleProcess  # noqa: E402

BATCH = 500  # what a consumer stage takes per batch
SESSIONS = 400  # keys: enough to spread evenly over the partitions
PARTITIONS = 4  # two per process in the two-process run
POLL_S = 0.05
WARMUP_SEED = 8  # the timed messages are generate()'s default seed, 7
START = datetime(2026, 11, 1, tzinfo=UTC)


@contextmanager
def local_broker(folder: Path) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS, or a broker of our own for the duration of the bench."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    broker = LocalBroker(folder)
    try:
        yield broker.start()
    finally:
        broker.stop()


@contextmanager
def one_core(core: int = 0) -> Iterator[None]:
    """This process (and the threads it starts) on one core, like each role process."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def chat_events(count: int, *, tag: str, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """(key, value) of chat.v1 events with realistic therapy-chat text, personal data included; a seed of its own
    draws other messages."""
    events = []
    for n, message in enumerate(generate(count, seed=seed)):
        session = f"{tag}-s{n % SESSIONS}"
        ts = (START + timedelta(seconds=n)).isoformat().replace("+00:00", "Z")
        event = {"schema": "chat.v1", "event_id": f"{tag}-{n}", "ts": ts, "user_id": f"u{n % 97}", "session_id": session,
                 "role": "patient" if n % 2 else "therapist", "text": message.text, "consent": {"training": True}}
        events.append((session.encode(), orjson.dumps(event)))
    return events


async def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = kafka.producer(settings, linger_ms=20)
    await producer.start()
    try:
        deliveries = [await producer.send(topics.prefixed(settings, topic), value, key=key) for key, value in records]
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def bare_rate(settings: Settings, topic: str, count: int) -> float:
    """Records per second of a plain consumer reading the topic from the start, timed from its assignment."""
    partitions = await kafka.topic_partitions(settings, [topic])
    consumer = kafka.consumer(settings, group_id=None, max_poll_records=BATCH)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started, seen = time.perf_counter(), 0
        while seen < count:
            seen += sum(len(records) for records in (await consumer.getmany(timeout_ms=1000)).values())
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def wait_stored(settings: Settings, count: int) -> None:
    """Until the store holds `count` chat samples; one connection, polled (it is created by the role)."""
    while not settings.store_path.exists():
        await asyncio.sleep(POLL_S)
    async with Store(settings.store_path) as store:
        while await store.count("chat") < count:
            await asyncio.sleep(POLL_S)


def warmup_events(count: int) -> list[tuple[bytes, bytes]]:
    """What every measured anonymizer sees before its clock starts: messages apart from the timed ones."""
    return chat_events(count, tag="warmup", seed=WARMUP_SEED)


def anonymizer_alone(settings: Settings, events: int, warmup: int) -> float:
    """Events per second of Anonymizer.process in stage-sized batches, in a fresh process on one core."""
    # Started while this process is held to the core, the child and every thread it starts are held to it too.
    with one_core(), ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as alone:
        # A Settings holds Secrets, which refuse to be pickled: the child gets only what it uses.
        return alone.submit(_anonymizer_alone, settings.key_bytes(), settings.ner_model, settings.keys_path,
                            events, warmup).result()


def _anonymizer_alone(key: bytes, ner_model: str, keys_path: Path, events: int, warmup: int) -> float:
    anonymizer = Anonymizer(key=key, ner_model=ner_model, max_event_bytes=1 << 20, keys=KeyStore(keys_path))
    for raws in _batches([value for _, value in warmup_events(warmup)]):
        anonymizer.process("chat", raws)
    timed = [value for _, value in chat_events(events, tag="alone")]
    started = time.perf_counter()
    for raws in _batches(timed):
        anonymizer.process("chat", raws)
    return len(timed) / (time.perf_counter() - started)


def _batches(raws: list[bytes]) -> Iterator[list[bytes]]:
    return (raws[start:start + BATCH] for start in range(0, len(raws), BATCH))


# Role processes of each ingest run: the roles of each, and its core.
LAYOUTS = {
    "ingest_1": [("anonymizer,store", 0)],
    "ingest_2": [("anonymizer,store", 0), ("anonymizer,store", 1)],
    "ingest_split": [("anonymizer", 0), ("store", 1)],
}


async def wait_balanced(settings: Settings, roles: list[RoleProcess]) -> None:
    """Until every process holds its share of the partitions: no rebalance may fall inside the timed window."""
    for role, group in (("anonymizer", AnonymizerService.group_id), ("store", StoreWriterService.group_id)):
        members = sum(role in process.roles.split(",") for process in roles)
        while await kafka.describe_group(settings, group) != ("Stable", members):
            await asyncio.sleep(0.2)


async def ingest_rate(settings: Settings, events: int, warmup: int, layout: list[tuple[str, int]]) -> float:
    """raw -> store events per second of role processes laid out as `layout` says."""
    await kafka.ensure_topics(settings)
    roles = [RoleProcess(settings, names, log_path=settings.data_dir / f"role-{n}.log", cpus={core})
             for n, (names, core) in enumerate(layout)]
    for role in roles:
        role.start()
    measuring = asyncio.create_task(timed_ingest(settings, roles, events, warmup))
    watching = asyncio.create_task(until_one_ends(roles))
    try:
        done, _ = await asyncio.wait({measuring, watching}, return_when=asyncio.FIRST_COMPLETED)
        return done.pop().result()
    finally:
        measuring.cancel()
        watching.cancel()
        for role in roles:
            role.resume()
            role.stop()


async def timed_ingest(settings: Settings, roles: list[RoleProcess], events: int, warmup: int) -> float:
    await wait_balanced(settings, roles)
    await produce(settings, topics.raw("chat"), warmup_events(warmup))  # every process warms up
    await wait_stored(settings, warmup)
    await wait_balanced(settings, roles)
    for role in roles:
        role.pause()
    await produce(settings, topics.raw("chat"), chat_events(events, tag="timed"))
    started = time.perf_counter()
    for role in roles:
        role.resume()
    await wait_stored(settings, warmup + events)
    return events / (time.perf_counter() - started)


async def until_one_ends(roles: list[RoleProcess]) -> NoReturn:
    """Raises when a role process ends early, which the measurement would otherwise wait for forever."""
    while all(role.alive for role in roles):
        await asyncio.sleep(POLL_S)
    ended = next(role for role in roles if not role.alive)
    raise RuntimeError(f"a role process ended during the run; its log: {ended.log_path}")


class AloneStoreWriter(StoreWriterService):
    def __init__(self, settings: Settings, *, group_id: str) -> None:
        self.group_id = group_id  # a group of its own reads the topic from the start
        super().__init__(settings)

    def assigned(self) -> bool:
        return bool(self._consumer.assignment())


async def store_alone_rate(settings: Settings, count: int, attempt: int) -> float:
    """Samples per second of the store writer on one core, timed from its assignment like bare consumption."""
    settings = dataclasses.replace(settings, data_dir=settings.data_dir / f"alone-{attempt}")
    writer = AloneStoreWriter(settings, group_id=f"bench-store-alone-{attempt}")
    with one_core():
        await writer.start()
        running = asyncio.create_task(writer.run())
        try:
            while not writer.assigned():
                await asyncio.sleep(0.001)
            started = time.perf_counter()
            await wait_stored(settings, count)
            return count / (time.perf_counter() - started)
        finally:
            await writer.stop()
            await running


def sqlite_insert_rate(path: Path, table: str, batches: list[list[tuple]], samples: int) -> float:
    """Samples per second SQLite inserts `batches` of rows (one transaction each) into the table `table` defines
    (named t), with no fsync and the store's page cache, on one core."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(CACHE_SIZE_PRAGMA)
        db.execute(f"CREATE TABLE t {table}")
        insert = f"INSERT INTO t VALUES ({', '.join('?' * len(batches[0][0]))})"
        with one_core():
            started = time.perf_counter()
            for rows in batches:
                db.execute("BEGIN")
                db.executemany(insert, rows)
                db.execute("COMMIT")
            return samples / (time.perf_counter() - started)
    finally:
        db.close()


def store_floors(samples: list[dict], records: list[bytes], work: Path, repeat: int) -> dict[str, float]:
    """sqlite_floor, blob_floor, id_index_floor and parse_floor (see the top of this file) of the samples and their
    records, each the best of `repeat`, in the store writer's batches."""
    def in_batches(items: list) -> list[list]:
        size = StoreWriterService.max_records
        return [items[start:start + size] for start in range(0, len(items), size)]

    tables = {
        "sqlite_floor": ("(event_id, family, ts, owner, grp, body)",
                         in_batches([sample_row(sample, body) for sample, body in zip(samples, records)])),
        "blob_floor": ("(body)", [[(b"\n".join(chunk),)] for chunk in in_batches(records)]),
        "id_index_floor": ("(event_id TEXT PRIMARY KEY) WITHOUT ROWID",
                           in_batches([(sample["event_id"],) for sample in samples])),
    }
    floors = {name: max(sqlite_insert_rate(work / f"{name}-{n}.sqlite", table, batches, len(records))
                        for n in range(repeat))
              for name, (table, batches) in tables.items()}
    return {**floors, "parse_floor": max(parse_rate(records) for _ in range(repeat))}


def parse_rate(records: list[bytes]) -> float:
    """Records per second orjson parses, on one core."""
    with one_core():
        started = time.perf_counter()
        for body in records:
            orjson.loads(body)
        return len(records) / (time.perf_counter() - started)


async def run(args: argparse.Namespace, work: Path, bootstrap: str) -> dict:
    base = load_settings(env={k: v for k, v in os.environ.items() if k.startswith("LEARNSTREAM_")})
    settings = dataclasses.replace(base, bootstrap_servers=bootstrap, dev=True, partitions=PARTITIONS,
                                   ner_model=args.ner, data_dir=work / "anon", topic_prefix=f"bench{os.getpid()}.")
    await kafka.ensure_topics(settings)
    await produce(settings, topics.raw("chat"), chat_events(args.events, tag="raw"))
    results = {"events": args.events, "store_events": args.store_events}
    results["bare_raw"] = max([await bare_rate(settings, topics.raw("chat"), args.events) for _ in range(args.repeat)])
    # Each attempt measures the anonymizer alone beside the ingest runs, so all of them see the same conditions.
    rates: dict[str, list[float]] = {"anonymizer_alone": [], **{name: [] for name in LAYOUTS}}
    for attempt in range(args.repeat):
        alone_settings = dataclasses.replace(settings, data_dir=work / f"alone-{attempt}")
        rates["anonymizer_alone"].append(anonymizer_alone(alone_settings, args.events, args.warmup))
        for name, layout in LAYOUTS.items():
            run_settings = dataclasses.replace(settings, data_dir=work / f"{name}-{attempt}",
                                               topic_prefix=f"{settings.topic_prefix}{name}-{attempt}.")
            rates[name].append(await ingest_rate(run_settings, args.events, args.warmup, layout))
    results.update({name: max(runs) for name, runs in rates.items()})

    # The store writer alone: sealed samples with the keys of its data dir, made without NER (only the store
    # is timed), as many as it takes for the measurement to outlast its start.
    store_settings = dataclasses.replace(settings, data_dir=work / "store", ner_model="")
    fast = Anonymizer(key=store_settings.key_bytes(), ner_model=None, max_event_bytes=1 << 20,
                      keys=KeyStore(store_settings.keys_path))
    anon = [o.record for o in fast.process("chat", [v for _, v in chat_events(args.store_events, tag="store")])]
    records = [orjson.dumps(s) for s in anon]
    await produce(store_settings, topics.anon("chat"), [(s["session"].encode(), r) for s, r in zip(anon, records)])
    results["bare_anon"] = max([await bare_rate(store_settings, topics.anon("chat"), len(anon))
                                for _ in range(args.repeat)])
    results["store_alone"] = max([await store_alone_rate(store_settings, len(anon), attempt)
                                  for attempt in range(args.repeat)])
    results.update(store_floors(anon, records, work, args.repeat))
    return results


async def cluster_run(args: argparse.Namespace, work: Path, bootstraps: dict[str, str]) -> dict:
    """ingest_1 on each broker of `bootstraps` ({name: bootstrap}), taking turns, --repeat times."""
    base = load_settings(env={k: v for k, v in os.environ.items() if k.startswith("LEARNSTREAM_")})
    rates: dict[str, list[float]] = {name: [] for name in bootstraps}
    for attempt in range(args.repeat):
        for name, bootstrap in bootstraps.items():
            settings = dataclasses.replace(base, bootstrap_servers=bootstrap, dev=True, partitions=PARTITIONS,
                                           ner_model=args.ner, data_dir=work / f"{name}-{attempt}",
                                           topic_prefix=f"bench{os.getpid()}.{name}-{attempt}.")
            rates[name].append(await ingest_rate(settings, args.events, args.warmup, LAYOUTS["ingest_1"]))
    return rates


def cluster_main(args: argparse.Namespace) -> None:
    single, cluster = "ingest_1_node", f"ingest_{args.nodes}_nodes"
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        brokers = {single: LocalBroker(Path(folder) / "single"), cluster: LocalBroker(Path(folder) / "cluster")}
        try:
            bootstraps = {single: brokers[single].start(),
                          cluster: brokers[cluster].start(nodes=args.nodes, timeout=180)}
            rates = asyncio.run(cluster_run(args, Path(folder), bootstraps))
        finally:
            for broker in brokers.values():
                broker.stop()
    paired = [c / s for s, c in zip(rates[single], rates[cluster])]
    results = {"events": args.events, "nodes": args.nodes, **{name: statistics.median(r) for name, r in rates.items()},
               "runs": {name: [round(r, 1) for r in runs] for name, runs in rates.items()}}
    ratio = statistics.median(paired)
    print(f"{single:>20}: {results[single]:,.1f}\n{cluster:>20}: {results[cluster]:,.1f}\n"
          f"{'nodes_vs_single':>20}: {ratio:.3f} (median of {len(paired)} paired runs)")
    print(json.dumps({**{k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()},
                      "ratios": {"nodes_vs_single": round(ratio, 3), "paired": [round(r, 3) for r in paired]},
                      "goals_met": {"nodes_vs_single": ratio >= 0.7}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=30000, help="events through the anonymizer (NER-bound)")
    parser.add_argument("--store-events", type=int, default=300000, help="samples for the store writer alone")
    parser.add_argument("--warmup", type=int, default=2000, help="events every measured anonymizer sees first")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    parser.add_argument("--ner", default="en_core_web_sm", help='spaCy model for names; "" for none')
    parser.add_argument("--nodes", type=int, default=1, help="> 1: ingest_1 on a cluster of this many local nodes "
                        "against a single node, median of --repeat paired runs, and nothing else")
    args = parser.parse_args()
    if args.nodes > 1:
        cluster_main(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder, local_broker(Path(folder) / "broker") as bootstrap:
        results = asyncio.run(run(args, Path(folder), bootstrap))
    ratios = {
        "ingest_vs_anonymizer": results["ingest_1"] / results["anonymizer_alone"],
        "store_vs_bare": results["store_alone"] / results["bare_anon"],
        "two_vs_one_process": results["ingest_2"] / results["ingest_1"],
        "ingest_vs_bare": results["ingest_1"] / results["bare_raw"],
        "split_ingest_vs_anonymizer": results["ingest_split"] / results["anonymizer_alone"],
        "store_floor_vs_bare": results["sqlite_floor"] / (results["bare_anon"] + results["sqlite_floor"]),
        "exactly_once_ceiling_vs_bare": (1 / results["bare_anon"]) / max(
            1 / results["bare_anon"] + 1 / results["parse_floor"],
            1 / results["blob_floor"] + 1 / results["id_index_floor"]),
    }
    goals = {"ingest_vs_anonymizer": 0.8, "store_vs_bare": 0.5, "two_vs_one_process": 1.5}
    for name, value in {**results, **ratios}.items():
        print(f"{name:>28}: {value:,.2f}" if isinstance(value, float) else f"{name:>28}: {value}")
    print(json.dumps({**{k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()},
                      "ratios": {k: round(v, 3) for k, v in ratios.items()},
                      "goals_met": {k: ratios[k] >= goal for k, goal in goals.items()}}))


if __name__ == "__main__":
    main()
