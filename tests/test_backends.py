"""Local and remote backends, and the router: modes, fallback both ways, hybrid routing, A/B arms, metrics."""

import asyncio
import traceback
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from remote_standin import RemoteStandin, StandinBehaviour

from serving.backends import (
    CONTROL,
    TREATMENT,
    BackendError,
    BackendReply,
    ChatRouter,
    LocalBackend,
    RemoteBackend,
    RemoteSettings,
    RouterSettings,
    is_complex,
)

SECRET_MESSAGE = "my neighbour Jane Doe at 12 Elm Road upset me"
ROUTINE = "I had an okay day today"


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[RemoteStandin]:
    async with RemoteStandin() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_standin(standin: RemoteStandin) -> None:
    standin.behaviour = StandinBehaviour()
    standin.received.clear()


def remote_settings(standin: RemoteStandin, **overrides) -> RemoteSettings:
    values = {"base_url": standin.base_url, "api_key": standin.api_key, "model": standin.model, **overrides}
    return RemoteSettings(**values)


@pytest.fixture
async def remote(standin: RemoteStandin) -> AsyncIterator[RemoteBackend]:
    async with RemoteBackend(settings=remote_settings(standin, timeout_seconds=2.0)) as backend:
        yield backend


class FakeModel:
    """The lead's model holder as LocalBackend sees it: an async generate(turns)."""

    def __init__(self, *, confidence: float = 0.9, version: int = 3) -> None:
        self.confidence = confidence
        self.version = version
        self.error: Exception | None = None
        self.delay_seconds = 0.0
        self.calls: list[list[str]] = []

    async def generate(self, turns: list[str]) -> tuple[str, float, int]:
        self.calls.append(turns)
        await asyncio.sleep(self.delay_seconds)
        if self.error is not None:
            raise self.error
        return "local reply", self.confidence, self.version


def make_router(
    settings: RouterSettings, *, model: FakeModel | None, remote: RemoteBackend | None
) -> tuple[ChatRouter, CollectorRegistry]:
    registry = CollectorRegistry()
    local = LocalBackend(generate=model.generate, timeout_seconds=0.5) if model else None
    return ChatRouter(settings=settings, local=local, remote=remote, registry=registry), registry


# --- remote backend ---------------------------------------------------------------------------------------------


