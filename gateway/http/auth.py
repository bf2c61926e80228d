"""Litestar guards that admit admin callers by bearer token and role."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from gateway.security import Principal, TokenTable


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller named by a valid bearer token, or 401."""
    table: TokenTable = connection.app.state.tokens
    if len(table) == 0:
        raise NotAuthorizedException(
            "admin is disabled: no admin token is configured (GATEWAY_ADMIN_TOKENS)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(
            "missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = table.authenticate(token.strip())
    if principal is None:
        raise NotAuthorizedException(
            "invalid bearer token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return principal


def viewer_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Any valid token may read."""
    principal_of(connection)


def release_manager_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Only a release-manager token may change releases."""
    principal = principal_of(connection)
    if not principal.may_change():
        raise PermissionDeniedException(
            f"{principal.name!r} has the role {principal.role.value!r}; "
            "changes need a release-manager token"
        )
