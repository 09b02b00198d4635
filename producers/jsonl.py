"""JSON lines in, events out: `learnstream produce chat|image|erasure FILE` and POST /api/events share this.

Every line is checked on its own; bad lines are reported by number with the reason, good lines are sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from producers.sdk import EventProducer
from schemas import RAW_TOPIC_SCHEMAS, InvalidEvent, decode, validate


@dataclass
class ProduceReport:
    sent: int = 0
    errors: list[dict] = field(default_factory=list)  # {"line": n, "reason", "field", "rule"}

    @property
    def exit_code(self) -> int:
        """0 when every line was sent, 2 when some were rejected (the good ones are sent)."""
        return 2 if self.errors else 0


async def produce_lines(events: EventProducer, lines: Iterable[bytes], *, kind: str | None,
                        max_bytes: int) -> ProduceReport:
    """kind limits the schemas accepted ("chat", "image", "erasure"); None accepts any app event."""
    report = ProduceReport()
    expected = RAW_TOPIC_SCHEMAS[kind] if kind else tuple(s for group in RAW_TOPIC_SCHEMAS.values() for s in group)
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            event = validate(decode(line, max_bytes=max_bytes), expected=expected)
            await events.send(event, wait=False)
            report.sent += 1
        except InvalidEvent as error:
            report.errors.append({"line": number, **error.as_dict()})
    await events.flush()
    return report
