"""A small HTTP client for the admin API, with exit codes that scripts can trust."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1  # the gateway refused the request: invalid change, conflict, not found
EXIT_USAGE = 2
EXIT_AUTH = 3  # no, invalid or insufficient token
EXIT_UNAVAILABLE = 4  # the gateway could not be reached or failed

DEFAULT_TOKEN_FILE = Path("var/admin-token")


class CommandError(Exception):
    """Ends a command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


def resolve_token(token_file: str | None) -> str | None:
    """The token from $GATEWAY_TOKEN, else from --token-file, else from the local token file."""
    token = os.environ.get("GATEWAY_TOKEN")
    if token:
        return token.strip()
    path = Path(token_file or os.environ.get("GATEWAY_TOKEN_FILE") or DEFAULT_TOKEN_FILE)
    if path.is_file():
        return path.read_text().strip()
    return None


class AdminClient:
    def __init__(self, url: str, token: str | None, timeout_s: float = 10.0) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._timeout_s = timeout_s

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send one request; raise CommandError with the gateway's own error for any non-2xx."""
        url = self._url + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - URL is ours
        request.add_header("accept", "application/json")
        if data is not None:
            request.add_header("content-type", "application/json")
        if self._token:
            request.add_header("authorization", f"Bearer {self._token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                return Reply(response.status, _json(response.read()), dict(response.headers))
        except urllib.error.HTTPError as exc:
            message = _error_message(exc.read()) or exc.reason
            code = EXIT_AUTH if exc.code in {401, 403} else EXIT_REFUSED
            if exc.code >= 500:
                code = EXIT_UNAVAILABLE
            raise CommandError(f"{exc.code}: {message}", code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CommandError(
                f"cannot reach the gateway at {self._url}: {exc}", EXIT_UNAVAILABLE
            ) from None


def _json(raw: bytes) -> Any:
    return json.loads(raw) if raw else None


def _error_message(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")[:500]
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)
