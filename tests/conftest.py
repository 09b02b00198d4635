"""Shared fixtures: one real Kafka broker per test session, settings and pipelines per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from learnstream.config import Settings
from ops.broker import LocalBroker, free_port


@pytest.fixture(scope="session")
def local_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A running local broker in a fresh data dir, stopped at the end of the session."""
    broker = LocalBroker(tmp_path_factory.mktemp("broker"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """KAFKA_BOOTSTRAP_SERVERS when it names a cluster, else the session's local broker."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return external
    return request.getfixturevalue("local_broker").bootstrap


@pytest.fixture
def make_settings(tmp_path: Path, kafka_bootstrap: str):
    """Settings for one test: its own data dir and topic prefix on the session broker, dev mode, tiny runs.
    Overrides are keyword arguments: make_settings(chat_threshold=6)."""
    counter = iter(range(1000))

    def make(**overrides) -> Settings:
        n = next(counter)
        values = dict(
            data_dir=tmp_path / f"data{n}",
            bootstrap_servers=kafka_bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
            partitions=2,
            dev=True,
            chat_threshold=10_000,
            image_threshold=10_000,
            chat_epochs=1,
            http_port=free_port(),
        )
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def start_pipeline():
    """Start a Pipeline (all roles unless given); every pipeline started is stopped at teardown."""
    from ops.up import ROLES, Pipeline  # imports every role: only the tests that run them pay for it

    started: list[Pipeline] = []

    async def start(settings: Settings, roles: tuple[str, ...] = ROLES) -> Pipeline:
        pipeline = Pipeline(settings, roles=roles)
        await pipeline.start()
        started.append(pipeline)
        return pipeline

    yield start
    for pipeline in reversed(started):
        await pipeline.stop()
