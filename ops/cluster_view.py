"""The operator's view of the cluster: `learnstream topics` (partitions, replication, in-sync replicas, retention of
learnstream's topics) and `learnstream lag` (per consumer group and partition), both also as JSON."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from learnstream import kafka
from learnstream.config import Settings
from learnstream.topics import all_specs, prefixed


async def describe_topics(settings: Settings) -> list[dict[str, Any]]:
    """One row per existing learnstream topic; in_sync is the fewest in-sync replicas of any of its partitions."""
    names = [prefixed(settings, spec.name) for spec in all_specs(settings)]
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        described = [t for t in await admin.describe_topics(names) if t["error_code"] == 0 and t["partitions"]]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t["topic"]) for t in described])
    finally:
        await admin.close()
    configs = {resource[3]: {entry[0]: entry[1] for entry in resource[4]}
               for response in responses for resource in response.resources}
    rows = []
    for topic in sorted(described, key=lambda t: t["topic"]):
        config = configs.get(topic["topic"], {})
        rows.append({
            "topic": topic["topic"],
            "partitions": len(topic["partitions"]),
            "replication": min(len(p["replicas"]) for p in topic["partitions"]),
            "in_sync": min(len(p["isr"]) for p in topic["partitions"]),
            "min_insync": int(config.get("min.insync.replicas", 1)),
            "retention_ms": int(config.get("retention.ms", -1)),
        })
    return rows


async def consumer_lag(settings: Settings) -> list[dict[str, Any]]:
    """One row per partition each learnstream consumer group (those under the topic prefix) has committed on."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        groups = sorted(g[0] for g in await admin.list_consumer_groups() if g[0].startswith(settings.topic_prefix))
        committed = {group: await admin.list_consumer_group_offsets(group) for group in groups}
    finally:
        await admin.close()
    partitions = sorted({tp for offsets in committed.values() for tp in offsets})
    ends: dict[TopicPartition, int] = {}
    if partitions:
        reader = kafka.consumer(settings, group_id=None)
        await reader.start()
        try:
            ends = await reader.end_offsets(partitions)
        finally:
            await reader.stop()
    return [{"group": group, "topic": tp.topic, "partition": tp.partition, "committed": meta.offset,
             "end": ends[tp], "lag": max(0, ends[tp] - meta.offset)}
            for group in groups for tp, meta in sorted(committed[group].items()) if meta.offset >= 0]


def print_rows(rows: list[dict[str, Any]], *, as_json: bool, key: str) -> None:
    """JSON ({key: rows}) or aligned columns with a header."""
    if as_json:
        print(json.dumps({key: rows}))
        return
    if not rows:
        print(f"no {key}")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    for line in [dict(zip(columns, columns)), *rows]:
        print("  ".join(str(line[c]).ljust(widths[c]) for c in columns).rstrip())
