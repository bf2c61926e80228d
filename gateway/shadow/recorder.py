"""Comparison records wait in a bounded buffer and reach the store in batches.

`add` is called from shadow worker threads and the event loop; it never blocks on I/O and
never grows the buffer past its capacity (a record that does not fit is dropped and counted).
`flush` takes everything pending and writes it in batches; when the store fails, the records
go back to the front of the buffer, as far as it has room, for the next flush.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence

import structlog

from gateway.observability.metrics import GatewayMetrics
from gateway.state import ComparisonRecord, Store

_log = structlog.get_logger("gateway.shadow")

BATCH_SIZE = 500


class ComparisonRecorder:
    """The bounded buffer between shadow runs and the store."""

    def __init__(self, store: Store, metrics: GatewayMetrics, *, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the record buffer needs room for at least one record")
        self._store = store
        self._metrics = metrics
        self._capacity = capacity
        self._lock = threading.Lock()
        self._pending: deque[ComparisonRecord] = deque()
        self._dropped = 0
        self._flush_lock = asyncio.Lock()

    def add(self, records: Sequence[ComparisonRecord]) -> int:
        """Buffer `records` as far as there is room; return how many did not fit (dropped
        and counted)."""
        with self._lock:
            room = max(0, self._capacity - len(self._pending))
            self._pending.extend(records[:room])
            lost = max(0, len(records) - room)
            self._dropped += lost
        if lost:
            self._metrics.count_shadow_records("buffer_full", lost)
        return lost

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def take_dropped(self) -> int:
        """Records dropped for a full buffer (or a failing store) since the last call."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped

    async def flush(self) -> int:
        """Write every pending record in batches; return how many were written."""
        async with self._flush_lock:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
            written = 0
            for start in range(0, len(batch), BATCH_SIZE):
                chunk = batch[start : start + BATCH_SIZE]
                try:
                    await self._store.add_comparisons(chunk)
                except Exception as exc:
                    self._requeue(batch[start:])
                    _log.error(
                        "shadow_records_not_written", error=str(exc), pending=len(batch) - start
                    )
                    break
                written += len(chunk)
                self._metrics.count_shadow_records("written", len(chunk))
            return written

    def _requeue(self, records: list[ComparisonRecord]) -> None:
        """Put unwritten records back in front, oldest first, as far as there is room."""
        with self._lock:
            room = max(0, self._capacity - len(self._pending))
            kept = records[:room]
            self._pending.extendleft(reversed(kept))
            lost = len(records) - len(kept)
            self._dropped += lost
        self._metrics.count_shadow_records("store_error", lost)
