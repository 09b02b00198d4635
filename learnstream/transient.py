"""Which failures pass and which do not: a stage retries the first kind, and stops on the second with one line.

Transient: the broker, the network or the disk is away or full for now. SQLite says busy, locked, full, read-only,
I/O error, cannot open or out of memory; Kafka says its error is retriable, or it is one of the errors aiokafka
raises while a broker is away or a group rebalances without marking them so (a timeout, a bare KafkaError, a
commit refused by a rebalance). Such a failure is never a reason to dead-letter an event: its batch waits.

Fatal: any other Kafka error (authorization, a record too large for the topic, a bad configuration). Retrying
would loop forever on the same refusal, so the stage stops with StageStopped, whose message is the whole story.
"""

from __future__ import annotations

import sqlite3

from aiokafka import errors as kafka_errors

# Primary result codes (https://sqlite.org/rescode.html): extended codes keep these in their low byte.
_SQLITE_TRANSIENT_CODES = {
    5,  # SQLITE_BUSY
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
}
# Raised by aiokafka while the cluster is away or a group rebalances, though their `retriable` flag is not set.
_KAFKA_AWAY = (
    kafka_errors.KafkaTimeoutError,
    kafka_errors.BrokerNotAvailableError,
    kafka_errors.KafkaUnavailableError,
    kafka_errors.ReplicaNotAvailableError,
    kafka_errors.RebalanceInProgressError,
    kafka_errors.CommitFailedError,
    kafka_errors.UnknownMemberIdError,
    kafka_errors.IllegalGenerationError,
    kafka_errors.IllegalStateError,  # a partition taken away by a rebalance while a batch was in hand
)


class StageStopped(Exception):
    """A stage met a failure that no retry mends; the message says which stage, what and what to do."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, kafka_errors.KafkaError):
        return exc.retriable or isinstance(exc, _KAFKA_AWAY) or type(exc) is kafka_errors.KafkaError
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is None or code & 0xFF in _SQLITE_TRANSIENT_CODES
    return isinstance(exc, OSError)


def is_fatal(exc: BaseException) -> bool:
    """A Kafka error that will be refused again however often it is retried."""
    return isinstance(exc, kafka_errors.KafkaError) and not is_transient(exc)


def cause(exc: BaseException) -> str:
    """The metric label of a transient failure: kafka, sqlite or os."""
    if isinstance(exc, kafka_errors.KafkaError):
        return "kafka"
    return "sqlite" if isinstance(exc, sqlite3.Error) else "os"


def stopped(stage: str, exc: BaseException) -> StageStopped:
    return StageStopped(f"{stage} stopped: Kafka refused with {type(exc).__name__} ({exc}), which retrying does not "
                        f"mend (check the ACLs, the topic's max.message.bytes or the settings), then start it again")
