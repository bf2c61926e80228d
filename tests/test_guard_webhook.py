"""Posting guard events to a webhook over real HTTP (a local server in a thread).

Async tests run on anyio's pytest plugin (`@pytest.mark.anyio`, asyncio backend).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway.guard.errors import WebhookFailed
from gateway.guard.webhook import post_webhook, webhook_poster


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any], list[int]]]:
    """A local HTTP server that keeps the JSON bodies posted to it and answers with the
    status at the head of `statuses` (200 once they run out)."""
    bodies: list[Any] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies, statuses
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_post_webhook_posts_json_and_reports_failures(
    receiver: tuple[str, list[Any], list[int]],
) -> None:
    """The payload arrives as JSON; a 5xx answer, a closed port and a non-HTTP URL raise
    WebhookFailed."""
    url, bodies, statuses = receiver
    await post_webhook(url, {"event": "guard.rollback", "model": "digits"})
    await webhook_poster(url)({"event": "ramp.advance"})
    assert bodies == [{"event": "guard.rollback", "model": "digits"}, {"event": "ramp.advance"}]
    statuses.append(503)
    with pytest.raises(WebhookFailed, match="503"):
        await post_webhook(url, {"event": "x"})
    with pytest.raises(WebhookFailed, match="could not be posted"):
        await post_webhook("http://127.0.0.1:9/hook", {}, timeout_s=1.0)
    with pytest.raises(WebhookFailed, match="http"):
        await post_webhook("file:///etc/passwd", {})
