"""Topic names and the specs `up` creates them with. Stages meet here, never by importing each other."""

from __future__ import annotations

from dataclasses import dataclass

from learnstream.config import FAMILIES, Settings

SAMPLES_STORED = "samples.stored"
MODEL_UPDATED = "model.updated"
ERASURE_REQUESTS = "erasure.requests"
SAFETY_FLAGS = "safety.flags"
# Manual runs (`learnstream train`, POST /api/ai/trigger-training) are handed to the one running trainer.
TRAINING_REQUESTS = "training.requests"


def raw(family: str) -> str:
    return f"{family}.raw"


def anon(family: str) -> str:
    return f"{family}.anon"


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the deployment prefix
    retention_ms: int
    partitions: int
    # The broker stamps each record with its append time (message.timestamp.type=LogAppendTime): erasure decides
    # by that clock which of a person's events came before their erasure, never by the apps' `ts`.
    log_append_time: bool = False


def all_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic learnstream reads or writes, with the retention its content calls for."""
    p, short, forever = settings.partitions, settings.raw_retention_ms, settings.anon_retention_ms
    specs = []
    for family in FAMILIES:
        # Raw events and their DLQ hold raw PII: short retention (and restricted ACLs, see README).
        specs += [TopicSpec(raw(family), short, p, log_append_time=True), TopicSpec(dlq(raw(family)), short, p)]
        specs += [TopicSpec(anon(family), forever, p), TopicSpec(dlq(anon(family)), forever, p)]
    specs += [
        TopicSpec(ERASURE_REQUESTS, short, 1, log_append_time=True),
        TopicSpec(dlq(ERASURE_REQUESTS), short, 1),
        # One partition each: the trainer and every serving replica read them in order.
        TopicSpec(SAMPLES_STORED, forever, 1),
        TopicSpec(MODEL_UPDATED, forever, 1),
        TopicSpec(TRAINING_REQUESTS, short, 1),
        TopicSpec(SAFETY_FLAGS, forever, 1),
    ]
    return specs


def default_replication(brokers: int) -> int:
    """Replicas per topic when none are configured (also the local cluster's internal topics): at most 3."""
    return min(3, brokers)


def min_insync(replication: int) -> int:
    """min.insync.replicas: all replicas but one acknowledge an acks=all write, so one broker may be down, and a
    write never rests on one copy alone when there are more (at least 1)."""
    return max(1, replication - 1)


def prefixed(settings: Settings, name: str) -> str:
    return f"{settings.topic_prefix}{name}"
