"""Secrets never print (repr, str, errors, log lines) and never travel in a process's argv (read from /proc)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import aiohttp
import orjson
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


@pytest.mark.kafka
async def test_no_secret_reaches_a_log_line(make_settings, start_pipeline, caplog) -> None:
    """Every role's log, at DEBUG and the libraries' included, while callers with the right, a wrong and no token
    use the API. (The SASL password is configured but unused: the test broker speaks PLAINTEXT.)"""
    settings = make_settings(**SECRETS)
    caplog.set_level(logging.DEBUG)
    await start_pipeline(settings, roles=("anonymizer", "store", "serving"))
    base = f"http://127.0.0.1:{settings.http_port}"
    event = {"schema": "chat.v1", "event_id": "sec-1", "ts": "2026-11-01T10:00:00Z", "user_id": "u-sec",
             "session_id": "s-sec", "role": "patient", "text": "hello", "consent": {"training": True}}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for token in (None, "wrong-token", "tok-SECRET-3"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.post(f"{base}/api/events", data=orjson.dumps(event), headers=headers) as response:
                assert response.status in (401, 202)
            async with http.post(f"{base}/api/chat", json={"user_id": "u-sec", "session_id": "s-sec",
                                                           "message": "hello"}, headers=headers) as response:
                await response.read()
            async with http.get(f"{base}/metrics", headers=headers) as response:
                await response.read()
    await asyncio.sleep(2)  # the event through the anonymizer and the store
    logged = caplog.text + "\n".join(str(record.args) for record in caplog.records)
    assert caplog.records, "nothing was logged"
    leaked = [name for name, value in SECRETS.items() if value.split(":")[-1] in logged]
    assert not leaked, leaked
