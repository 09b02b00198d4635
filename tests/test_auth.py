"""Bearer-token roles: parsing, constant-time lookup, 401/403 on the endpoints, the open no-token mode."""

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from serving import auth
from serving.auth import check, parse_tokens, role_of

TOKENS = parse_tokens("clinician:clin-1, clinician:clin-2, app:app-1, admin:admin-1")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_parse_tokens_maps_tokens_to_roles() -> None:
    assert TOKENS == {"clin-1": "clinician", "clin-2": "clinician", "app-1": "app", "admin-1": "admin"}
    assert parse_tokens("") == {} and parse_tokens(" , ") == {}
    assert parse_tokens("app:a:b") == {"a:b": "app"}  # a token may itself contain ':'


@pytest.mark.parametrize(
    "spec", ["patient:secret-tok", "secret-tok", "app:", "app:secret-tok,admin:secret-tok", ":secret-tok"]
)
def test_parse_tokens_rejects_bad_specs_without_quoting_them(spec: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_tokens(spec)
    assert "secret-tok" not in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "role"),
    [
        (bearer("clin-2"), "clinician"),
        ({"Authorization": "bearer   admin-1 "}, "admin"),
        (bearer("app-1"), "app"),
        (bearer("app-1x"), None),
        (bearer("app-"), None),
        (bearer(""), None),
        ({"Authorization": "Basic app-1"}, None),
        ({}, None),
    ],
)
def test_role_of(headers: dict[str, str], role: str | None) -> None:
    assert role_of(headers, TOKENS) == role


def test_role_of_compares_every_token_without_early_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def counting_compare(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", counting_compare)
    first_token = next(iter(TOKENS))
    assert role_of(bearer(first_token), TOKENS) == TOKENS[first_token]
    assert len(compared) == len(TOKENS)
    assert {len(a) for pair in compared for a in pair} == {32}  # digests: equal lengths whatever the token


def guarded(role: str, *, tokens: dict[str, str], dev: bool):
    """A handler behind auth.check, as serving/app.py wires its routes."""

    async def handler(request: web.Request) -> web.Response:
        caller = check(request, role, tokens=tokens, dev=dev)
        return web.json_response({"role": caller})

    return handler


async def client_for(*, tokens: dict[str, str], dev: bool = False) -> TestClient:
    app = web.Application()
    app.router.add_post("/api/chat", guarded("app", tokens=tokens, dev=dev))
    app.router.add_post("/api/ai/trigger-training", guarded("clinician", tokens=tokens, dev=dev))
    app.router.add_post("/api/models/{family}/rollback", guarded("admin", tokens=tokens, dev=dev))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_check_rejects_unknown_roles() -> None:
    with pytest.raises(ValueError):
        check(make_mocked_request("POST", "/"), "superuser", tokens=TOKENS, dev=False)


@pytest.fixture
async def with_tokens() -> AsyncIterator[TestClient]:
    client = await client_for(tokens=TOKENS)
    yield client
    await client.close()


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/api/chat", None, 401),
        ("/api/chat", "nope", 401),
        ("/api/chat", "clin-1", 200),  # roles nest: app < clinician < admin
        ("/api/chat", "admin-1", 200),
        ("/api/chat", "app-1", 200),
        ("/api/ai/trigger-training", None, 401),
        ("/api/ai/trigger-training", "app-1", 403),
        ("/api/ai/trigger-training", "admin-1", 200),
        ("/api/ai/trigger-training", "clin-2", 200),
        ("/api/models/chat/rollback", "clin-1", 403),
        ("/api/models/chat/rollback", "app-1", 403),
        ("/api/models/chat/rollback", "admin-1", 200),
    ],
)
async def test_with_tokens_each_endpoint_needs_its_role(
    with_tokens: TestClient, path: str, token: str | None, status: int
) -> None:
    response = await with_tokens.post(path, headers=bearer(token) if token else {})
    assert response.status == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if status < 400:
        assert (await response.json())["role"] == TOKENS[token]
    assert token is None or token not in await response.text()


@pytest.mark.parametrize(
    ("dev", "path", "status"),
    [
        (False, "/api/chat", 200),
        (False, "/api/ai/trigger-training", 403),
        (False, "/api/models/chat/rollback", 403),
        (True, "/api/ai/trigger-training", 200),
        (True, "/api/models/chat/rollback", 200),
    ],
)
async def test_without_tokens_only_app_endpoints_are_open_unless_dev(dev: bool, path: str, status: int) -> None:
    client = await client_for(tokens={}, dev=dev)
    try:
        response = await client.post(path, headers=bearer("anything"))
        assert response.status == status
        if status < 400:
            assert (await response.json())["role"] is None
    finally:
        await client.close()
