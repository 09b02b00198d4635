"""Logging for every role: text for people, or JSON lines for log shippers (LEARNSTREAM_JSON_LOGS=1).

Messages never carry raw ids or text: the code logs pseudonyms, counts, offsets and reasons only.
"""

from __future__ import annotations

import logging
import sys

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class RepeatLimiter(logging.Filter):
    """Passes a library's message (same logger, same template) at most once per `every_s`, then says how many
    were held back. While the broker is away, aiokafka's clients retry in tight loops and log each failure."""

    def __init__(self, *, prefixes: tuple[str, ...] = ("aiokafka",), every_s: float = 30.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.every_s = every_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (logger, template) -> (last passed, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        last, held = self._seen.get(key, (-self.every_s, 0))
        if record.created - last < self.every_s:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (record.created, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {record.created - last:.0f}s)"
        return True


def setup_logging(*, verbose: bool = False, json_logs: bool = False, one_shot: bool = False) -> None:
    """one_shot: a command that reports its own failure in one line (the CLI's reads and writes), so
    aiokafka's own connection errors would only print the same failure twice, before it; unless verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatLimiter())
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_libraries(verbose=verbose)
    if one_shot and not verbose:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def quiet_libraries(*, verbose: bool) -> None:
    """Library loggers that would break the privacy promise or drown ours."""
    # aiokafka's DEBUG log prints raw fetch responses, i.e. record bytes (raw PII from chat.raw): never below INFO.
    logging.getLogger("aiokafka").setLevel(logging.INFO if verbose else logging.WARNING)
    # A fresh group logs "coordinator not available" as ERROR while the broker elects it: expected, retried.
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
