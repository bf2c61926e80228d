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
from collections.abc import Iterator

import structlog

from gateway.observability.metrics import GatewayMetrics
from gateway.state import AgreementBatch, ComparisonRecord, Comparisons, Store
from gateway.state.store import count, records_in

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
        self._pending: deque[ComparisonRecord | AgreementBatch] = deque()
        self._held = 0  # records in `_pending`
        self._dropped = 0
        self._flush_lock = asyncio.Lock()

    def add(self, records: Comparisons) -> int:
        """Buffer `records` (an agreement batch counts as the records it holds) as far as
        there is room; return how many did not fit (dropped and counted)."""
        with self._lock:
            kept, held, lost = _fitting(records, self._capacity - self._held)
            self._pending.extend(kept)
            self._held += held
            self._dropped += lost
        if lost:
            self._metrics.count_shadow_records("buffer_full", lost)
        return lost

    @property
    def pending(self) -> int:
        with self._lock:
            return self._held

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
                self._held = 0
            written = 0
            for start, stop in _chunks(batch):
                chunk = batch[start:stop]
                try:
                    await self._store.add_comparisons(chunk)
                except Exception as exc:
                    self._requeue(batch[start:])
                    _log.error(
                        "shadow_records_not_written", error=str(exc), pending=count(batch[start:])
                    )
                    break
                chunk_records = count(chunk)
                written += chunk_records
                self._metrics.count_shadow_records("written", chunk_records)
            return written

    def _requeue(self, records: list[ComparisonRecord | AgreementBatch]) -> None:
        """Put unwritten records back in front, oldest first, as far as there is room."""
        with self._lock:
            kept, held, lost = _fitting(records, self._capacity - self._held)
            self._pending.extendleft(reversed(kept))
            self._held += held
            self._dropped += lost
        self._metrics.count_shadow_records("store_error", lost)


def _fitting(
    items: Comparisons, room: int
) -> tuple[list[ComparisonRecord | AgreementBatch], int, int]:
    """The items that fit `room` records, in order; the records they hold; the records of
    the items that did not fit."""
    kept: list[ComparisonRecord | AgreementBatch] = []
    held = lost = 0
    for item in items:
        size = records_in(item)
        if held + size <= room:
            kept.append(item)
            held += size
        else:
            lost += size
    return kept, held, lost


def _chunks(items: list[ComparisonRecord | AgreementBatch]) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive items holding about BATCH_SIZE records each."""
    start, size = 0, 0
    for index, item in enumerate(items):
        size += records_in(item)
        if size >= BATCH_SIZE:
            yield start, index + 1
            start, size = index + 1, 0
    if start < len(items):
        yield start, len(items)
