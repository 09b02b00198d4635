"""Keyed pseudonyms: HMAC-SHA256 of (kind, value) under the deployment's key, never an unkeyed hash.

Stable for a key, so a user's samples stay linkable for training and erasure; unlinkable to the raw id without
the key. The anonymizer and serving (A/B arms, safety flags) use the same function, so they agree.
"""

import hashlib
import hmac


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """kind: "user" or "session"; the prefix letter says which ("u_…", "s_…")."""
    mac = hmac.new(key, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind[0]}_{mac[:24]}"
