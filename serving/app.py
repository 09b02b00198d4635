"""The serving role: an aiohttp app with a hot-swappable model per family (routes in docs/ARCHITECTURE.md, "HTTP")."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from learnstream import lineage, topics
from learnstream.config import Settings
from learnstream.extras import LOCAL_CHAT
from learnstream.metrics import NAMES_NOT_REMOVED, REQUEST_SECONDS, SAFETY_FLAGS, start_serving_at_zero
from learnstream.pii.redaction import RequestRedactor
from learnstream.pseudonym import pseudonym
from learnstream.registry import ErasedVersion, Registry, RegistryError, Version, rollback
from learnstream.secret import reveal
from learnstream.supervisor import Supervised, Supervisor
from learnstream.store import Store
from producers.http_ingest import MAX_BODY_BYTES, events_handler
from producers.sdk import EventProducer
from schemas import new_event_id, utc_now
from serving import auth, limits, safety, streaming
from serving.session_risk import SessionRisk, SessionRiskFollower
from serving.backends import (BackendError, ChatRouter, LocalBackend, RemoteBackend, RemoteSettings,
                              RouterSettings)
from serving.chat_model import ChatModelLoader
from serving.generation import GenerationSettings, SessionHistory
from serving.holders import ModelHolder
from serving.image_model import ImageModel
from serving.second_opinion import SCREENING_MAX_TOKENS, SCREENING_PROMPT, SecondOpinion
from serving.status import training_status
from serving.updates import ModelUpdates

log = logging.getLogger(__name__)

# The replica's background loops, by the names /readyz and learnstream_background_restarts_total give them.
MODEL_UPDATES = "model_updates"
SAFETY_FLAGS_FOLLOWER = "safety_flags"

# Request body limits by route; the rest (small JSON commands) get DEFAULT_BODY_LIMIT. Events may carry an image
# embedding up to max_event_bytes, which the ingest handler checks itself (its DLQ keeps the oversized ones).
BODY_LIMITS = {"/api/events": MAX_BODY_BYTES, "/api/chat": 64 * 1024, "/api/images/enhance": 1024 * 1024,
               "/api/images/identify": 1024 * 1024}
DEFAULT_BODY_LIMIT = 16 * 1024


def remote_backend(settings: Settings, redactor: RequestRedactor, **overrides: Any) -> RemoteBackend:
    """The configured remote API; overrides: other RemoteSettings (the safety screening's prompt and timeout)."""
    remote = {"base_url": settings.remote_url, "api_key": reveal(settings.remote_api_key) or "",
              "model": settings.remote_model, "timeout_seconds": settings.remote_timeout_s}
    return RemoteBackend(settings=RemoteSettings(**(remote | overrides)), redactor=redactor)


def second_opinion(settings: Settings, redactor: RequestRedactor) -> SecondOpinion:
    screening = remote_backend(settings, redactor, system_prompt=SCREENING_PROMPT,
                               max_tokens=SCREENING_MAX_TOKENS, temperature=0.0,
                               timeout_seconds=settings.safety_second_opinion_timeout_s)
    return SecondOpinion(remote=screening, floor=settings.safety_second_opinion_min_score)


def router_settings(settings: Settings) -> RouterSettings:
    use_local = settings.use_local_ai if settings.use_local_ai is not None else not settings.remote_url
    mode = settings.chat_mode or ("local" if use_local else "remote")
    return RouterSettings(mode=mode, ab_mode=settings.ab_mode, ab_share=settings.ab_share)


def _load_image(version: Version) -> ImageModel:
    model = ImageModel.empty() if version.number == 0 else ImageModel.load(version.path)
    model.warm_up()
    return model


class Serving:
    """Everything a serving replica owns; start()/stop() or `async with`; `app` is the aiohttp application."""

    def __init__(self, settings: Settings, *, generation: GenerationSettings = GenerationSettings(),
                 supervisor: Supervisor | None = None) -> None:
        """generation: how the local chat model writes replies (length, sampling, repetition penalty).
        supervisor: runs the replica's background loops (`up` shares its own, so /readyz lists every role's)."""
        self.settings = settings
        self.key = settings.key_bytes()
        self.registry = Registry(settings.registry_dir)
        self.store = Store(settings.store_path)
        # Without the ml extra there is no local chat model: the remote backend, if configured, answers alone.
        local_chat_unavailable = LOCAL_CHAT.unavailable()
        self.holders = {
            "chat": ModelHolder("chat", self.registry, load=ChatModelLoader(generation, int8=settings.chat_int8),
                                unavailable=local_chat_unavailable, refusal=self._refusal("chat")),
            "image": ModelHolder("image", self.registry, load=_load_image, refusal=self._refusal("image")),
        }
        self.updates = ModelUpdates(settings, self.holders)
        self.events = EventProducer(settings)
        self.history = SessionHistory()
        # One redactor for every remote call: the chat's and the safety screening's see the same anonymization.
        redactor = RequestRedactor(ner_model=settings.ner_model or None) if settings.remote_url else None
        self.remote = remote_backend(settings, redactor) if redactor else None
        self.second_opinion = (second_opinion(settings, redactor)
                               if redactor and settings.safety_second_opinion else None)
        # Router metrics live in this replica's own registry: several replicas may share a process in tests.
        self.metrics_registry = CollectorRegistry()
        local = None if local_chat_unavailable is not None else LocalBackend(generate=self._generate_local)
        self.router = ChatRouter(settings=router_settings(settings), local=local, remote=self.remote,
                                 registry=self.metrics_registry)
        self.tokens = auth.parse_tokens(settings.api_tokens.reveal())
        self.risk = SessionRisk(sticky_s=settings.safety_sticky_minutes * 60)
        self.risk_follower = SessionRiskFollower(settings, self.risk)
        self.supervisor = supervisor or Supervisor()
        self._loops: list[Supervised] = []
        self.app = self._build_app()

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        start_serving_at_zero(safety.flag_labels())
        await self.store.start()
        await self.events.start()
        for remote in self._remotes():
            await remote.start()
        await self.updates.start()
        self._loops.append(self.supervisor.start(MODEL_UPDATES, self.updates.run))
        await self.risk_follower.start()
        self._loops.append(self.supervisor.start(SAFETY_FLAGS_FOLLOWER, self.risk_follower.run))

    async def stop(self) -> None:
        await self.risk_follower.stop()
        await self.updates.stop()
        for loop in self._loops:
            await loop.stop()
        self._loops = []
        for remote in self._remotes():
            await remote.stop()
        await self.events.stop()
        await self.store.stop()
        for holder in self.holders.values():
            holder.close()

    def _remotes(self) -> list[RemoteBackend]:
        return [r for r in (self.remote, self.second_opinion and self.second_opinion.remote) if r is not None]

    def _refusal(self, family: str):
        """A holder never loads a version that holds erased data unless an operator's --allow-erased chose it."""
        async def refusal(number: int) -> str | None:
            return await lineage.served_refusal(self.registry, self.store, family, number)
        return refusal

    async def __aenter__(self) -> "Serving":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=BODY_LIMITS["/api/events"], middlewares=[
            limits.json_errors, limits.concurrency_limit(self.settings.http_max_concurrent),
            limits.body_limits(BODY_LIMITS, default=DEFAULT_BODY_LIMIT)])
        app.add_routes([
            web.post("/api/events", self._guard("app", events_handler(self.events,
                                                                    max_event_bytes=self.settings.max_event_bytes))),
            web.post("/api/chat", self._guard("app", self.chat)),
            web.post("/api/safety/clear", self._guard("clinician", self.clear_safety)),
            web.get("/api/ai/training-status", self._guard("clinician", self.status, open_without_tokens=True)),
            web.post("/api/ai/trigger-training", self._guard("clinician", self.trigger_training)),
            web.post("/api/models/{family}/rollback", self._guard("admin", self.rollback)),
            web.post("/api/images/enhance", self._guard("app", self.image_enhance)),
            web.get("/api/images/search", self._guard("app", self.image_search)),
            web.get("/api/images/people", self._guard("app", self.image_people)),
            web.post("/api/images/identify", self._guard("app", self.image_identify)),
            web.get("/metrics", self._guard("admin", self.metrics, open_without_tokens=True)),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
        ])
        return app

    def _guard(self, role: str, handler, *, open_without_tokens: bool = False):
        async def guarded(request: web.Request) -> web.StreamResponse:
            auth.check(request, role, tokens=self.tokens, dev=self.settings.dev,
                       open_without_tokens=open_without_tokens)
            return await handler(request)

        return guarded

    # ---- chat ----------------------------------------------------------------------------------------------

    async def _generate_local(self, turns: list[str]) -> tuple[str, float, int]:
        served = self.holders["chat"].current  # taken once: a swap mid-request does not affect this request
        if served is None:
            raise BackendError("no local chat model is loaded yet")
        text, confidence = await served.model.reply(turns)
        return text, confidence, served.version

    async def chat(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        session_id, message, user_id = body.get("session_id"), body.get("message"), body.get("user_id")
        if not isinstance(session_id, str) or not session_id or not isinstance(message, str) or not message.strip():
            raise _bad_request("session_id and message are required non-empty strings")
        if user_id is not None and not isinstance(user_id, str):
            raise _bad_request("user_id must be a string")
        stream = streaming.wants_stream(request, body)
        session = pseudonym(self.key, "session", session_id)
        subject = pseudonym(self.key, "user", user_id) if user_id else session
        loop = asyncio.get_running_loop()
        started = loop.time()
        verdict = await self._assess(session, message)
        if verdict.crisis:
            # Never a model's words for someone at risk: a vetted text, and a flag for the clinicians.
            SAFETY_FLAGS.labels(category=verdict.category, layer=verdict.layer).inc()
            await self._flag(session, verdict)
            reply = {"reply": verdict.reply, "model_version": self.holders["chat"].version, "backend": "safety"}
            if stream:
                return await streaming.respond(request, served=None, turns=[], whole=lambda: _ready(reply))
        elif stream:  # only local mode streams tokens: hybrid may replace a whole unsure local reply (streaming.py)
            history = self.history.get(session)
            served = self.holders["chat"].current if self.router.mode_of(subject) == "local" else None
            return await streaming.respond(
                request, served=served, turns=[*history, message],
                whole=lambda: self._answer(subject, history, message),
                remember=lambda text: self.history.append(session, message, text))
        else:
            reply = await self._answer(subject, self.history.get(session), message)
            self.history.append(session, message, reply["reply"])
        REQUEST_SECONDS.labels(backend=reply["backend"]).observe(loop.time() - started)
        return web.json_response(reply)

    async def _assess(self, session: str, message: str) -> safety.SafetyVerdict:
        """The message's verdict, escalated by its session (sticky after a flag, or three uneasy turns in a row)
        and by the remote's second opinion on an uncertain one (it may only escalate)."""
        verdict = safety.assess(message)
        if not verdict.crisis and self.risk.flagged(session):
            return safety.SafetyVerdict(crisis=True, category="session", score=verdict.score, layer="session")
        if self.second_opinion is not None:
            verdict = await self.second_opinion.review(message, verdict)
        if verdict.crisis:
            return verdict
        if self.risk.combined(session, verdict.score, safety.crisis_threshold()):
            return safety.SafetyVerdict(crisis=True, category="session", score=verdict.score, layer="combined")
        return verdict

    async def _answer(self, subject: str, history: list[str], message: str) -> dict[str, Any]:
        """The router's whole reply as the chat response's fields; 503 when no backend could answer."""
        try:
            answer = await self.router.reply(subject=subject, history=history, message=message)
        except BackendError as exc:
            log.error("chat: no backend could answer (%s)", exc)
            error = {"error": "no chat backend available"}
            if (reason := self.holders["chat"].unavailable) is not None:
                error["reason"] = reason
            raise web.HTTPServiceUnavailable(text=orjson.dumps(error).decode(),
                                             content_type="application/json") from None
        return {"reply": answer.text, "model_version": answer.model_version, "backend": answer.backend}

    async def _flag(self, session: str, verdict: safety.SafetyVerdict) -> None:
        flag = {"schema": "safety.flag.v1", "event_id": new_event_id(), "ts": utc_now(), "session": session,
                "category": verdict.category, "score": round(verdict.score, 4), "layer": verdict.layer}
        self.risk.apply(flag)
        await self.events.send_raw(topics.SAFETY_FLAGS, orjson.dumps(flag), key=session.encode())

    async def clear_safety(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        session_id = body.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise _bad_request("session_id is a required non-empty string")
        session = pseudonym(self.key, "session", session_id)
        cleared = {"schema": "safety.cleared.v1", "event_id": new_event_id(), "ts": utc_now(), "session": session}
        self.risk.apply(cleared)
        await self.events.send_raw(topics.SAFETY_FLAGS, orjson.dumps(cleared), key=session.encode())
        return web.json_response({"cleared": True})

    # ---- training and models -------------------------------------------------------------------------------

    def degraded(self) -> list[str]:
        problems = []
        if NAMES_NOT_REMOVED._value.get():  # noqa: SLF001 - the gauge is the single source of this fact
            problems.append("anonymizer: no NER model, names are not being removed")
        for family, holder in self.holders.items():
            if holder.unavailable is not None:
                problems.append(f"{family}: {holder.unavailable}")
            elif holder.current is None:
                problems.append(f"{family}: no model served yet")
        return problems

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(await training_status(
            self.settings, self.store, self.registry, degraded=self.degraded(),
            answering={family: holder.version for family, holder in self.holders.items()}))

    async def trigger_training(self, request: web.Request) -> web.Response:
        body = await _json_body(request, optional=True)
        family = body.get("family", "chat")
        if family not in self.holders:
            raise _bad_request("family must be chat or image")
        request_event = {"schema": "training.request.v1", "event_id": new_event_id(), "ts": utc_now(),
                         "family": family, "from_scratch": bool(body.get("from_scratch", False))}
        await self.events.send_raw(topics.TRAINING_REQUESTS, orjson.dumps(request_event), key=family.encode())
        return web.json_response({"scheduled": True, "family": family}, status=202)

    async def rollback(self, request: web.Request) -> web.Response:
        family = request.match_info["family"]
        body = await _json_body(request)
        version = body.get("version")
        if family not in self.holders or not isinstance(version, int) or isinstance(version, bool):
            raise _bad_request("POST /api/models/{chat|image}/rollback with {\"version\": <int>, \"allow_erased\"?: <reason>}")
        try:
            override = (None if body.get("allow_erased") is None
                        else lineage.override_reason(body["allow_erased"], key=self.key))
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        erased = (await lineage.family_marks(self.registry, self.store, family)).get(version)
        try:  # in a thread: the lock may wait for the trainer's commit, and verifying hashes every file
            event = await asyncio.to_thread(self._rollback, family, version, erased, override)
        except RegistryError as exc:
            raise web.HTTPNotFound(text=orjson.dumps({"error": str(exc)}).decode(),
                                   content_type="application/json") from None
        except ErasedVersion as exc:
            raise web.HTTPConflict(text=orjson.dumps({"error": str(exc)}).decode(),
                                   content_type="application/json") from None
        await self.events.send_raw(topics.MODEL_UPDATED, orjson.dumps(event), key=family.encode())
        return web.json_response({"family": family, "served_version": version})

    def _rollback(self, family: str, version: int, erased: str | None, override: str | None) -> dict[str, Any]:
        with self.registry.writer_lock(wait=True):
            return rollback(self.registry, family, version, erased=erased, allow_erased=override)

    # ---- images --------------------------------------------------------------------------------------------

    async def _image_model(self, request: web.Request | None = None) -> tuple[ImageModel, int | None]:
        """The served image model, with erased owners' images hidden at once (the next run drops them).

        With a request: only the images of the owner it names (?user_id=); required when tokens are set, and
        without tokens an omitted owner means every owner (a private network).
        """
        served = self.holders["image"].current
        model, version = (ImageModel.empty(), None) if served is None else (served.model, served.version)
        if request is not None:
            owner = request.query.get("user_id", "")
            if owner.strip():
                model = model.only_owner(pseudonym(self.key, "user", owner))
            elif self.tokens:
                raise _bad_request("user_id is required: images answer for the owner a caller names")
        erased = await self.store.erased_owners() if served is not None else set()
        return (model.without_owners(erased) if erased else model), version

    async def image_enhance(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        caption, tags, embedding = body.get("caption"), body.get("tags"), body.get("embedding")
        if not caption and not tags and not embedding:  # an empty caption or list describes nothing either
            raise _bad_request("give at least one of caption, tags, embedding")
        if (caption is not None and not isinstance(caption, str)) or (
            tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags))) or (
            embedding is not None and not (isinstance(embedding, list)
                                           and all(isinstance(x, (int, float)) for x in embedding))):
            raise _bad_request("caption is a string, tags a list of strings, embedding a list of numbers")
        model, version = await self._image_model()
        try:
            result = model.enhance(caption=caption, tags=tags, embedding=embedding)
        except ValueError as exc:  # an embedding of another dimension than the served model's
            raise _bad_request(str(exc)) from None
        return web.json_response({**result, "model_version": version})

    async def image_search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        try:
            limit = max(1, min(int(request.query.get("limit", "20")), 200))
        except ValueError:
            raise _bad_request("limit must be an integer") from None
        model, _ = await self._image_model(request)
        return web.json_response(model.search(q, limit))

    async def image_people(self, request: web.Request) -> web.Response:
        model, _ = await self._image_model(request)
        return web.json_response({"people": model.people()})

    async def image_identify(self, request: web.Request) -> web.Response:
        """The named owner's person each face of one new image shows, or null; nothing is stored or learnt."""
        owner = request.query.get("user_id", "")
        if not owner.strip():
            raise _bad_request("user_id is required: people are the named owner's")
        faces = faces_to_identify(await _json_body(request))
        model, version = await self._image_model(request)
        try:
            found = model.identify(pseudonym(self.key, "user", owner), faces)
        except ValueError as exc:  # a face embedding of another dimension than the served people's
            raise _bad_request(str(exc)) from None
        return web.json_response({"people": found, "model_version": version})

    # ---- operations ----------------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY) + generate_latest(self.metrics_registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(self, request: web.Request) -> web.Response:
        chat = self.holders["chat"]
        # Without a local model to wait for, a replica is as ready as it gets: images, and the remote if any.
        ready = chat.current is not None or chat.unavailable is not None or self.remote is not None
        # A replica that no longer follows model.updated (or safety.flags) would answer from an old version (or
        # miss a flagged session): not ready. The other roles of the process are listed, not waited for.
        following = {loop.name: loop.up for loop in self._loops}
        ready = ready and bool(following) and all(following.values())
        body: dict[str, Any] = {"ready": ready, "degraded": self.degraded(),
                                "model_updates": following.get(MODEL_UPDATES, False),
                                "tasks": self.supervisor.health(),
                                "served": {f: h.version for f, h in self.holders.items()}}
        return web.json_response(body, status=200 if ready else 503)


def faces_to_identify(body: dict[str, Any]) -> list[list[float]]:
    """The face embeddings of POST /api/images/identify's body; 400 without face consent or for anything else."""
    faces, consent = body.get("faces"), body.get("consent")
    if not (isinstance(consent, dict) and consent.get("faces") is True):
        raise _bad_request("faces are matched only with consent: give \"consent\": {\"faces\": true}")
    if not (isinstance(faces, list) and faces and all(
            isinstance(face, list) and face and all(isinstance(x, (int, float)) for x in face) for face in faces)):
        raise _bad_request("faces is a non-empty list of face embeddings, each a list of numbers")
    return faces


async def _json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise _bad_request("the body is empty; this route needs a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _bad_request("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _bad_request("the body must be a JSON object")
    return body


async def _ready(value: dict[str, Any]) -> dict[str, Any]:
    return value


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=orjson.dumps({"error": message}).decode(), content_type="application/json")


def metrics_app(supervisor: Supervisor) -> web.Application:
    """GET /metrics and GET /healthz for processes that run roles without serving (LEARNSTREAM_METRICS_PORT).
    /healthz lists the supervisor's loops by state, and is 503 while one is restarting or has failed."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        down = supervisor.down()
        return web.json_response({"alive": not down, "down": down, "tasks": supervisor.health()},
                                 status=503 if down else 200)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz)])
    return app


async def run_http(app: web.Application, *, host: str, port: int) -> web.AppRunner:
    """Start serving an app over HTTP on the port; the caller cleans up the returned runner."""
    runner = web.AppRunner(app, access_log=None)  # access logs would carry session ids in URLs/bodies
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


__all__ = ["Serving", "metrics_app", "run_http"]
