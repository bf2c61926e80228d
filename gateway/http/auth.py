"""Litestar guards that admit admin callers by bearer token, or by the dashboard's session
cookie (with its CSRF token for changes), and role."""

from __future__ import annotations

import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from gateway.security import Principal, TokenTable
from gateway.ui.session import (
    CSRF_HEADER,
    SESSION_COOKIE,
    UNSAFE_METHODS,
    csrf_matches,
    open_session,
)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The caller named by a valid bearer token or dashboard session, or 401. A bearer token
    wins over a cookie; a change made with the cookie needs the session's CSRF token (403)."""
    table: TokenTable = connection.app.state.tokens
    if len(table) == 0:
        raise NotAuthorizedException(
            "admin is disabled: no admin token is configured (GATEWAY_ADMIN_TOKENS)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cookie = connection.cookies.get(SESSION_COOKIE)
    if "authorization" not in connection.headers and cookie is not None:
        return _session_principal(connection, table, cookie)
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


def _session_principal(
    connection: ASGIConnection[Any, Any, Any, Any], table: TokenTable, cookie: str
) -> Principal:
    session = open_session(cookie, table, time.time())
    if session is None:
        raise NotAuthorizedException(
            "the dashboard session has expired or is invalid: log in again at /ui/login",
            headers={"WWW-Authenticate": "Bearer"},
        )
    method = connection.scope.get("method", "GET")
    if method in UNSAFE_METHODS and not csrf_matches(session, connection.headers.get(CSRF_HEADER)):
        raise PermissionDeniedException(
            f"missing or invalid CSRF token: a change made with the dashboard's session cookie "
            f"needs its {CSRF_HEADER} header"
        )
    return session.principal


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
