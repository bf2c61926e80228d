"""Model and version names: safe path segments, nothing that can climb out of the repository."""

from __future__ import annotations

import re

from gateway.errors import InvalidName

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def validate_name(kind: str, name: str) -> str:
    """Return `name` when it is a safe single path segment, else raise InvalidName."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"invalid {kind} name {name!r}: use 1-63 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, and no '..'"
        )
    return name
