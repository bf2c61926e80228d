"""Audit events that could not reach the store wait here, bounded, and go when it is back.

An event that writes no flag (a rejected flag file, say) happens whether or not the store
answers; while it does not, the event waits in memory with its own time, and is written, in
order, once the store answers again. Past `capacity` waiting events, the oldest are dropped,
counted and logged: never silently lost, never waited for.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from gateway.state import Store, StoreUnavailable

_log = structlog.get_logger("gateway.control")


class AuditOutbox:
    """The audit events of this process on their way to the store."""

    def __init__(
        self,
        store: Store,
        *,
        capacity: int = 1000,
        on_drop: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._capacity = capacity
        self._on_drop = on_drop
        self._clock = clock
        self._waiting: deque[dict[str, Any]] = deque()
        self.dropped = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def append(self, **entry: Any) -> None:
        """Write the event now, or (the store unreachable) keep it for `flush`."""
        entry.setdefault("at", self._clock())
        self._waiting.append(entry)
        if len(self._waiting) > self._capacity:
            self._waiting.popleft()
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            _log.error("audit_event_dropped", waiting=self._capacity, dropped=self.dropped)
        try:
            await self.flush()
        except StoreUnavailable:
            _log.warning("audit_event_waiting", waiting=len(self._waiting))

    async def flush(self) -> int:
        """Write the waiting events, oldest first; StoreUnavailable leaves the rest waiting."""
        written = 0
        while self._waiting:
            await self._store.append_audit(**self._waiting[0])
            self._waiting.popleft()
            written += 1
        return written
