"""Secrets never print (repr, str, errors) and never travel in a process's argv (read from /proc)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from learnstream.config import SECRET_FIELDS, ConfigError, load_settings
from learnstream.secret import Secret
from trainer.service import run_child

SECRETS = {"pseudonym_key": "pk-SECRET-1", "remote_api_key": "api-SECRET-2", "api_tokens": "admin:tok-SECRET-3",
           "sasl_password": "sasl-SECRET-4"}


@hsettings(max_examples=100, deadline=None)
@given(st.text(min_size=1))
def test_a_secret_never_prints_itself(value: str) -> None:
    secret = Secret(value)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{[secret]}"):
        assert value not in shown or value in "Secret('***')"
    assert secret.reveal() == value and secret == Secret(value)


def test_settings_from_the_environment_keep_secrets_wrapped() -> None:
    env = {f"LEARNSTREAM_{name.upper()}": value for name, value in SECRETS.items()}
    settings = load_settings(env=env)
    assert set(SECRETS) == set(SECRET_FIELDS)
    for name, value in SECRETS.items():
        assert getattr(settings, name).reveal() == value
        assert value not in repr(settings) and value not in str(settings)
    with pytest.raises(ConfigError) as caught:
        load_settings(env={**env, "LEARNSTREAM_CHAT_THRESHOLD": "-5"})
    assert not any(value in str(caught.value) for value in SECRETS.values())


def _children_cmdlines() -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            ppid = int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])
            if ppid == os.getpid():
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, StopIteration, ValueError):
            continue
    return lines


async def test_the_training_child_gets_no_secret_in_argv(make_settings) -> None:
    settings = make_settings(**SECRETS)
    run = asyncio.create_task(run_child(settings, "chat", after=0, up_to=0, from_scratch=False))
    seen: list[str] = []
    async with asyncio.timeout(30):
        while not seen and not run.done():
            seen = [line for line in _children_cmdlines() if "trainer.run" in line]
            await asyncio.sleep(0.01)
    assert seen, "the training child was not seen running"
    for line in seen:
        assert not any(value in line for value in SECRETS.values()), line
    run.cancel()  # what it would train is not this test's concern: the child is killed, not awaited to its end
    with pytest.raises(asyncio.CancelledError):
        await run
