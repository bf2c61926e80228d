"""Bearer tokens from configuration, checked in constant time and never logged or echoed."""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import msgspec

from gateway.errors import GatewayError


class Role(enum.StrEnum):
    VIEWER = "viewer"
    RELEASE_MANAGER = "release-manager"


class TokenConfigError(GatewayError):
    """The token configuration cannot be used (the message never contains a token)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a valid token: a name for the audit log, and a role."""

    name: str
    role: Role

    def may_change(self) -> bool:
        return self.role is Role.RELEASE_MANAGER


class _TokenEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    role: Role
    token: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Looks a presented token up by comparing digests with every entry in constant time."""

    def __init__(self, entries: list[tuple[str, Role, str]]) -> None:
        self._entries = [(_digest(token), Principal(name, role)) for name, role, token in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str) -> Principal | None:
        digest = _digest(presented)
        found: Principal | None = None
        # Compare against every entry, so the time taken says nothing about which one matched.
        for known, principal in self._entries:
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def load_token_table(inline: str, file: Path | None) -> TokenTable:
    """Tokens from `name:role:token` entries (comma separated) and/or a JSON file of entries."""
    entries: list[tuple[str, Role, str]] = []
    for index, item in enumerate(part.strip() for part in inline.split(",") if part.strip()):
        name, _, rest = item.partition(":")
        role, _, token = rest.partition(":")
        entries.append(_entry(name, role, token, f"admin token entry #{index + 1}"))
    if file is not None:
        try:
            decoded = msgspec.json.decode(file.read_bytes(), type=list[_TokenEntry])
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise TokenConfigError(f"admin tokens file {file}: {_safe(exc)}") from None
        entries.extend(_entry(e.name, e.role, e.token, f"{file}: {e.name}") for e in decoded)
    return TokenTable(entries)


def _entry(name: str, role: str, token: str, where: str) -> tuple[str, Role, str]:
    if not name or not token:
        raise TokenConfigError(f"{where}: expected name:role:token")
    try:
        parsed = Role(role)
    except ValueError:
        raise TokenConfigError(
            f"{where}: role {role!r} is not one of {[r.value for r in Role]}"
        ) from None
    if len(token) < 16:
        raise TokenConfigError(f"{where}: a token needs at least 16 characters")
    return name, parsed, token


def _safe(exc: Exception) -> str:
    # msgspec errors quote paths and types, never values, so they cannot leak a token.
    return str(exc) if isinstance(exc, msgspec.ValidationError) else type(exc).__name__
