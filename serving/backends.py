"""Chat backends (the served local model, a remote OpenAI-compatible API) and the router that picks one per request.

Modes, as the seed's apps know them: "remote" (USE_LOCAL_AI=0, the default), "local" (USE_LOCAL_AI=1) and
"hybrid" (local for routine messages; remote for complex ones and for replies the local model is unsure of).
Whatever the mode, a backend that fails or times out hands the request to the other one. For an A/B test a
stable share of subjects (pseudonymous user or session ids) is served in a second mode, and every backend call
is counted per arm and backend, so the arms can be compared in Prometheus.

Crisis messages never reach this module: serving.safety answers them first.
"""

import asyncio
import functools
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Histogram

from learnstream.pii.redaction import RequestRedactor

log = logging.getLogger(__name__)

MODES = ("remote", "local", "hybrid")
CONTROL, TREATMENT = "control", "treatment"

SYSTEM_PROMPT = (
    "You are a warm, supportive assistant in a UK mental health app. Listen, reflect the person's feelings, ask "
    "gentle open questions and suggest simple, evidence-based coping steps. You are not a clinician: do not "
    "diagnose or advise on medication; suggest their GP or care team for clinical questions. Keep replies to a "
    "few sentences. If someone may be at risk of harm, urge them to call 999, Samaritans on 116 123 or NHS 111."
)

CLINICAL_TERMS = frozenset(
    """
    medication medications meds dose dosage overdose prescription prescribed antidepressant antidepressants
    sertraline fluoxetine citalopram mirtazapine venlafaxine lithium diazepam quetiapine diagnosis diagnosed
    psychiatrist bipolar psychosis psychotic schizophrenia hallucinations mania manic anorexia bulimia ptsd
    flashbacks trauma ocd withdrawal pregnant alcohol drugs relapse sectioned
    """.split()
) | {"hearing voices", "side effects", "eating disorder", "crisis team"}


class BackendError(Exception):
    """A backend could not answer. The message names what failed; it never holds user text or credentials."""


@dataclass(frozen=True)
class BackendReply:
    text: str
    backend: str  # "local" | "remote": who answered
    model_version: int | None  # the local model's registry version; None for the remote API
    confidence: float | None = None  # local only: exp(mean token log-probability), see generation.generate_reply


class ChatBackend(Protocol):
    name: str

    async def reply(self, *, history: Sequence[str], message: str) -> BackendReply: ...


LocalGenerate = Callable[[list[str]], Awaitable[tuple[str, float, int]]]


class LocalBackend:
    """The served model, through serving's model holder: generate(turns) -> (reply, confidence, version).

    After a timeout the request moves on and its sequence leaves the engine's batch at the next step
    (serving.engine), so the timeout bounds CPU as well as latency.
    """

    name = "local"

    def __init__(self, *, generate: LocalGenerate, timeout_seconds: float = 20.0) -> None:
        self._generate = generate
        self._timeout_seconds = timeout_seconds

    async def reply(self, *, history: Sequence[str], message: str) -> BackendReply:
        try:
            text, confidence, version = await asyncio.wait_for(
                self._generate([*history, message]), self._timeout_seconds
            )
        except TimeoutError:
            raise BackendError("local model timed out") from None
        except BackendError:
            raise  # the model holder's own account, e.g. "no model loaded yet"
        except Exception as error:  # any failure of the model holder means: let the other backend answer
            # "from None": a chained model error could carry the conversation into logs.
            raise BackendError(f"local model failed: {type(error).__name__}") from None
        return BackendReply(text=text, backend=self.name, model_version=version, confidence=confidence)


@dataclass(frozen=True, kw_only=True)
class RemoteSettings:
    base_url: str  # API root, e.g. https://api.groq.com/openai/v1 (LEARNSTREAM_REMOTE_URL)
    api_key: str = field(repr=False)  # bearer key (LEARNSTREAM_REMOTE_API_KEY); kept out of repr and so of logs
    model: str  # model name at the provider (LEARNSTREAM_REMOTE_MODEL)
    timeout_seconds: float = 20.0  # whole request, connection included
    max_tokens: int = 300  # longest reply, in tokens
    temperature: float = 0.7  # sampling temperature at the provider
    system_prompt: str = SYSTEM_PROMPT  # sets the assistant's supportive, non-clinical manner


