"""The app's parts started in order and stopped in the reverse order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from gateway.interpreter import InterpreterTuning
from gateway.observability.access import AccessLog

_log = structlog.get_logger("gateway.lifecycle")

STOP_TIMEOUT_S = 10.0
"""How long one part may take to stop before the next is stopped anyway."""


class Part(Protocol):
    """Something the app starts at start-up and stops at shutdown."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class Lifecycle:
    """Starts `parts` in order, stops them in reverse: each stops before what it needs.

    A part's stop is bounded (`stop_timeout_s`): one that hangs (a network call that never
    returns) is cancelled and logged, so the process still exits and the parts after it
    still stop.
    """

    def __init__(
        self, parts: Sequence[Part | None], *, stop_timeout_s: float = STOP_TIMEOUT_S
    ) -> None:
        self._parts = [part for part in parts if part is not None]
        self._stop_timeout_s = stop_timeout_s

    async def start(self) -> None:
        for part in self._parts:
            await part.start()

    async def stop(self) -> None:
        for part in reversed(self._parts):
            stopping = asyncio.ensure_future(part.stop())
            # asyncio.wait, not wait_for: wait_for keeps waiting for the cancelled stop, and
            # a stop that swallows its cancellation never ends.
            done, _ = await asyncio.wait({stopping}, timeout=self._stop_timeout_s)
            if not done:
                stopping.cancel()
                _log.error(
                    "part_did_not_stop", part=type(part).__name__, timeout_s=self._stop_timeout_s
                )
            else:
                stopping.result()  # a part that failed to stop fails the shutdown, as before


class AccessLogFlusher:
    """Writes the access log's buffered lines every second, and the rest at stop."""

    def __init__(self, access_log: AccessLog) -> None:
        self._access_log = access_log
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._access_log.flush_every(1.0), name="access-log")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._access_log.flush()


class Tuned:
    """The interpreter tuned once everything else started (its heap frozen), restored first."""

    def __init__(self, tuning: InterpreterTuning, on_started: Callable[[], None]) -> None:
        self._tuning = tuning
        self._on_started = on_started

    async def start(self) -> None:
        self._tuning.apply()
        self._on_started()

    async def stop(self) -> None:
        self._tuning.restore()