async def test_remote_reply_and_request_shape(remote: RemoteBackend, standin: RemoteStandin) -> None:
    answer = await remote.reply(history=["hello", "hi, how are you?"], message="not great")
    assert answer == BackendReply(text=standin.behaviour.reply, backend="remote", model_version=None)
    [body] = standin.received
    assert body["model"] == standin.model
    roles = [turn["role"] for turn in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert "supportive" in body["messages"][0]["content"]
    assert body["messages"][-1]["content"] == "not great"


async def test_remote_roles_count_back_from_the_message(remote: RemoteBackend, standin: RemoteStandin) -> None:
    await remote.reply(history=["an earlier reply"], message="thanks")
    assert [turn["role"] for turn in standin.received[0]["messages"]] == ["system", "assistant", "user"]


@pytest.mark.parametrize("status", [401, 429, 500, 503])
async def test_remote_http_errors_name_no_user_text_or_key(standin: RemoteStandin, status: int) -> None:
    settings = remote_settings(standin, api_key="wrong-key" if status == 401 else standin.api_key)
    standin.behaviour.fail_status = None if status == 401 else status
    async with RemoteBackend(settings=settings) as backend:
        with pytest.raises(BackendError) as caught:
            await backend.reply(history=[], message=SECRET_MESSAGE)
    assert str(status) in str(caught.value)
    assert_private(caught.value, settings.api_key)


async def test_remote_timeout_is_a_backend_error(standin: RemoteStandin) -> None:
    standin.behaviour.delay_seconds = 1.0
    async with RemoteBackend(settings=remote_settings(standin, timeout_seconds=0.1)) as backend:
        with pytest.raises(BackendError, match="timed out") as caught:
            await backend.reply(history=[], message=SECRET_MESSAGE)
    assert_private(caught.value, standin.api_key)


async def test_remote_unreachable_is_a_backend_error() -> None:
    settings = RemoteSettings(base_url="http://127.0.0.1:9", api_key="k-123", model="m", timeout_seconds=1.0)
    async with RemoteBackend(settings=settings) as backend:
        with pytest.raises(BackendError) as caught:
            await backend.reply(history=[], message=SECRET_MESSAGE)
    assert_private(caught.value, "k-123")


async def test_remote_empty_reply_is_a_backend_error(remote: RemoteBackend, standin: RemoteStandin) -> None:
    standin.behaviour.reply = "   "
    with pytest.raises(BackendError, match="empty"):
        await remote.reply(history=[], message="hello")


async def test_remote_must_be_started(standin: RemoteStandin) -> None:
    backend = RemoteBackend(settings=remote_settings(standin))
    with pytest.raises(BackendError, match="not started"):
        await backend.reply(history=[], message="hello")
    await backend.start()
    assert (await backend.reply(history=[], message="hello")).backend == "remote"
    await backend.stop()
    with pytest.raises(BackendError, match="not started"):
        await backend.reply(history=[], message="hello")


def test_remote_settings_repr_hides_the_key() -> None:
    assert "s3cret" not in repr(RemoteSettings(base_url="http://x", api_key="s3cret", model="m"))


def assert_private(error: BaseException, api_key: str) -> None:
    """Neither the message nor a logged traceback (chained exceptions included) shows user text or the key."""
    logged = "".join(traceback.format_exception(error))
    assert "Jane" not in logged and "Elm" not in logged and api_key not in logged


# --- local backend ----------------------------------------------------------------------------------------------


async def test_local_reply_carries_version_and_confidence() -> None:
    model = FakeModel(confidence=0.7, version=5)
    answer = await LocalBackend(generate=model.generate).reply(history=["a", "b"], message="c")
    assert answer == BackendReply(text="local reply", backend="local", model_version=5, confidence=0.7)
    assert model.calls == [["a", "b", "c"]]


async def test_local_failure_and_timeout_are_backend_errors() -> None:
    model = FakeModel()
    backend = LocalBackend(generate=model.generate, timeout_seconds=0.05)
    model.error = RuntimeError(f"boom while reading {SECRET_MESSAGE}")
    with pytest.raises(BackendError, match="RuntimeError") as caught:
        await backend.reply(history=[], message=SECRET_MESSAGE)
    assert_private(caught.value, "no key")
    model.error, model.delay_seconds = None, 1.0
    with pytest.raises(BackendError, match="timed out"):
        await backend.reply(history=[], message="hello")


async def test_local_backend_error_passes_through() -> None:
    model = FakeModel()
    model.error = BackendError("no local chat model is loaded yet")
    with pytest.raises(BackendError, match="no local chat model"):
        await LocalBackend(generate=model.generate).reply(history=[], message="hello")


# --- router: modes and fallback ---------------------------------------------------------------------------------


async def test_remote_mode_is_the_default_and_falls_back_to_local(remote, standin) -> None:
    router, _ = make_router(RouterSettings(), model=FakeModel(), remote=remote)
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "remote"
    standin.behaviour.fail_status = 502
    answer = await router.reply(subject="u1", history=[], message=ROUTINE)
    assert (answer.backend, answer.model_version) == ("local", 3)


async def test_local_mode_falls_back_to_remote(remote) -> None:
    model = FakeModel()
    router, _ = make_router(RouterSettings(mode="local"), model=model, remote=remote)
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "local"
    model.delay_seconds = 2.0  # beyond the local timeout
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "remote"


async def test_no_backend_answering_is_an_error(remote, standin) -> None:
    model = FakeModel()
    model.error = RuntimeError("down")
    standin.behaviour.fail_status = 500
    router, _ = make_router(RouterSettings(mode="hybrid"), model=model, remote=remote)
    with pytest.raises(BackendError, match="no backend"):
        await router.reply(subject="u1", history=[], message=ROUTINE)


async def test_unconfigured_backend_is_skipped() -> None:
    router, _ = make_router(RouterSettings(mode="remote"), model=FakeModel(), remote=None)
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "local"


# --- router: hybrid ---------------------------------------------------------------------------------------------

COMPLEX_MESSAGES = [
    "x" * 401,
    "Why do I feel like this? And will it ever stop?",
    "should I change my sertraline dose",
    "I keep hearing voices at night",
]


async def test_hybrid_sends_routine_messages_local(remote) -> None:
    router, _ = make_router(RouterSettings(mode="hybrid"), model=FakeModel(), remote=remote)
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "local"


@pytest.mark.parametrize("message", COMPLEX_MESSAGES)
async def test_hybrid_sends_complex_messages_remote(remote, message: str) -> None:
    model = FakeModel()
    router, _ = make_router(RouterSettings(mode="hybrid"), model=model, remote=remote)
    assert (await router.reply(subject="u1", history=[], message=message)).backend == "remote"
    assert model.calls == []


def test_complexity_ignores_words_inside_other_words() -> None:
    settings = RouterSettings()
    assert not is_complex("I feel so drugstore-adjacent today", settings=settings)  # not "drugs"
    assert not is_complex("Is it okay to rest?", settings=settings)


async def test_hybrid_asks_remote_when_local_is_unsure(remote) -> None:
    router, _ = make_router(
        RouterSettings(mode="hybrid", min_local_confidence=0.5), model=FakeModel(confidence=0.2), remote=remote
    )
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "remote"


async def test_hybrid_keeps_unsure_local_reply_when_remote_fails(remote, standin) -> None:
    standin.behaviour.fail_status = 500
    router, _ = make_router(RouterSettings(mode="hybrid"), model=FakeModel(confidence=0.01), remote=remote)
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "local"


async def test_hybrid_falls_back_both_ways(remote, standin) -> None:
    model = FakeModel()
    router, _ = make_router(RouterSettings(mode="hybrid"), model=model, remote=remote)
    model.error = RuntimeError("no model")
    assert (await router.reply(subject="u1", history=[], message=ROUTINE)).backend == "remote"
    model.error = None
    standin.behaviour.fail_status = 503
    assert (await router.reply(subject="u1", history=[], message=COMPLEX_MESSAGES[1])).backend == "local"


# --- router: A/B arms and metrics -------------------------------------------------------------------------------


def test_ab_split_follows_the_configured_share() -> None:
    router, _ = make_router(RouterSettings(ab_mode="hybrid", ab_share=0.3), model=None, remote=None)
    arms = [router.arm_of(f"pseudonym-{n}") for n in range(10_000)]
    assert arms.count(TREATMENT) / len(arms) == pytest.approx(0.3, abs=0.02)


def test_ab_arm_is_stable_and_salted() -> None:
    settings = RouterSettings(ab_mode="local", ab_share=0.5)
    first, _ = make_router(settings, model=None, remote=None)
    second, _ = make_router(settings, model=None, remote=None)
    subjects = [f"pseudonym-{n}" for n in range(200)]
    assert [first.arm_of(s) for s in subjects] == [second.arm_of(s) for s in subjects]
    reshuffled, _ = make_router(
        RouterSettings(ab_mode="local", ab_share=0.5, ab_salt="experiment-2"), model=None, remote=None
    )
    assert [first.arm_of(s) for s in subjects] != [reshuffled.arm_of(s) for s in subjects]


def test_without_ab_mode_everyone_is_control() -> None:
    router, _ = make_router(RouterSettings(ab_share=0.9), model=None, remote=None)
    assert {router.arm_of(f"s{n}") for n in range(100)} == {CONTROL}


async def test_arms_use_their_modes_and_are_measured_apart(remote, standin) -> None:
    router, registry = make_router(
        RouterSettings(mode="remote", ab_mode="local", ab_share=0.5), model=FakeModel(), remote=remote
    )
    subjects = [f"pseudonym-{n}" for n in range(40)]
    for subject in subjects:
        answer = await router.reply(subject=subject, history=[], message=ROUTINE)
        assert answer.backend == ("local" if router.arm_of(subject) == TREATMENT else "remote")
    treated = sum(router.arm_of(s) == TREATMENT for s in subjects)

    def sample(name: str, arm: str, backend: str) -> float:
        return registry.get_sample_value(name, {"arm": arm, "backend": backend}) or 0.0

    assert sample("learnstream_chat_backend_requests_total", TREATMENT, "local") == treated
    assert sample("learnstream_chat_backend_requests_total", CONTROL, "remote") == len(subjects) - treated
    assert sample("learnstream_chat_replies_total", TREATMENT, "local") == treated
    assert sample("learnstream_chat_backend_latency_seconds_count", CONTROL, "remote") == len(subjects) - treated

    standin.behaviour.fail_status = 500
    control_subject = next(s for s in subjects if router.arm_of(s) == CONTROL)
    assert (await router.reply(subject=control_subject, history=[], message=ROUTINE)).backend == "local"
    assert sample("learnstream_chat_backend_errors_total", CONTROL, "remote") == 1
    assert sample("learnstream_chat_replies_total", CONTROL, "local") == 1


async def test_metrics_carry_only_arm_and_backend_labels(remote) -> None:
    router, registry = make_router(RouterSettings(), model=FakeModel(), remote=remote)
    await router.reply(subject="pseudonym-secret", history=[], message=SECRET_MESSAGE)
    for metric in registry.collect():
        for sample in metric.samples:
            assert set(sample.labels) - {"le"} <= {"arm", "backend"}
            assert "pseudonym-secret" not in str(sample.labels)
    labels = {"arm": CONTROL, "backend": "remote"}
    assert registry.get_sample_value("learnstream_chat_backend_requests_total", labels) == 1
    assert REGISTRY.get_sample_value("learnstream_chat_backend_requests_total", labels) is None  # not global


@pytest.mark.parametrize(
    "overrides", [{"mode": "groq"}, {"ab_mode": "both"}, {"ab_share": 1.5}, {"ab_share": -0.1}]
)
def test_invalid_router_settings_are_rejected(overrides: dict) -> None:
    with pytest.raises(ValueError):
        RouterSettings(**overrides)


# --- remote redaction (always on) -------------------------------------------------------------------------------

PLANTED = ["Ngozi Okonkwo-Baptiste", "07700\u00a0900\u2009461", "ngozi.ob@example.com", "943 476 5919", "Leeds"]


async def test_remote_never_receives_planted_pii_and_the_reply_gets_the_users_values_back(
    remote: RemoteBackend, standin: RemoteStandin
) -> None:
    standin.behaviour.echo_placeholders = True
    history = [f"my sister {PLANTED[0]} lives in {PLANTED[4]}", "That sounds hard."]
    message = f"she said call {PLANTED[1]} or mail {PLANTED[2]}, my NHS number is {PLANTED[3]}"
    answer = await remote.reply(history=history, message=message)
    sent = str(standin.received)
    assert not [value for value in PLANTED if value in sent or value.split()[0] in sent]
    assert not any(group in sent for group in ("900", "461", "5919", "okonkwo"))
    assert "[PHONE_" in sent and "[EMAIL_" in sent and "[PERSON_" in sent
    # The stand-in echoed the placeholders of the message; the user reads their own values.
    assert PLANTED[1] in answer.text and PLANTED[2] in answer.text and PLANTED[3] in answer.text
    assert "[" not in answer.text


async def test_placeholders_differ_per_request_and_nothing_maps_back_across_requests(
    remote: RemoteBackend, standin: RemoteStandin
) -> None:
    await remote.reply(history=[], message="I told Ngozi Okonkwo everything")
    await remote.reply(history=[], message="I told Ngozi Okonkwo everything")
    first, second = (body["messages"][-1]["content"] for body in standin.received)
    assert first != second and "Ngozi" not in first + second
    standin.behaviour.reply = f"Earlier you said {first.split()[-2]}"  # a stale placeholder stays a placeholder
    answer = await remote.reply(history=[], message="hello")
    assert "Ngozi" not in answer.text
