"""Posting a guard event to a webhook: JSON over HTTP(S), stdlib only, off the event loop."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from gateway.guard.errors import WebhookFailed

WebhookFn = Callable[[dict[str, Any]], Awaitable[None]]
"""Posts one event's payload; raising (or taking too long) only gets it logged."""


async def post_webhook(url: str, payload: Mapping[str, Any], timeout_s: float = 5.0) -> None:
    """POST `payload` as JSON to `url` (http or https) in a worker thread; WebhookFailed when
    it cannot connect, times out, or answers anything but 2xx."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise WebhookFailed(f"webhook URL {url!r} must be http:// or https://")
    body = msgspec.json.encode(payload)
    await asyncio.to_thread(_post, url, body, timeout_s)


def webhook_poster(url: str, timeout_s: float = 5.0) -> WebhookFn:
    """A WebhookFn for the monitor that posts to `url`."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise WebhookFailed(f"webhook URL {url!r} must be http:// or https://")

    async def post(payload: dict[str, Any]) -> None:
        await post_webhook(url, payload, timeout_s)

    return post


def _post(url: str, body: bytes, timeout_s: float) -> None:
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=body,
        method="POST",
        headers={"content-type": "application/json", "user-agent": "release-gateway"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"webhook {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise WebhookFailed(f"webhook {url} could not be posted: {reason}") from None
    if not 200 <= status < 300:
        raise WebhookFailed(f"webhook {url} answered {status}")
