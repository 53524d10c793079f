"""API keys and the users each may touch, for ``memagent serve`` and ``memagent mcp``.

A keys file (or ``MEMAGENT_API_KEYS``) is a JSON object from key to the users it may touch::

    {"sk-ana-4f1c...": ["ana"], "sk-family-9d2e...": ["ana", "bo"], "sk-admin-77a0...": "*"}

``"*"`` is an admin key: every user. The old single ``--api-key`` (``MEMAGENT_API_KEY``) is an admin
key. With no key at all the server is open to whoever reaches its port (loopback by default).

A key is looked up against every configured key with a constant-time comparison, so response
timing says nothing about how much of a guess was right. Errors name a key by its first four
characters only: they end up in logs.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from memagent.errors import InputError
from memagent.schema import validate_id, validate_text

ADMIN = "*"
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # hosts only this machine reaches: no key needed to be private


@dataclass(frozen=True)
class Grant:
    """What one caller may touch: the users named, or every user when ``admin``."""

    users: frozenset[str] = frozenset()
    admin: bool = False

    def allows(self, user_id: str) -> bool:
        return self.admin or user_id in self.users

    def check(self, user_id: object, field: str = "user_id") -> str:
        """``user_id`` when this caller may touch it (``Forbidden`` otherwise); an invalid id is ``InputError``."""
        user = validate_id(user_id, field)
        if not self.allows(user):
            raise Forbidden(field, user)
        return user

    @property
    def only_user(self) -> str | None:
        """The one user a non-admin key names, or None (admin, or several users)."""
        return next(iter(self.users)) if not self.admin and len(self.users) == 1 else None


OPEN = Grant(admin=True)  # no keys configured: the server trusts whoever reaches it


class Forbidden(Exception):
    """The caller's key may not touch ``user_id`` (HTTP 403)."""

    def __init__(self, field: str, user_id: str) -> None:
        self.field, self.user_id = field, user_id
        super().__init__(f"{field}: this API key may not touch the memories of {user_id!r}")


class Unauthorized(Exception):
    """The request carries no API key, or one the server does not know (HTTP 401)."""

    def __init__(self) -> None:
        super().__init__("missing or incorrect API key: send 'Authorization: Bearer <key>'")


class KeyRing:
    """API keys and their grants. ``grant(key)`` is the caller's ``Grant``, or None for an unknown key."""

    def __init__(self, grants: Mapping[str, Grant]) -> None:
        self.grants = dict(grants)

    def __len__(self) -> int:
        return len(self.grants)

    def grant(self, key: str) -> Grant | None:
        found = None
        for known, grant in self.grants.items():  # every key is compared: timing does not tell which matched
            if hmac.compare_digest(known.encode(), key.encode()):
                found = grant
        return found

    def with_admin(self, key: str) -> KeyRing:
        """These keys and ``key`` as an admin key (the old single ``--api-key``)."""
        return KeyRing({**self.grants, _checked_key(key, "api_key"): OPEN})


def load_keys(
    *, file: str | Path | None = None, env_text: str | None = None, admin_key: str | None = None
) -> KeyRing | None:
    """Every configured key: a keys file, ``MEMAGENT_API_KEYS`` text, and the old single admin key.
    None when none is configured (an open server)."""
    grants: dict[str, Grant] = {}
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            raise InputError("keys_file", f"cannot read {str(file)!r}: {exc}") from None
        grants.update(parse_keys(text, f"keys file {str(file)!r}"))
    if env_text:
        grants.update(parse_keys(env_text, "MEMAGENT_API_KEYS"))
    ring = KeyRing(grants)
    if admin_key:
        ring = ring.with_admin(admin_key)
    return ring if len(ring) else None


def parse_keys(text: str, source: str) -> dict[str, Grant]:
    """Keys from JSON text (see the module docstring); ``source`` names where it came from in errors."""
    try:
        data = json.loads(text, object_pairs_hook=_no_repeats)
    except ValueError as exc:
        raise InputError(source, f"is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(
            source, f'must be a JSON object {{"<key>": ["<user>", ...] or "*"}}, got {type(data).__name__}'
        )
    return {_checked_key(key, source): _grant(users, f"{source}[{_masked(key)}]") for key, users in data.items()}


def _grant(users: object, where: str) -> Grant:
    if users == ADMIN:
        return OPEN
    if not isinstance(users, list) or not users:
        raise InputError(where, f'must be "*" (every user) or a non-empty list of user ids, got {users!r:.80}')
    return Grant(users=frozenset(validate_id(user, f"{where}[{i}]") for i, user in enumerate(users)))


def _checked_key(key: str, where: str) -> str:
    # a key with whitespace cannot travel in an "Authorization: Bearer <key>" header unchanged
    if not key or any(c.isspace() for c in key):
        raise InputError(where, f"key {_masked(key)!r} must be a non-empty string without whitespace")
    return validate_text(key, where)


def _masked(key: str) -> str:
    return f"{key[:4]}..." if len(key) > 4 else "..."


def _no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object that names a key twice is refused: json.loads would silently keep the last grant."""
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"key {_masked(key)!r} appears twice")
        seen[key] = value
    return seen
