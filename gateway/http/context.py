"""The evaluation context of a request: its targeting key and attributes (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.errors import InvalidRequest

Attribute = str | int | float | bool
CONTEXT_HEADER_PREFIX = "x-ctx-"
MAX_ATTRIBUTES = 32


def targeting_key(headers: Mapping[str, str], parameters: Mapping[str, Any] | None) -> str | None:
    """`x-targeting-key`, else `parameters.targeting_key`; None when the request names none."""
    key = headers.get("x-targeting-key")
    if key:
        return key
    if parameters:
        value = parameters.get("targeting_key")
        if value is not None:
            if not isinstance(value, str) or not value:
                raise InvalidRequest("parameters.targeting_key must be a non-empty string")
            return value
    return None


def attributes(
    header_items: Iterable[tuple[str, str]], parameters: Mapping[str, Any] | None
) -> dict[str, Attribute]:
    """Attributes from `parameters.context` and `x-ctx-<name>` headers (headers win)."""
    found: dict[str, Attribute] = {}
    context = parameters.get("context") if parameters else None
    if context is not None:
        if not isinstance(context, dict):
            raise InvalidRequest("parameters.context must be an object of attributes")
        for name, value in context.items():
            if not isinstance(value, str | int | float | bool):
                raise InvalidRequest(
                    f"parameters.context.{name} must be a string, number or boolean"
                )
            found[name] = value
    for name, value in header_items:
        if name.startswith(CONTEXT_HEADER_PREFIX):
            found[name[len(CONTEXT_HEADER_PREFIX) :]] = value
    if len(found) > MAX_ATTRIBUTES:
        raise InvalidRequest(f"at most {MAX_ATTRIBUTES} context attributes per request")
    return found
