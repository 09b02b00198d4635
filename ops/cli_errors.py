"""Expected failures of a CLI command as one line on stderr and an exit code, never a traceback.

Exit codes: 0 success, 1 failure (bad file, unreachable broker, port in use, unknown topic, bad setting),
2 usage (argparse), 130 interrupted. A closed stdout (`learnstream status | head`) ends the command quietly.
Unexpected errors still show their traceback: they are bugs to report, not inputs to explain.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from importlib import metadata

from aiokafka.errors import KafkaError

from learnstream.config import ConfigError
from learnstream.extras import MissingPackages
from learnstream.transient import StageStopped
from ops.broker import BrokerError

FAILURE = 1
INTERRUPTED = 130


class CommandError(Exception):
    """A command's own expected failure (unknown topic, say): its message is the whole story."""


def package_version() -> str:
    try:
        return metadata.version("learnstream")
    except metadata.PackageNotFoundError:  # run from a checkout without installing
        return "0+unknown"


def describe(exc: BaseException) -> str | None:
    """One line for an expected failure, or None for a bug."""
    if isinstance(exc, (ConfigError, BrokerError, MissingPackages, CommandError, StageStopped, ValueError)):
        return str(exc)
    if isinstance(exc, KafkaError):
        return f"Kafka: {exc} (is the broker running? `learnstream broker status`, or KAFKA_BOOTSTRAP_SERVERS)"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"a port is already in use ({exc.strerror or exc}); set LEARNSTREAM_HTTP_PORT or --port"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, OSError):
        return str(exc)
    return None


def _quiet_stdout() -> None:
    # Python flushes stdout at exit; into a closed pipe that is a second BrokenPipeError: point it at /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run_command(command: Callable[[], int]) -> int:
    try:
        code = command()
        sys.stdout.flush()  # here, not at exit: a closed pipe is then a BrokenPipeError this function handles
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return FAILURE
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        message = describe(exc)
        if message is None:
            raise
        print(f"learnstream: {message}", file=sys.stderr)
        return FAILURE


__all__ = ["CommandError", "describe", "package_version", "run_command"]
