"""The prediction log kept in the store, for a gateway of several processes: feedback sent
to any of them joins the prediction whichever one served the request.

The request path only appends to a bounded buffer (no store round trip); `flush` writes the
buffer to the store in batches, a background task calls it every `flush_interval_s`, and a
join flushes first. A prediction is claimed in the store, atomically, by the first feedback
for it, from any process; a later one is a duplicate. Feedback can arrive before the process
that served the request has flushed it: ids the store does not know yet are asked for once
more after two flush intervals before they are reported unknown. What does not fit the
buffer while the store is unreachable is dropped and counted (`dropped`), never waited for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

import structlog

from gateway.guard.feedback import FeedbackItem, FeedbackResult, FeedbackSink, Label, score
from gateway.state import ShadowLabels, Store, StoredPrediction, StoreUnavailable

_log = structlog.get_logger("gateway.guard")


class SharedPredictions:
    """The prediction log over the store (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        sink: FeedbackSink,
        *,
        keep_s: float,
        max_entries: int,
        flush_interval_s: float = 0.1,
    ) -> None:
        self._store = store
        self._sink = sink
        self._keep_s = keep_s
        self._max_entries = max_entries
        self.flush_interval_s = flush_interval_s
        self._predictions: deque[tuple[str, StoredPrediction]] = deque()
        self._shadows: deque[tuple[str, ShadowLabels]] = deque()
        self._flush_lock = asyncio.Lock()
        self.dropped = 0
        """Predictions (and shadow labels) that did not fit the buffer."""

    # -- the request path ------------------------------------------------------------------

    def record(
        self,
        model: str,
        request_id: str,
        version: str,
        labels: Sequence[Label],
        *,
        now: float,
        variant: str | None = None,
    ) -> None:
        if len(self._predictions) >= self._max_entries:
            self.dropped += 1
            return
        self._predictions.append(
            (
                model,
                StoredPrediction(
                    request_id=request_id,
                    version=version,
                    variant=variant,
                    labels=tuple(map(str, labels)),
                    at=now,
                ),
            )
        )

    def record_shadow(
        self, model: str, request_id: str, version: str, labels: Sequence[Label]
    ) -> None:
        if len(self._shadows) >= self._max_entries:
            self.dropped += 1
            return
        self._shadows.append((model, ShadowLabels(request_id, version, tuple(map(str, labels)))))

    # -- the store -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the buffer to the store; what a failing store leaves stays buffered."""
        async with self._flush_lock:
            predictions, shadows = list(self._predictions), list(self._shadows)
            if not predictions and not shadows:
                return
            by_model: dict[str, list[StoredPrediction]] = {}
            for model, prediction in predictions:
                by_model.setdefault(model, []).append(prediction)
            labels: dict[str, list[ShadowLabels]] = {}
            for model, item in shadows:
                labels.setdefault(model, []).append(item)
            for model, batch in by_model.items():
                await self._store.add_predictions(
                    model, batch, keep_s=self._keep_s, max_entries=self._max_entries
                )
            for model, shadow_labels in labels.items():
                await self._store.add_shadow_labels(model, shadow_labels)
            for _ in predictions:
                self._predictions.popleft()
            for _ in shadows:
                self._shadows.popleft()

    async def flush_every(self) -> None:
        """Until cancelled: flush every `flush_interval_s` (failures are logged and retried)."""
        failing = False
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except StoreUnavailable as exc:
                if not failing:
                    _log.warning(
                        "predictions_not_written",
                        error=str(exc),
                        waiting=self.pending,
                        dropped=self.dropped,
                    )
                failing = True
            else:
                failing = False

    @property
    def pending(self) -> int:
        return len(self._predictions) + len(self._shadows)

    async def join(self, model: str, items: Sequence[FeedbackItem], now: float) -> FeedbackResult:
        """Join true labels to the predictions they name, wherever those were served."""
        await self.flush()
        claims = await self._store.claim_predictions(model, [item.id for item in items])
        unknown = [item.id for item in items if claims.get(item.id) == "unknown"]
        if unknown:  # another process may not have flushed it yet
            await asyncio.sleep(2 * self.flush_interval_s)
            claims |= await self._store.claim_predictions(model, unknown)
        result = FeedbackResult()
        seen: set[str] = set()
        for item in items:
            claim = claims.get(item.id, "unknown")
            if item.id in seen:
                claim = "duplicate"
            seen.add(item.id)
            if claim == "unknown":
                result.unknown.append(item.id)
            elif claim == "duplicate":
                result.duplicate.append(item.id)
            elif now - claim.at > self._keep_s:
                result.expired.append(item.id)
            else:
                score(
                    self._sink,
                    result,
                    model,
                    item,
                    claim.version,
                    claim.variant,
                    claim.labels,
                    claim.shadows,
                )
        return result
