"""The per-request log line: cheap, and sampled by configuration (errors are logged elsewhere).

In JSON mode a served request costs one tuple appended to a list. The lines are built and
encoded in batches (msgspec's `encode_lines`, one call per batch) when enough are waiting,
on a timer, and at shutdown, so a busy server pays neither structlog's processor chain nor a
write system call per request. A line has the shape of the gateway's other JSON events. In
console mode (a person at a terminal) it goes through structlog like every other event.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import BinaryIO

import msgspec
import structlog

FLUSH_LINES = 256


class RequestServed(msgspec.Struct, frozen=True):
    event: str
    level: str
    timestamp: str
    request_id: str
    model: str
    version: str
    variant: str
    reason: str
    latency_ms: float


class AccessLog:
    """Logs a sampled share of successful requests as `request_served` events."""

    def __init__(
        self,
        sample_rate: float,
        sink: Callable[[], BinaryIO] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`sink` gives the binary stream for JSON lines when flushing (looked up each time,
        so a replaced stdout is honoured); without one, lines go through structlog."""
        self._sample_rate = sample_rate
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not secrets
        self._sink = sink
        self._pending: list[tuple[float, str, str, str, str, str, float]] = []
        self._encoder = msgspec.json.Encoder()
        self._log = structlog.get_logger("gateway.access")
        self._second = -1
        self._second_text = ""

    def served(
        self,
        *,
        request_id: str,
        model: str,
        version: str,
        latency_s: float,
        variant: str = "",
        reason: str = "",
    ) -> None:
        if self._sample_rate <= 0.0 or (
            self._sample_rate < 1.0 and self._random() >= self._sample_rate
        ):
            return
        if self._sink is None:
            self._log.info(
                "request_served",
                request_id=request_id,
                model=model,
                version=version,
                variant=variant,
                reason=reason,
                latency_ms=round(latency_s * 1000, 3),
            )
            return
        pending = self._pending
        pending.append((time.time(), request_id, model, version, variant, reason, latency_s))
        if len(pending) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write out the waiting lines (the app calls this on a timer and at shutdown)."""
        if self._sink is None or not self._pending:
            return
        pending, self._pending = self._pending, []
        lines = [
            RequestServed(
                "request_served",
                "info",
                self._timestamp(at),
                request_id,
                model,
                version,
                variant,
                reason,
                round(latency_s * 1000, 3),
            )
            for at, request_id, model, version, variant, reason, latency_s in pending
        ]
        stream = self._sink()
        stream.write(self._encoder.encode_lines(lines))
        stream.flush()

    def _timestamp(self, now: float) -> str:
        """ISO 8601 in UTC with microseconds, as structlog's TimeStamper writes it; the
        date and time up to the second are formatted once per second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1e6):06d}Z"

    async def flush_every(self, interval_s: float) -> None:
        """Flush on a timer, so a quiet server's lines do not wait for the buffer to fill."""
        while True:
            await asyncio.sleep(interval_s)
            self.flush()
