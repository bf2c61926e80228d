"""The one table that maps domain errors to HTTP status codes and V2 error bodies."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from gateway import errors
from gateway.dataplane.codec import encode_json
from gateway.flags.errors import CohortExists, CohortNotFound, InvalidFlag, InvalidOperation
from gateway.guard.errors import (
    InvalidPolicy,
    OfflineGateRefused,
    RampInProgress,
    RampNotFound,
    RampStateConflict,
)
from gateway.observability.metrics import GatewayMetrics
from gateway.security.tokens import TokenConfigError
from gateway.state.errors import StoreUnavailable, VersionConflict

_log = structlog.get_logger("gateway.http")

# Most specific first: the first matching class decides.
STATUS_BY_ERROR: tuple[tuple[type[errors.GatewayError], int], ...] = (
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedMediaType, 415),
    (errors.InvalidRequest, 400),
    (errors.InvalidName, 400),
    (VersionConflict, 412),
    (OfflineGateRefused, 409),
    (RampInProgress, 409),
    (RampNotFound, 409),
    (RampStateConflict, 409),
    (InvalidPolicy, 400),
    (CohortNotFound, 404),
    (CohortExists, 409),
    (InvalidFlag, 400),
    (InvalidOperation, 400),
    (StoreUnavailable, 503),
    (TokenConfigError, 500),
    (errors.FlagNotFound, 404),
    (errors.ReleaseNotFound, 404),
    (errors.ModelNotFound, 404),
    (errors.VersionNotFound, 404),
    (errors.ModelNotReady, 503),
    (errors.InferenceTimeout, 504),
    (errors.Overloaded, 503),
    (errors.InferenceFailed, 502),
    (errors.ManifestError, 500),
)


def status_for(exc: errors.GatewayError) -> int:
    for error_class, status in STATUS_BY_ERROR:
        if isinstance(exc, error_class):
            return status
    return 500


def error_headers(exc: errors.GatewayError) -> dict[str, str]:
    """Headers an error's answer carries: when to retry an overloaded version."""
    if isinstance(exc, errors.Overloaded):
        return {"retry-after": str(exc.RETRY_AFTER_S)}
    return {}


def error_body(message: str) -> bytes:
    return encode_json({"error": message})


def error_response(status: int, message: str) -> Response[bytes]:
    return Response(content=error_body(message), status_code=status, media_type="application/json")


def body_too_large(max_body_bytes: int) -> str:
    return f"request body is larger than the {max_body_bytes} bytes allowed"


def gateway_failure(exc: errors.GatewayError, path: str, metrics: GatewayMetrics) -> int:
    """Count and log a domain error; the status it maps to."""
    status = status_for(exc)
    metrics.count_http_error(status)
    log = _log.error if status >= 500 else _log.info
    log("request_failed", path=path, status=status, error=str(exc))
    return status


def unexpected_failure(exc: Exception, path: str, metrics: GatewayMetrics) -> str:
    """Count and log a bug of ours with its traceback; the message the client gets."""
    metrics.count_http_error(500)
    _log.exception("unhandled_error", path=path, error_type=type(exc).__name__, exc_info=exc)
    return "internal error; the gateway logged the details"


def _count(request: Request[Any, Any, Any], status: int) -> None:
    request.app.state.metrics.count_http_error(status)


def handle_gateway_error(
    request: Request[Any, Any, Any], exc: errors.GatewayError
) -> Response[bytes]:
    status = gateway_failure(exc, request.url.path, request.app.state.metrics)
    response = error_response(status, str(exc))
    response.headers.update(error_headers(exc))
    return response


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (no route, wrong method, body over the limit) in the V2 shape."""
    status = exc.status_code
    _count(request, status)
    message = exc.detail
    if status == 413:
        message = body_too_large(request.app.state.max_body_bytes)
    elif status == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif status == 400 and exc.extra:
        message = f"{message}: {_problems(exc.extra)}"
    _log.info("request_failed", path=request.url.path, status=status, error=message)
    headers = getattr(exc, "headers", None)
    response = error_response(status, message)
    if headers:
        response.headers.update(headers)
    return response


def _problems(extra: dict[str, Any] | list[Any]) -> str:
    """Litestar's validation details (which parameter, what is wrong) as one line."""
    items = extra if isinstance(extra, list) else [extra]
    parts = []
    for item in items:
        if isinstance(item, dict):
            source = getattr(item.get("source"), "value", item.get("source"))
            key = item.get("key")
            where = f"{source} parameter {key!r}" if source and key else str(key or "body")
            parts.append(f"{where}: {item.get('message', '')}")
        else:
            parts.append(str(item))
    return "; ".join(parts)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A bug of ours: logged with its traceback, answered without internals."""
    return error_response(500, unexpected_failure(exc, request.url.path, request.app.state.metrics))


EXCEPTION_HANDLERS = {
    errors.GatewayError: handle_gateway_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
