"""A local 3-node cluster: the CLI's view of it, the topics `up` creates on it, and kill -9 of partition leaders
mid-stream with 0 lost and 0 duplicated as the bar; more than one of a role: two anonymizers in one group, two
serving replicas swapping together, a standby trainer taking over a run killed mid-way without a second version."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from learnstream import kafka, topics
from learnstream.config import Settings
from learnstream.registry import Registry, model_updated_event
from learnstream.store import Batch, Store, sample_row
from learnstream.training_state import TrainerState
from ops.broker import LocalBroker, broker_command, free_port
from schemas import utc_now
from tests.procs import RoleProcess, run_cli
from tests.test_e2e import Chatter
from tests.test_faults import DRAIN_TIMEOUT_S, Stream, assert_exactly_once, produce, shares, wait_drained
from tests.test_pipeline import stored, stored_at_least, wait_for
from tests.test_registry import chat_samples, half_built, training_children, wait_until

pytestmark = pytest.mark.kafka

NODES = 3
# Three JVMs starting together on a small shared box: each may take long.
START_TIMEOUT_S = 180
# The goal: every serving replica answers from a new version within this long of its model.updated.
SWAP_GOAL_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    broker = LocalBroker(tmp_path_factory.mktemp("cluster"))
    broker.start(nodes=NODES, timeout=START_TIMEOUT_S)
    yield broker
    broker.stop()


async def leader_of(settings: Settings, topic: str, partition: int = 0) -> int:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        [described] = await admin.describe_topics([topics.prefixed(settings, topic)])
    finally:
        await admin.close()
    return next(p["leader"] for p in described["partitions"] if p["partition"] == partition)


def kill_node(broker: LocalBroker, node_id: int) -> None:
    """kill -9: no controlled shutdown, no leadership handed over."""
    [node] = [n for n in broker.nodes() if n["id"] == node_id]
    os.kill(node["pid"], signal.SIGKILL)
    for _ in range(100):
        if not next(n for n in broker.nodes() if n["id"] == node_id)["running"]:
            return
        time.sleep(0.1)
    raise AssertionError(f"node {node_id} survived SIGKILL")


def test_status_json_names_every_node(cluster: LocalBroker, capsys: pytest.CaptureFixture[str]) -> None:
    assert broker_command("status", cluster.data_dir, as_json=True) == 0
    nodes = json.loads(capsys.readouterr().out)["nodes"]

    assert [n["id"] for n in nodes] == [1, 2, 3] and all(n["running"] and n["pid"] for n in nodes)
    assert ",".join(n["address"] for n in nodes) == cluster.bootstrap


async def test_topics_get_three_replicas_and_two_in_sync(cluster: LocalBroker, make_settings) -> None:
    settings = make_settings(bootstrap_servers=cluster.bootstrap, replication_factor=None)
    await kafka.ensure_topics(settings)
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        name = topics.prefixed(settings, topics.raw("chat"))
        [described] = await admin.describe_topics([name])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in response.resources[0][4]}

    assert {len(p["replicas"]) for p in described["partitions"]} == {3}
    assert configs["min.insync.replicas"] == "2"


async def ride_through(settings: Settings, stream: Stream, faults, roles: list[RoleProcess], *, ready=None) -> None:
    """Stream into the anonymizer and store roles, one share of the events before each fault (an async callable that
    takes a node or a process away and brings it back), then check every event is stored exactly once. ready: an async
    callable awaited once the roles are started, before the stream."""
    await kafka.ensure_topics(settings)
    for role in roles:
        role.start()
    try:
        if ready is not None:
            await ready()
        for share, fault in zip(shares(stream.records(), len(faults)), faults):
            before = await stored(settings)
            producing = asyncio.create_task(produce(settings, share, per_second=100))
            await wait_for(lambda: stored_at_least(settings, before + 1), timeout=DRAIN_TIMEOUT_S, every=0.05)
            await fault()
            await producing
        await wait_drained(settings, stream, processes=roles)
        assert all(role.alive for role in roles), "the consumers did not ride through the faults: " + "\n".join(
            f"{role.roles}: {role.log_tail()}" for role in roles if not role.alive)
        await assert_exactly_once(settings, stream)  # its DLQ holds the stream's broken records, nothing more
    finally:
        for role in roles:
            role.stop()


def pipeline_roles(settings: Settings, log_path: Path) -> list[RoleProcess]:
    return [RoleProcess(settings, "anonymizer,store", log_path=log_path)]


async def test_partition_leaders_killed_mid_stream_lose_and_double_nothing(cluster, make_settings, tmp_path: Path):
    settings = make_settings(bootstrap_servers=cluster.bootstrap, replication_factor=None, ner_model="")

    def kill_leader_of(topic: str):
        async def fault() -> None:
            await asyncio.to_thread(kill_node, cluster, await leader_of(settings, topic))
            await asyncio.sleep(3)  # the stream goes on without it for a while
            await asyncio.to_thread(cluster.start, timeout=START_TIMEOUT_S)  # restarts only the killed node
        return fault

    # First the leader of a raw partition, then (once the cluster is whole again) the leader of an anon one.
    faults = [kill_leader_of(topics.raw("chat")), kill_leader_of(topics.anon("chat"))]
    await ride_through(settings, Stream.make(1200, tag="leader"), faults,
                       pipeline_roles(settings, tmp_path / "roles.log"))


@pytest.mark.slow
async def test_a_rolling_restart_of_every_node_loses_and_doubles_nothing(cluster, make_settings, tmp_path: Path):
    settings = make_settings(bootstrap_servers=cluster.bootstrap, replication_factor=None, ner_model="")

    def restart(node_id: int):
        async def fault() -> None:
            await asyncio.to_thread(cluster.stop, node=node_id)
            await asyncio.to_thread(cluster.start, timeout=START_TIMEOUT_S)
        return fault

    faults = [restart(node["id"]) for node in cluster.nodes()]
    await ride_through(settings, Stream.make(1800, tag="rolling"), faults,
                       pipeline_roles(settings, tmp_path / "roles.log"))


@pytest.mark.slow
async def test_two_anonymizers_share_the_partitions_and_one_killed_loses_and_doubles_nothing(cluster, make_settings,
                                                                                            tmp_path: Path):
    settings = make_settings(bootstrap_servers=cluster.bootstrap, replication_factor=None, ner_model="", partitions=4)
    anonymizers = [RoleProcess(dataclasses.replace(settings, metrics_port=free_port()), "anonymizer",
                               log_path=tmp_path / f"anonymizer-{n}.log") for n in range(2)]
    store = RoleProcess(settings, "store", log_path=tmp_path / "store.log")

    async def both_own_partitions() -> None:
        # A stable group of two over four partitions: each holds two of them.
        await wait_for(lambda: _group_is(settings, "anonymizer", ("Stable", 2), anonymizers),
                       timeout=START_TIMEOUT_S, every=0.5)

    async def kill_one_and_bring_it_back() -> None:
        # Each has anonymized part of the stream by now, from its own partitions.
        await wait_for(lambda: _both_consumed(anonymizers), timeout=DRAIN_TIMEOUT_S, every=0.5)
        anonymizers[0].kill()  # its partitions go to the other once the group notices
        await asyncio.sleep(3)
        anonymizers[0].start()

    async def nothing() -> None:
        pass

    await ride_through(settings, Stream.make(1200, tag="group"), [kill_one_and_bring_it_back, nothing],
                       [*anonymizers, store], ready=both_own_partitions)


async def _group_is(settings: Settings, group: str, wanted: tuple[str, int], processes: list[RoleProcess]) -> bool:
    assert all(process.alive for process in processes), [process.log_tail() for process in processes]
    return await kafka.describe_group(settings, group) == wanted


async def _both_consumed(anonymizers: list[RoleProcess]) -> bool:
    async with aiohttp.ClientSession() as http:
        for anonymizer in anonymizers:
            assert anonymizer.alive, anonymizer.log_tail()
            try:
                async with http.get(f"http://127.0.0.1:{anonymizer.settings.metrics_port}/metrics") as response:
                    text = await response.text()
            except aiohttp.ClientConnectionError:
                return False
            consumed = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("learnstream_events_consumed_total{") and 'group="anonymizer"' in line)
            if not consumed:
                return False
    return True


async def test_topics_and_lag_commands_show_replicas_and_backlog(cluster: LocalBroker, make_settings) -> None:
    settings = make_settings(bootstrap_servers=cluster.bootstrap, replication_factor=None, ner_model="")
    await kafka.ensure_topics(settings)
    stream = Stream.make(60, tag="lag")
    await produce(settings, stream.records(), per_second=None)
    reader = kafka.consumer(settings, topics.raw("chat"), group_id="lag-probe")
    await reader.start()
    try:
        await reader.getmany(timeout_ms=5000, max_records=1)
        # Offset 1 on every partition: a plain commit() covers only partitions whose position is known by then.
        await reader.commit({partition: 1 for partition in reader.assignment()})
    finally:
        await reader.stop()

    listed = json.loads(run_cli(settings, "topics", "--json").stdout)["topics"]
    lag = json.loads(run_cli(settings, "lag", "--json").stdout)["lag"]

    raw = next(t for t in listed if t["topic"] == topics.prefixed(settings, topics.raw("chat")))
    assert (raw["partitions"], raw["replication"], raw["in_sync"], raw["min_insync"]) == (2, 3, 3, 2)
    probe = [row for row in lag if row["group"] == topics.prefixed(settings, "lag-probe")]
    assert probe and sum(row["end"] for row in probe) == len(stream.records())
    assert 0 < sum(row["lag"] for row in probe) < len(stream.records())
    assert "min_insync" in run_cli(settings, "topics").stdout.splitlines()[0]


@pytest.mark.slow
async def test_a_standby_takes_over_a_trainer_killed_mid_run_and_the_run_gives_one_version(make_settings,
                                                                                           tmp_path: Path) -> None:
    # The session's broker: this is about the trainer's locks and registry. A high tolerance: any run is promoted.
    settings = make_settings(chat_threshold=8, promotion_tolerance=10.0)
    await kafka.ensure_topics(settings)
    registry = Registry(settings.registry_dir)
    active = RoleProcess(settings, "trainer", log_path=tmp_path / "active.log")
    standby = RoleProcess(settings, "trainer", log_path=tmp_path / "standby.log")
    active.start()
    try:
        await wait_for(lambda: _logged(active, "learnstream up: trainer"), timeout=START_TIMEOUT_S, every=0.5)
        standby.start()
        await wait_for(lambda: _logged(standby, "standing by"), timeout=START_TIMEOUT_S, every=0.5)
        await store_and_announce(settings, chat_samples(8))  # the trigger: the threshold crossed
        # A run is under way once its half-built version exists.
        await wait_until(lambda: half_built(registry), timeout=START_TIMEOUT_S, what="a training run")
        active.kill()
        await wait_for(lambda: _logged(standby, "learnstream up: trainer"), timeout=START_TIMEOUT_S, every=0.5)
        await wait_until(lambda: TrainerState(settings.data_dir).last_trained_id("chat") == 8, timeout=START_TIMEOUT_S,
                         what="the standby's run")
        await asyncio.sleep(2)  # room for a second run from the same samples, which must not come
        assert "taking over" in standby.log_tail(200) and standby.alive
    finally:
        standby.stop()
        active.stop()
    assert registry.numbers("chat") == [0, 1] and registry.served("chat") == 1 and half_built(registry) == []
    assert not training_children(settings)
    announced = [orjson.loads(r.value) async for r in kafka.read_to_end(settings, [topics.MODEL_UPDATED])]
    assert [e["version"] for e in announced if e["family"] == "chat"] == [0, 1]  # nothing from the killed run


async def test_a_trainer_killed_before_its_watermark_step_does_not_train_the_same_samples_again(make_settings,
                                                                                                 start_pipeline):
    from trainer.run import ensure_base  # the embedded base model needs torch: only this test pays for it

    settings = make_settings(chat_threshold=8)
    await kafka.ensure_topics(settings)
    async with Store(settings.store_path) as store:
        await store.write(Batch(samples=[sample_row(s, orjson.dumps(s)) for s in chat_samples(8)]))
    registry = Registry(settings.registry_dir)
    await asyncio.to_thread(ensure_base, settings, registry, "chat")
    # Version 1 trained on those 8 samples, served, announced and in the history; then the trainer died.
    number = await asyncio.to_thread(copy_as_next_version, registry, "chat", 0, watermark=8)
    assert TrainerState(settings.data_dir).last_trained_id("chat") == 0

    await start_pipeline(settings, roles=("trainer",))
    await asyncio.sleep(2)  # its first pass over the families would schedule a run by now

    assert TrainerState(settings.data_dir).last_trained_id("chat") == 8
    assert registry.numbers("chat") == [0, number] and not training_children(settings)


async def store_and_announce(settings: Settings, samples: list[dict]) -> None:
    """What the store writer does with a batch: the samples into the store, then samples.stored."""
    async with Store(settings.store_path) as store:
        await store.write(Batch(samples=[sample_row(s, orjson.dumps(s)) for s in samples]))
        event = {"schema": "samples.stored.v1", "family": "chat", "watermark": await store.watermark("chat"),
                 "added": len(samples), "ts": utc_now()}
    async with kafka.producer(settings) as producer:
        await producer.send_and_wait(topics.prefixed(settings, topics.SAMPLES_STORED), orjson.dumps(event),
                                     key=b"chat")


async def _logged(process: RoleProcess, text: str) -> bool:
    assert process.alive, process.log_tail()
    return text in process.log_tail(200)


def copy_as_next_version(registry: Registry, family: str, number: int, *, watermark: int = 0) -> int:
    """A new promoted version with the files of an existing one, as a run up to `watermark` would leave it once its
    decision is recorded: a swap to test without a training run."""
    source = registry.get(family, number)
    with registry.staging(family) as staged:
        shutil.copytree(source.path, staged, dirs_exist_ok=True, ignore=shutil.ignore_patterns("manifest.json"))
        manifest = {key: value for key, value in source.manifest.items() if key not in ("family", "version", "files")}
        manifest.update(parent_version=number, decision="promoted", reason="a copy for a test", watermark=watermark,
                        created_at=utc_now())
        with registry.writer_lock():
            version = registry.commit(family, staged, manifest)
            registry.set_served(family, version.number)
            registry.record_decision(family, {"ts": utc_now(), "version": version.number, "decision": "promoted",
                                              "reason": manifest["reason"]})
    return version.number


@pytest.mark.slow
async def test_two_serving_replicas_both_swap_within_ten_seconds_and_fail_no_request(cluster, make_settings,
                                                                                    tmp_path: Path) -> None:
    from trainer.run import ensure_base  # builds the small embedded chat model: only this test pays for torch

    settings = make_settings(bootstrap_servers=cluster.bootstrap, replication_factor=None, ner_model="")
    await kafka.ensure_topics(settings)
    registry = Registry(settings.registry_dir)
    await asyncio.to_thread(ensure_base, settings, registry, "chat")
    # One data dir (a shared registry folder), a port each: two replicas as two hosts would run them.
    replicas = [RoleProcess(dataclasses.replace(settings, http_port=port), "serving",
                            log_path=tmp_path / f"serving-{n}.log")
                for n, port in enumerate((settings.http_port, free_port()))]
    chatters = [Chatter(replica.settings.http_port) for replica in replicas]
    clients: list[asyncio.Task] = []
    started = time.monotonic()
    for replica in replicas:
        replica.start()
    try:
        async with aiohttp.ClientSession() as http:
            for replica in replicas:
                await wait_for(lambda: _ready_on(http, replica, version=0), timeout=START_TIMEOUT_S, every=0.5)
        ready_s = time.monotonic() - started
        clients = [asyncio.create_task(chatter.run()) for chatter in chatters]
        await wait_for(lambda: _answered(chatters, version=0), timeout=30, every=0.1)

        number = await asyncio.to_thread(copy_as_next_version, registry, "chat", 0)
        async with kafka.producer(settings) as producer:
            event = model_updated_event(registry.get("chat", number), decision="promoted", reason="replica test")
            await producer.send_and_wait(topics.prefixed(settings, topics.MODEL_UPDATED), json.dumps(event).encode(),
                                         key=b"chat")
        published = time.monotonic()
        swapped: dict[int, float] = {}
        while len(swapped) < len(chatters):
            for n, chatter in enumerate(chatters):
                if n not in swapped and chatter.versions and chatter.versions[-1] == number:
                    swapped[n] = time.monotonic() - published
            assert time.monotonic() - published < SWAP_GOAL_S, f"swapped after {swapped} of {len(chatters)} s"
            assert all(replica.alive for replica in replicas), [r.log_tail() for r in replicas]
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a few more requests on the new version
    finally:
        for chatter in chatters:
            chatter.stop()
        await asyncio.gather(*clients)
        for replica in replicas:
            replica.stop()
    for chatter in chatters:
        assert chatter.failures == []
        assert chatter.versions == sorted(chatter.versions) and chatter.versions[-1] == number  # never back to 0
    print(f"[cluster] both replicas ready in {ready_s:.1f} s; answering from version {number} "
          f"{', '.join(f'{s:.1f}' for s in sorted(swapped.values()))} s after model.updated; "
          f"{sum(len(c.versions) for c in chatters)} requests, 0 failed")


async def _ready_on(http: aiohttp.ClientSession, replica: RoleProcess, *, version: int) -> bool:
    assert replica.alive, replica.log_tail()
    try:
        async with http.get(f"http://127.0.0.1:{replica.settings.http_port}/readyz") as response:
            return response.status == 200 and (await response.json())["served"]["chat"] == version
    except aiohttp.ClientConnectionError:
        return False


async def _answered(chatters: list[Chatter], *, version: int) -> bool:
    return all(version in chatter.versions for chatter in chatters)
