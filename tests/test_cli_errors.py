"""No CLI command prints a traceback on bad input: one line on stderr and exit code 1 (2 for usage errors)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

import pytest

from learnstream import kafka
from learnstream.config import Settings
from ops.broker import free_port
from tests.procs import CLI_TIMEOUT_S, REPO, settings_env

NOISE = ("Traceback", "Unclosed", "Exception ignored")


def cli(settings: Settings, *args: str, env: dict[str, str] | None = None, stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=REPO, env={**settings_env(settings),
                          **(env or {})}, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT_S)


def assert_one_line_failure(result: subprocess.CompletedProcess, *, code: int = 1, says: str = "") -> None:
    assert result.returncode == code, result.stderr
    assert not any(noise in result.stderr for noise in NOISE), result.stderr
    learnstream_lines = [line for line in result.stderr.splitlines() if line.startswith("learnstream: ")]
    assert len(learnstream_lines) == 1 and says in learnstream_lines[0], result.stderr


def test_version_and_usage(make_settings) -> None:
    settings = make_settings()
    version = cli(settings, "--version")
    assert version.returncode == 0 and version.stdout.startswith("learnstream ")
    usage = cli(settings, "no-such-command")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_missing_file_and_bad_settings(make_settings) -> None:
    settings = make_settings()
    assert_one_line_failure(cli(settings, "produce", "chat", "/nonexistent/events.jsonl"), says="/nonexistent")
    assert_one_line_failure(cli(settings, "status", env={"LEARNSTREAM_CHAT_THRESHOLD": "-5"}), says="threshold")


@pytest.mark.parametrize("args", [("produce", "chat", "-"), ("dlq", "list"), ("dlq", "redrive"), ("replay",),
                                  ("topics",), ("lag",)])
def test_unreachable_broker(make_settings, args: tuple[str, ...]) -> None:
    settings = make_settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    result = subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=REPO, env=settings_env(settings),
                            input="{}\n", capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert_one_line_failure(result, says="Kafka")
    assert len(result.stderr.splitlines()) == 1, result.stderr  # not the Kafka client's own error line first


def test_unknown_topic_is_an_error_and_is_not_created(make_settings) -> None:
    settings = make_settings()
    assert_one_line_failure(cli(settings, "dlq", "list", "--topic", "nope"), says="unknown topic")
    assert not asyncio.run(kafka.topic_partitions(settings, ["nope.dlq"]))


def test_broken_pipe_is_quiet(make_settings) -> None:
    settings = make_settings()
    child = subprocess.Popen([sys.executable, "-m", "ops.cli", "status"], cwd=REPO, env=settings_env(settings),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # `learnstream status | head -0`: the reader is gone before the first write
    with child.stderr:
        stderr = child.stderr.read().decode()
    assert child.wait(timeout=CLI_TIMEOUT_S) in (0, 1)
    assert not any(noise in stderr for noise in NOISE), stderr


def test_up_on_a_port_in_use(make_settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = make_settings(http_port=taken.getsockname()[1])
        assert_one_line_failure(cli(settings, "up", "--roles", "serving"), says="in use")
