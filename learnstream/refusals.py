"""Records refused on a topic that has no DLQ (samples.stored, training.requests, model.updated, safety.flags, the
DLQs themselves): each is counted and logged once, by position and reason, and its reader goes on.

The log line names the topic, partition, offset, reason and field, never the record's bytes or the refusal's rule
(a rule may quote the record, and a record on these topics may hold anything anyone wrote there).
"""

from __future__ import annotations

import logging

from learnstream.metrics import REFUSED
from schemas import InvalidEvent

log = logging.getLogger(__name__)


def refuse(topic: str, partition: int, offset: int, error: InvalidEvent) -> None:
    """topic without the deployment prefix."""
    REFUSED.labels(topic=topic, reason=error.reason).inc()
    log.warning("%s partition %d offset %d: record refused (%s%s); going on", topic, partition, offset,
                error.reason, f" at {error.field}" if error.field else "")
