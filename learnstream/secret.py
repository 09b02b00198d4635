"""Secret: a string setting (pseudonym key, SASL password, API keys, tokens) that never prints itself.

repr() and str() say only that a value is set, so a Settings in a log line, a traceback or an error message
carries no secret. Code that needs the value asks for it by name: ``secret.reveal()``.
"""

from __future__ import annotations

import hmac


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret wraps a string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self):  # pickling would write the value where nobody expects a secret
        raise TypeError("a Secret is not pickled; pass reveal() explicitly where a child needs it")


def reveal(value: Secret | str | None) -> str | None:
    """The plain value of a secret setting (None stays None)."""
    return value.reveal() if isinstance(value, Secret) else value


__all__ = ["Secret", "reveal"]
