"""The local Apache Kafka: lifecycle, CLI output, and aiokafka clients against it."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from ops.broker import BrokerError, LocalBroker, broker_command, new_cluster_id

# The first fetch after a group join can wait for the coordinator; far below this on a quiet box.
RECEIVE_TIMEOUT_S = 30


async def produce_one(bootstrap: str, topic: str, value: bytes) -> None:
    # The settings the producer SDK relies on: idempotent, acknowledged by all in-sync replicas.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"session-1")
    finally:
        await producer.stop()


async def consume_one(bootstrap: str, topic: str, group: str) -> tuple[ConsumerRecord, int | None]:
    """The group's next record on `topic`, and the offset committed for it afterwards."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), RECEIVE_TIMEOUT_S)
        await consumer.commit()
        return record, await consumer.committed(TopicPartition(topic, record.partition))
    finally:
        await consumer.stop()


@pytest.mark.kafka
async def test_aiokafka_produces_and_consumes_with_a_group(kafka_bootstrap: str) -> None:
    topic = f"broker-test.{uuid.uuid4().hex}"  # fresh on every run, also on a kept KAFKA_BOOTSTRAP_SERVERS
    await produce_one(kafka_bootstrap, topic, b"hello")

    record, committed = await consume_one(kafka_bootstrap, topic, "broker-test")

    assert (record.key, record.value, record.offset) == (b"session-1", b"hello", 0)
    assert committed == 1


@pytest.mark.kafka
async def test_restart_keeps_port_and_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Its own broker, so the session broker other tests use is never stopped.
    data_dir = tmp_path / "broker"
    broker = LocalBroker(data_dir)
    address = broker.start()
    try:
        assert broker_command("status", data_dir) == 0
        assert capsys.readouterr().out == f"{address}\n"
        await produce_one(address, "kept", b"before restart")

        assert broker_command("stop", data_dir) == 0
        assert capsys.readouterr().out == "stopped\n"
        assert broker.status() is None
        assert broker_command("status", data_dir) == 1
        assert capsys.readouterr().out == ""

        host, port = address.rsplit(":", 1)
        with socket.create_server((host, int(port))):
            with pytest.raises(BrokerError, match=f"port {port}"):
                broker.start()

        assert broker.start() == address
        record, _ = await consume_one(address, "kept", "after-restart")
        assert record.value == b"before restart"
    finally:
        broker.stop()


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    # A pid reused by an unrelated process (here: this one) must not pass for the broker.
    (tmp_path / "broker.pid").write_text(f"{os.getpid()}\n")

    assert LocalBroker(tmp_path).status() is None


def test_cluster_id_is_22_url_safe_characters() -> None:
    cluster_id = new_cluster_id()

    assert len(cluster_id) == 22 and not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
