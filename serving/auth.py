"""Roles from bearer tokens: LEARNSTREAM_API_TOKENS="clinician:tok1,app:tok2,admin:tok3" (several per role ok).

A presented token is compared with every configured one, without stopping at a match, by hmac.compare_digest
on SHA-256 digests (equal lengths, so not even a token's length leaks through timing).

Roles nest: app (chat, events, images for the owner it names) < clinician (+ trigger training, training
status, safety clear) < admin (+ rollback, /metrics). A token of a higher role passes every lower role's check.

Without configured tokens the seed apps keep working on a private network, as the design says: the app endpoints
are open, and clinician and admin endpoints answer 403 unless LEARNSTREAM_DEV=1. Tokens never appear in error
messages or logs. Error bodies are JSON: {"error": reason}.
"""

import hashlib
import hmac
from collections.abc import Mapping

import orjson
from aiohttp import web

# Each role includes the ones before it.
RANKS = {"app": 0, "clinician": 1, "admin": 2}
ROLES = frozenset(RANKS)


def parse_tokens(spec: str) -> dict[str, str]:
    """Parse "role:token,role:token" into {token: role}. Errors never quote the spec: it holds secrets."""
    tokens: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        role, separator, token = (part.strip() for part in entry.partition(":"))
        if not separator or role not in ROLES or not token:
            raise ValueError(f"API token entries must be role:token with a role among {sorted(ROLES)}")
        if tokens.setdefault(token, role) != role:
            raise ValueError("the same API token is configured for two roles")
    return tokens


def _bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def role_of(request_headers: Mapping[str, str], tokens: Mapping[str, str]) -> str | None:
    """The role of the request's bearer token, or None without a known one. Constant time in the token."""
    presented = _bearer_token(request_headers)
    if presented is None:
        return None
    presented_digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for token, role in tokens.items():  # no early exit: every configured token is compared
        if hmac.compare_digest(presented_digest, hashlib.sha256(token.encode()).digest()):
            found = role
    return found


def check(request: web.Request, role: str, *, tokens: Mapping[str, str], dev: bool,
          open_without_tokens: bool = False) -> str | None:
    """Admit the request to an endpoint for `role`: the caller's role, or None when the endpoint is open.

    Raises web.HTTPUnauthorized (no or unknown token) or web.HTTPForbidden (another role). Without tokens,
    app endpoints (and read-only ones marked open_without_tokens: training status, /metrics) are open; the
    others are open only in dev mode (LEARNSTREAM_DEV=1).
    """
    if role not in ROLES:
        raise ValueError(f"roles must be among {sorted(ROLES)}")
    if not tokens:
        if role == "app" or dev or open_without_tokens:
            return None
        raise web.HTTPForbidden(**_json_error("this endpoint needs LEARNSTREAM_API_TOKENS to be configured"))
    caller = role_of(request.headers, tokens)
    if caller is None:
        raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="learnstream"'},
                                   **_json_error("a bearer token is required"))
    if RANKS[caller] < RANKS[role]:
        raise web.HTTPForbidden(**_json_error(f"this endpoint needs the {role} role or above"))
    return caller


def _json_error(reason: str) -> dict[str, str]:
    return {"text": orjson.dumps({"error": reason}).decode(), "content_type": "application/json"}
