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


def setup_logging(*, verbose: bool = False, json_logs: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    quiet_libraries(verbose=verbose)


def quiet_libraries(*, verbose: bool) -> None:
    """Library loggers that would break the privacy promise or drown ours."""
    # aiokafka's DEBUG log prints raw fetch responses, i.e. record bytes (raw PII from chat.raw): never below INFO.
    logging.getLogger("aiokafka").setLevel(logging.INFO if verbose else logging.WARNING)
    # A fresh group logs "coordinator not available" as ERROR while the broker elects it: expected, retried.
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
