"""V2 infer straight from ASGI: the hottest endpoint skips Litestar's per-request pipeline.

Litestar's HTTP handler pipeline (Request object, kwargs and dependency parsing, Response
object and header encoding) costs about 40 µs per request, more than the model itself
(`bench/README.md`). Its raw `@asgi` handlers would avoid that, but in Litestar 2.25 an
`@asgi` route with path parameters fails for HTTP requests, and a mount at `/v2/models`
would swallow the metadata endpoints under it. So this thin layer wraps the app's ASGI
handler (where Litestar's own plugins wrap it too), answers `POST /v2/models/{model}/infer`
and `POST /v2/models/{model}/versions/{version}/infer` itself, and passes everything else
on. The answer comes from `answer_infer`, the same function the Litestar handlers (which
document these endpoints in the OpenAPI schema) call, and errors map through the same table.
"""

from __future__ import annotations

import re
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.http.errors import (
    body_too_large,
    error_body,
    error_headers,
    gateway_failure,
    unexpected_failure,
)
from gateway.http.inference import answer_infer
from gateway.observability.metrics import GatewayMetrics
from gateway.serving import Serving

_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_JSON = b"application/json"


class _BodyTooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


class InferenceFastPath:
    """An ASGI layer that serves V2 infer requests and hands every other request to `app`."""

    def __init__(
        self, app: ASGIApp, serving: Serving, metrics: GatewayMetrics, max_body_bytes: int
    ) -> None:
        self._app = app
        self._serving = serving
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            _INFER_PATH.fullmatch(scope["path"])
            if scope["type"] == ScopeType.HTTP and scope["method"] == "POST"
            else None
        )
        if match is None:
            await self._app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        path = scope["path"]
        try:
            body = await self._read_body(receive, headers.get("content-length"))
            reply = await answer_infer(self._serving, match[1], match[2], body, headers)
        except _Disconnected:
            return
        except _BodyTooLarge:
            self._metrics.count_http_error(413)
            await _send(send, 413, _JSON, error_body(body_too_large(self._max_body_bytes)))
        except GatewayError as exc:
            status = gateway_failure(exc, path, self._metrics)
            extra = [(name.encode(), value.encode()) for name, value in error_headers(exc).items()]
            await _send(send, status, _JSON, error_body(str(exc)), extra)
        except Exception as exc:
            await _send(send, 500, _JSON, error_body(unexpected_failure(exc, path, self._metrics)))
        else:
            extra = [(name.encode(), value.encode()) for name, value in reply.headers.items()]
            await _send(send, 200, reply.media_type.encode(), reply.body, extra)

    async def _read_body(self, receive: Receive, declared_length: str | None) -> bytes:
        if (
            declared_length is not None
            and declared_length.isdigit()
            and int(declared_length) > self._max_body_bytes
        ):
            raise _BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Any = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(
    send: Send,
    status: int,
    media_type: bytes,
    body: bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
