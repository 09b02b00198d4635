"""The serving app as a replica runs it, on the real broker: roles, crisis safety and its flag on safety.flags,
the remote, hybrid and A/B backends against the local stand-in, version 0 before any training, image enhance."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, strategies as st
from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from transformers import modeling_utils

from learnstream import kafka, topics
from learnstream.config import FAMILIES, Settings
from learnstream.pseudonym import pseudonym
from learnstream.registry import MANIFEST, Registry
from serving import safety
from serving.app import Serving, faces_to_identify
from tests.remote_standin import RemoteStandin
from trainer.run import ensure_base

pytestmark = pytest.mark.kafka

TOKENS = {"clinician": "clin-token-1", "app": "app-token-1", "admin": "admin-token-1"}
TOKEN_SPEC = ",".join(f"{role}:{token}" for role, token in TOKENS.items())
BACKENDS = {"local", "remote", "safety"}
ROUTINE = "I feel a bit tense at work this week"
COMPLEX = "Should I change my medication dose?"  # a clinical term: hybrid asks the remote first
CRISIS = {  # message -> the category it is flagged with
    "i dont want to be here anymore": "suicide",
    "Ive been thinking about k1lling myself": "suicide",
    "I have been cutting my arms again": "self_harm",
    "my partner hits me when he is drunk": "abuse",
}

IDENTIFY = {"faces": [[0.1, 0.2]], "consent": {"faces": True}}  # a body POST /api/images/identify takes

Serve = Callable[..., Awaitable[tuple[TestClient, Serving]]]


def chat_event(session: str = "s-1") -> dict:
    return {"schema": "chat.v1", "event_id": uuid.uuid4().hex, "ts": "2026-11-01T10:00:00Z", "user_id": "u-1",
            "session_id": session, "role": "patient", "text": ROUTINE, "consent": {"training": True}}


def bearer(role: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}


@pytest.fixture(scope="module")
async def template(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Topics and a data dir holding version 0 of both families, built once; each replica gets a copy of it."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("serving") / "data", bootstrap_servers=kafka_bootstrap,
                        topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=1, pseudonym_key="test-key")
    await kafka.ensure_topics(settings)
    for family in FAMILIES:
        await asyncio.to_thread(ensure_base, settings, Registry(settings.registry_dir), family)
    return settings


@pytest.fixture
async def serve(template: Settings, tmp_path: Path) -> AsyncIterator[Serve]:
    """serve(**settings overrides) -> a started replica and a test client for its app; stopped at teardown."""
    started: list[tuple[TestClient, Serving]] = []

    async def start(**overrides) -> tuple[TestClient, Serving]:
        data_dir = tmp_path / f"data{len(started)}"
        shutil.copytree(template.data_dir, data_dir)
        serving = Serving(dataclasses.replace(template, data_dir=data_dir, **overrides))
        await serving.start()
        client = TestClient(TestServer(serving.app))
        await client.start_server()
        started.append((client, serving))
        return client, serving

    yield start
    for client, serving in reversed(started):
        await client.close()
        await serving.stop()


@pytest.fixture
async def standin() -> AsyncIterator[RemoteStandin]:
    async with RemoteStandin() as server:
        yield server


def remote_settings(standin: RemoteStandin) -> dict:
    return {"remote_url": standin.base_url, "remote_api_key": standin.api_key, "remote_model": standin.model}


async def chat(client: TestClient, message: str, *, session: str = "s-1", user: str | None = None,
               headers: dict[str, str] | None = None) -> dict:
    body = {"session_id": session, "message": message, **({"user_id": user} if user else {})}
    response = await client.post("/api/chat", json=body, headers=headers or {})
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["backend"] in BACKENDS and answer["reply"]  # every reply says who answered
    return answer


# ---- roles ---------------------------------------------------------------------------------------------------


RANK = {"app": 0, "clinician": 1, "admin": 2}


async def test_with_tokens_every_endpoint_needs_its_role(serve: Serve) -> None:
    """Anonymous callers get 401 everywhere but health; roles nest (app < clinician < admin); errors are JSON."""
    client, _ = await serve(api_tokens=TOKEN_SPEC)
    chat_body = {"session_id": "s-1", "message": ROUTINE}
    routes = [  # method, path, body, the least role, its success status
        ("GET", "/api/ai/training-status", None, "clinician", 200),
        ("POST", "/api/ai/trigger-training", {}, "clinician", 202),
        ("POST", "/api/models/chat/rollback", {"version": 0}, "admin", 200),
        ("GET", "/metrics", None, "admin", 200),
        ("POST", "/api/chat", chat_body, "app", 200),
        ("POST", "/api/events", chat_event(), "app", 202),
        ("POST", "/api/images/enhance", {"caption": "a red dress"}, "app", 200),
        ("GET", "/api/images/search?q=dress&user_id=u-1", None, "app", 200),
        ("GET", "/api/images/people?user_id=u-1", None, "app", 200),
        ("POST", "/api/images/identify?user_id=u-1", IDENTIFY, "app", 200),
    ]
    for method, path, body, least, success in routes:
        for role in (None, *RANK):
            response = await client.request(method, path, json=body, headers=bearer(role))
            text = await response.text()
            expected = 401 if role is None else success if RANK[role] >= RANK[least] else 403
            assert response.status == expected, (path, role, text)
            assert not any(token in text for token in TOKENS.values())
            if expected in (401, 403):
                assert "error" in await response.json()
            if expected == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz"):
        assert (await client.get(path)).status in (200, 503)
    unknown = await client.post("/api/ai/trigger-training", json={}, headers={"Authorization": "Bearer guess"})
    assert unknown.status == 401
    no_owner = await client.get("/api/images/search?q=dress", headers=bearer("app"))
    assert no_owner.status == 400 and "user_id" in (await no_owner.json())["error"]


@pytest.mark.parametrize("dev", [False, True])
async def test_without_tokens_app_endpoints_are_open_and_the_others_need_dev(serve: Serve, dev: bool) -> None:
    client, _ = await serve(dev=dev)
    assert (await client.post("/api/chat", json={"session_id": "s-1", "message": ROUTINE})).status == 200
    assert (await client.post("/api/events", json=chat_event())).status == 202
    # A token means nothing when none is configured.
    trigger = await client.post("/api/ai/trigger-training", json={}, headers={"Authorization": "Bearer x"})
    assert trigger.status == (202 if dev else 403)
    assert (await client.post("/api/models/chat/rollback", json={"version": 0})).status == (200 if dev else 403)


def commit_copy_of_base(registry: Registry) -> None:
    """Version 1 of the chat family: a copy of the base, version 0."""
    base = registry.get("chat", 0)
    with registry.writer_lock(), registry.staging("chat") as staged:
        for file in base.path.iterdir():
            if file.name != MANIFEST:
                shutil.copy2(file, staged / file.name)
        registry.commit("chat", staged, {"parent_version": 0, "decision": "promoted", "reason": "test"})


async def test_admin_rollback_is_announced_and_swapped_in(serve: Serve) -> None:
    client, serving = await serve(api_tokens=TOKEN_SPEC)
    registry = serving.registry
    commit_copy_of_base(registry)
    base_model = weakref.ref(serving.holders["chat"].current.model)
    base_tokenizer = serving.holders["chat"].current.model.tokenizer
    for body, status in (({"version": 99}, 404), ({"version": True}, 400), ({"version": 1}, 200)):
        response = await client.post("/api/models/chat/rollback", json=body, headers=bearer("admin"))
        assert response.status == status, await response.text()
    async with asyncio.timeout(20):  # its own model.updated event, heard on the broker (reconciling takes 30 s)
        while serving.holders["chat"].version != 1 or base_model() is not None:  # swapped, and the old one freed
            await asyncio.sleep(0.05)
    assert registry.served("chat") == 1
    assert serving.holders["chat"].current.model.tokenizer is base_tokenizer  # same files: not read again
    assert (await chat(client, ROUTINE, headers=bearer("app")))["model_version"] == 1


# ---- crisis safety -------------------------------------------------------------------------------------------


async def read_flags(settings: Settings, count: int) -> list[tuple[bytes, bytes]]:
    """The first `count` records of safety.flags, as (key, value)."""
    consumer = kafka.consumer(settings, group_id=None)
    await consumer.start()
    try:
        partition = TopicPartition(topics.prefixed(settings, topics.SAFETY_FLAGS), 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        records = []
        async with asyncio.timeout(30):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += [(record.key, record.value) for record in batch]
        return records
    finally:
        await consumer.stop()


async def test_crisis_messages_get_the_vetted_reply_and_a_pseudonymous_flag(
    serve: Serve, standin: RemoteStandin
) -> None:
    client, serving = await serve(use_local_ai=False, **remote_settings(standin))
    sessions = {message: f"session-raw-{n}" for n, message in enumerate(CRISIS)}
    for message, session in sessions.items():
        answer = await chat(client, message, session=session, user="user-raw-7")
        assert answer["backend"] == "safety" and answer["reply"] == safety.CRISIS_REPLY
        assert all(number in answer["reply"] for number in ("116 123", "NHS 111", "999"))
    assert standin.received == []  # no model, local or remote, saw them
    assert (await chat(client, ROUTINE, session="session-raw-0"))["backend"] == "safety"  # the session stays flagged
    assert (await chat(client, ROUTINE, session="session-raw-other"))["backend"] == "remote"

    records = await read_flags(serving.settings, len(CRISIS))
    expected = {pseudonym(serving.key, "session", session): CRISIS[message] for message, session in sessions.items()}
    flags = [orjson.loads(value) for _, value in records][:len(CRISIS)]
    assert {flag["session"]: flag["category"] for flag in flags} == expected
    assert {flag["layer"] for flag in flags} == {"rules"} and all(flag["score"] == 1.0 for flag in flags)
    assert [key.decode() for key, _ in records[:len(CRISIS)]] == [flag["session"] for flag in flags]
    assert {flag["schema"] for flag in flags} == {"safety.flag.v1"}
    raw = b"".join(key + value for key, value in records)
    for secret in (*sessions.values(), *CRISIS, "user-raw-7", "k1lling", "cutting"):
        assert secret.encode() not in raw


async def test_flagged_sessions_are_shared_by_replicas_survive_a_restart_and_clinicians_clear_them(
    serve: Serve, standin: RemoteStandin
) -> None:
    first, _ = await serve(use_local_ai=False, api_tokens=TOKEN_SPEC, **remote_settings(standin))
    assert (await chat(first, "I want to kill myself", session="s-risk", headers=bearer("app")))["backend"] == "safety"
    later, _ = await serve(use_local_ai=False, api_tokens=TOKEN_SPEC, **remote_settings(standin))  # a new replica
    assert (await chat(later, "ok thanks, what should i do now", session="s-risk",
                       headers=bearer("app")))["backend"] == "safety"
    for role, status in (("app", 403), ("clinician", 200)):
        response = await later.post("/api/safety/clear", json={"session_id": "s-risk"}, headers=bearer(role))
        assert response.status == status
    assert (await (await later.post("/api/safety/clear", json={}, headers=bearer("clinician"))).json())["error"]
    async with asyncio.timeout(30):  # the clear reaches the first replica through safety.flags
        while (await chat(first, ROUTINE, session="s-risk", headers=bearer("app")))["backend"] != "remote":
            await asyncio.sleep(0.2)
    metrics = await (await first.get("/metrics", headers=bearer("admin"))).text()
    assert 'learnstream_safety_flags_total{category="suicide",layer="rules"}' in metrics


# ---- the remote's second opinion on uncertain messages ---------------------------------------------------------

PLANTED = ("Priya Ramanathan", "priya.r@example.com", "07700 900461")
UNCERTAIN = "I am Priya Ramanathan and honestly I do not see the point lately, email priya.r@example.com"  # check-in
UNEASY = "I am not sure I can keep doing this. Priya Ramanathan, 07700 900461"  # below the check-in threshold


def flags_counted(category: str, layer: str) -> float:
    return REGISTRY.get_sample_value("learnstream_safety_flags_total", {"category": category, "layer": layer}) or 0.0


async def flags_of(serving: Serving, sessions: list[str]) -> list[dict]:
    """The flags of these sessions on safety.flags (other tests' flags share the topic), in session order."""
    wanted = [pseudonym(serving.key, "session", session) for session in sessions]
    async with asyncio.timeout(30):
        while True:
            records = [orjson.loads(r.value) async for r in kafka.read_to_end(serving.settings, [topics.SAFETY_FLAGS])]
            found = {flag["session"]: flag for flag in records if flag["session"] in wanted}
            if len(found) == len(wanted):
                return [found[session] for session in wanted]
            await asyncio.sleep(0.2)


def assert_no_planted_value(standin: RemoteStandin) -> None:
    received = orjson.dumps(standin.received).decode()
    for value in PLANTED:
        assert value not in received and value.split()[0] not in received


async def test_a_remote_crisis_answer_escalates_uncertain_turns_and_the_remote_sees_no_pii(
    serve: Serve, standin: RemoteStandin
) -> None:
    assert safety.assess(UNCERTAIN).check_in and not safety.assess(UNEASY).crisis
    client, serving = await serve(use_local_ai=False, safety_second_opinion_min_score=0.01, **remote_settings(standin))
    standin.behaviour.reply = "CRISIS."
    before = flags_counted("hopelessness", "remote")
    for n, message in enumerate((UNCERTAIN, UNEASY)):
        answer = await chat(client, message, session=f"s-unsure-{n}")
        assert answer["backend"] == "safety" and answer["reply"] == safety.CRISIS_REPLY  # not just a check-in
    assert len(standin.received) == 2  # each asked once, alone, with the screening prompt
    assert all(len(body["messages"]) == 2 and "CRISIS" in body["messages"][0]["content"] for body in standin.received)
    assert_no_planted_value(standin)
    assert flags_counted("hopelessness", "remote") == before + 1
    flags = await flags_of(serving, [f"s-unsure-{n}" for n in (0, 1)])
    assert [flag["layer"] for flag in flags] == ["remote", "remote"]
    standin.behaviour.reply = "OK"  # an escalated session stays flagged whatever the remote says next
    assert (await chat(client, ROUTINE, session="s-unsure-1"))["backend"] == "safety"


async def test_a_not_crisis_answer_a_slow_or_failing_remote_change_nothing(
    serve: Serve, standin: RemoteStandin
) -> None:
    client, serving = await serve(use_local_ai=False, safety_second_opinion_timeout_s=0.5, **remote_settings(standin))
    standin.behaviour.reply = "not crisis"
    answer = await chat(client, UNCERTAIN, session="s-calm-0")
    assert answer["backend"] == "safety" and answer["reply"] == safety.CHECK_IN_REPLY  # never cleared
    standin.behaviour.reply, standin.behaviour.delay_seconds = "CRISIS", 5.0
    started = asyncio.get_running_loop().time()
    answer = await chat(client, UNCERTAIN, session="s-calm-1")  # the request does not fail, nor wait for it
    assert asyncio.get_running_loop().time() - started < 4.0
    assert answer["backend"] == "safety" and answer["reply"] == safety.CHECK_IN_REPLY
    standin.behaviour.delay_seconds, standin.behaviour.fail_status = 0.0, 503
    assert (await chat(client, UNCERTAIN, session="s-calm-2"))["reply"] == safety.CHECK_IN_REPLY
    assert len(standin.received) == 3
    assert_no_planted_value(standin)
    flags = await flags_of(serving, [f"s-calm-{n}" for n in range(3)])
    assert [flag["layer"] for flag in flags] == ["classifier"] * 3


# ---- backends ------------------------------------------------------------------------------------------------


async def test_use_local_ai_0_answers_with_the_remote(serve: Serve, standin: RemoteStandin) -> None:
    client, _ = await serve(use_local_ai=False, **remote_settings(standin))
    answer = await chat(client, ROUTINE)
    assert answer == {"reply": standin.behaviour.reply, "model_version": None, "backend": "remote"}
    assert standin.received[-1]["model"] == standin.model


async def test_hybrid_routes_complex_messages_remote_and_falls_back_to_local(
    serve: Serve, standin: RemoteStandin
) -> None:
    client, _ = await serve(chat_mode="hybrid", **remote_settings(standin))
    assert (await chat(client, COMPLEX))["backend"] == "remote"
    standin.behaviour.fail_status = 503
    answer = await chat(client, COMPLEX, session="s-2")
    assert answer["backend"] == "local" and answer["model_version"] == 0


async def test_ab_arms_answer_in_their_modes_and_show_in_metrics(serve: Serve, standin: RemoteStandin) -> None:
    client, serving = await serve(use_local_ai=False, ab_mode="local", ab_share=0.5, **remote_settings(standin))
    users = [f"user-raw-{n}" for n in range(16)]
    for n, user in enumerate(users):
        arm = serving.router.arm_of(pseudonym(serving.key, "user", user))
        answer = await chat(client, ROUTINE, session=f"s-{n}", user=user)
        assert answer["backend"] == ("local" if arm == "treatment" else "remote")
    metrics = await (await client.get("/metrics")).text()
    for arm, backend in (("treatment", "local"), ("control", "remote")):
        assert f'learnstream_chat_replies_total{{arm="{arm}",backend="{backend}"}}' in metrics
        assert f'learnstream_chat_backend_latency_seconds_count{{arm="{arm}",backend="{backend}"}}' in metrics
    assert "user-raw" not in metrics


# ---- the base model and images -------------------------------------------------------------------------------


async def test_version_0_answers_before_any_training(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = await serve()
    assert (await (await client.get("/readyz")).json())["served"] == {"chat": 0, "image": 0}
    logged: list[str] = []
    monkeypatch.setattr(modeling_utils.logger, "warning_once", lambda message, *args: logged.append(message))
    answer = await chat(client, ROUTINE)
    assert answer["backend"] == "local" and answer["model_version"] == 0
    assert not [message for message in logged if "attention_mask" in message]
    status = await (await client.get("/api/ai/training-status")).json()
    assert status["families"]["chat"]["served_version"] == 0


async def test_the_status_says_which_version_this_replica_answers_with(serve: Serve) -> None:
    client, serving = await serve()
    commit_copy_of_base(serving.registry)
    with serving.registry.writer_lock():
        serving.registry.set_served("chat", 1)  # the pointer moved; no model.updated reached this replica (yet)
    chat_status = (await (await client.get("/api/ai/training-status")).json())["families"]["chat"]
    assert chat_status["served_version"] == 1 and chat_status["answering_version"] == 0
    assert (await chat(client, ROUTINE))["model_version"] == chat_status["answering_version"]
    assert await serving.holders["chat"].load_served()  # what reconciliation does
    chat_status = (await (await client.get("/api/ai/training-status")).json())["families"]["chat"]
    assert chat_status["served_version"] == chat_status["answering_version"] == 1
    assert (await chat(client, ROUTINE))["model_version"] == 1


async def test_image_enhance_needs_something_to_describe(serve: Serve) -> None:
    client, _ = await serve()
    for body in ({}, {"caption": "", "tags": []}, {"caption": 3}, {"tags": "red"}, {"embedding": ["x"]}, []):
        response = await client.post("/api/images/enhance", json=body)
        assert response.status == 400, body
        assert "error" in await response.json()
    assert (await client.post("/api/images/enhance", data=b"not json")).status == 400
    response = await client.post("/api/images/enhance", json={"caption": "a woman wearing a red dress"})
    assert response.status == 200
    answer = await response.json()
    assert set(answer) == {"description", "suggested_tags", "category", "model_version"}
    assert answer["model_version"] == 0


async def test_image_identify_needs_an_owner_face_consent_and_faces(serve: Serve) -> None:
    client, _ = await serve()
    assert (await client.post("/api/images/identify", json=IDENTIFY)).status == 400  # no owner named
    for body in ({"faces": [[0.1]]}, {**IDENTIFY, "consent": {"faces": "yes"}}, {**IDENTIFY, "consent": True},
                 {**IDENTIFY, "faces": []}, {**IDENTIFY, "faces": [[]]}, {**IDENTIFY, "faces": [["x"]]},
                 {**IDENTIFY, "faces": [0.1]}, [IDENTIFY]):
        response = await client.post("/api/images/identify?user_id=u-1", json=body)
        assert response.status == 400 and "error" in await response.json(), body
    response = await client.post("/api/images/identify?user_id=u-1", json=IDENTIFY)
    assert response.status == 200
    assert await response.json() == {"people": [None], "model_version": 0}  # version 0 knows nobody


_NUMBER = st.integers() | st.floats(allow_nan=False)
_ANY = st.none() | st.booleans() | _NUMBER | st.text(max_size=3)
_FACES = st.lists(st.lists(_NUMBER | _ANY, max_size=4) | _ANY, max_size=3) | _ANY
_CONSENT = st.sampled_from([{"faces": True}, {"faces": False}, {"faces": 1}, {}, True, None])


@given(st.fixed_dictionaries({}, optional={"faces": _FACES, "consent": _CONSENT, "other": _ANY}))
def test_identify_bodies_are_faces_with_consent_or_a_400(body: dict) -> None:
    try:
        faces = faces_to_identify(body)
    except web.HTTPBadRequest as refused:
        assert "error" in orjson.loads(refused.text)
        return
    assert body["consent"]["faces"] is True and faces
    assert all(face and all(isinstance(x, (int, float)) for x in face) for face in faces)