class RemoteBackend:
    """An OpenAI-compatible chat-completions client; start() before use, or use it as `async with`.

    Redaction is always on: the remote gets the conversation anonymized, and the placeholders in its reply are
    mapped back to the user's values in memory for that request only. redactor: None shares one built with
    the default NER model.
    """

    name = "remote"

    def __init__(self, *, settings: RemoteSettings, redactor: RequestRedactor | None = None) -> None:
        self._settings = settings
        self._redactor = redactor or _shared_redactor()
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_seconds),
                headers={"Authorization": f"Bearer {self._settings.api_key}"},
            )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "RemoteBackend":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _messages(self, history: Sequence[str], message: str) -> list[dict[str, str]]:
        """The system prompt, then the turns; counting back from the user's message, turns alternate."""
        turns = [*history, message]
        return [{"role": "system", "content": self._settings.system_prompt}] + [
            {"role": "user" if (len(turns) - 1 - index) % 2 == 0 else "assistant", "content": turn}
            for index, turn in enumerate(turns)
        ]

    async def reply(self, *, history: Sequence[str], message: str) -> BackendReply:
        if self._session is None:
            raise BackendError("remote backend is not started")
        redacted = await self._redactor.redact_async([*history, message])
        payload = {
            "model": self._settings.model,
            "messages": self._messages(redacted.turns[:-1], redacted.turns[-1]),
            "max_tokens": self._settings.max_tokens,
            "temperature": self._settings.temperature,
        }
        # Errors are re-raised "from None": aiohttp's exceptions carry request details we keep out of logs.
        try:
            async with self._session.post(self._url, json=payload) as response:
                if response.status != 200:
                    raise BackendError(f"remote answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except TimeoutError:
            raise BackendError("remote timed out") from None
        except aiohttp.ClientError as error:
            raise BackendError(f"remote request failed: {type(error).__name__}") from None
        except ValueError:
            raise BackendError("remote reply is not JSON") from None
        return BackendReply(text=redacted.restore(_completion_text(body)), backend=self.name, model_version=None)


@functools.cache
def _shared_redactor() -> RequestRedactor:
    return RequestRedactor()


def _completion_text(body: object) -> str:
    try:
        text = body["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        raise BackendError("remote reply has no message") from None
    if not isinstance(text, str) or not text.strip():
        raise BackendError("remote reply is empty")
    return text.strip()


@dataclass(frozen=True, kw_only=True)
class RouterSettings:
    mode: str = "remote"  # "remote" (USE_LOCAL_AI=0), "local" (USE_LOCAL_AI=1) or "hybrid"; the control arm
    ab_mode: str | None = None  # the treatment arm's mode; None: no A/B test, everyone is in the control arm
    ab_share: float = 0.0  # share of subjects in the treatment arm, 0..1
    ab_salt: str = "learnstream-ab"  # change it to reshuffle subjects between arms for a new experiment
    min_local_confidence: float = 0.3  # hybrid: a local reply less confident than this is asked of the remote
    complex_message_chars: int = 400  # hybrid: messages longer than this go to the remote
    complex_question_count: int = 2  # hybrid: messages asking this many questions go to the remote
    clinical_terms: frozenset[str] = CLINICAL_TERMS  # hybrid: messages mentioning these go to the remote

    def __post_init__(self) -> None:
        if self.mode not in MODES or self.ab_mode not in (*MODES, None):
            raise ValueError(f"router modes must be among {MODES}")
        if not 0.0 <= self.ab_share <= 1.0:
            raise ValueError("ab_share must be between 0 and 1")


def is_complex(message: str, *, settings: RouterSettings) -> bool:
    """Hybrid routing: long, multi-question or clinical-risk-adjacent messages deserve the stronger model."""
    if len(message) > settings.complex_message_chars or message.count("?") >= settings.complex_question_count:
        return True
    words = f" {' '.join(re.findall(r'[a-z]+', message.lower()))} "
    return any(f" {term} " in words for term in settings.clinical_terms)


class RouterMetrics:
    """Per-arm, per-backend counters and latency; labels are arm and backend only, never ids."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("arm", "backend")
        self.requests = Counter(
            "learnstream_chat_backend_requests", "Chat requests sent to a backend", labels, registry=registry
        )
        self.errors = Counter(
            "learnstream_chat_backend_errors", "Backend calls that failed or timed out", labels, registry=registry
        )
        self.replies = Counter(
            "learnstream_chat_replies", "Replies delivered to users, by the backend that wrote them", labels,
            registry=registry,
        )
        self.latency = Histogram(
            "learnstream_chat_backend_latency_seconds", "Duration of backend calls, failed ones included", labels,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0), registry=registry,
        )
        for arm in (CONTROL, TREATMENT):  # at 0 from the start, so an arm's dashboards read 0 before its first call
            for backend in ("local", "remote"):
                for metric in (self.requests, self.errors, self.replies, self.latency):
                    metric.labels(arm, backend)


class ChatRouter:
    """Picks the backend for each request; either backend may be None when it is not configured."""

    def __init__(
        self,
        *,
        settings: RouterSettings,
        local: ChatBackend | None,
        remote: ChatBackend | None,
        registry: CollectorRegistry,
    ) -> None:
        self._settings = settings
        self._local = local
        self._remote = remote
        self._metrics = RouterMetrics(registry)

    def arm_of(self, subject: str) -> str:
        """A stable arm per subject: the same id lands in the same arm on every replica and restart."""
        if self._settings.ab_mode is None:
            return CONTROL
        digest = hashlib.sha256(f"{self._settings.ab_salt}:{subject}".encode()).digest()
        position = int.from_bytes(digest[:8], "big") / 2**64
        return TREATMENT if position < self._settings.ab_share else CONTROL

    def mode_of(self, subject: str) -> str:
        """The mode that serves the subject: its arm's."""
        return self._settings.ab_mode if self.arm_of(subject) == TREATMENT else self._settings.mode

    async def reply(self, *, subject: str, history: Sequence[str], message: str) -> BackendReply:
        arm = self.arm_of(subject)
        mode = self.mode_of(subject)
        if mode == "hybrid":
            answer = await self._hybrid(arm, history, message)
        elif mode == "local":
            answer = await self._first_answer(arm, (self._local, self._remote), history, message)
        else:
            answer = await self._first_answer(arm, (self._remote, self._local), history, message)
        self._metrics.replies.labels(arm, answer.backend).inc()
        return answer

    async def _hybrid(self, arm: str, history: Sequence[str], message: str) -> BackendReply:
        if self._local is None or is_complex(message, settings=self._settings):
            return await self._first_answer(arm, (self._remote, self._local), history, message)
        try:
            local_answer = await self._call(arm, self._local, history, message)
        except BackendError:
            return await self._first_answer(arm, (self._remote,), history, message)
        if self._remote is None or (local_answer.confidence or 0.0) >= self._settings.min_local_confidence:
            return local_answer
        try:
            return await self._call(arm, self._remote, history, message)
        except BackendError:
            return local_answer  # an unsure reply beats none

    async def _first_answer(
        self, arm: str, backends: Sequence[ChatBackend | None], history: Sequence[str], message: str
    ) -> BackendReply:
        for backend in backends:
            if backend is None:
                continue
            try:
                return await self._call(arm, backend, history, message)
            except BackendError:
                continue  # logged and counted by _call; the next backend is the fallback
        raise BackendError("no backend could answer")

    async def _call(self, arm: str, backend: ChatBackend, history: Sequence[str], message: str) -> BackendReply:
        labels = (arm, backend.name)
        self._metrics.requests.labels(*labels).inc()
        started = time.perf_counter()
        try:
            return await backend.reply(history=history, message=message)
        except BackendError as error:
            self._metrics.errors.labels(*labels).inc()
            log.warning("chat backend %s failed: %s", backend.name, error)
            raise
        finally:
            self._metrics.latency.labels(*labels).observe(time.perf_counter() - started)
