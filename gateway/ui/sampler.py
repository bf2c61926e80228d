"""The task that samples every served model's live figures into the dashboard's history.

The one place that reads the guard for the charts: the running totals per version from the
guard's live stats (with their latency histograms, so that a chart shows each interval's
p50/p99 rather than a figure diluted by everything since the process started), and the error
test and last decision from `GuardService.status`, read as JSON so that fields it gains do
not matter. It runs on the event loop: a look is a few hundred integer copies per model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
import structlog

from gateway.control.guarding import GuardService
from gateway.guard.stats import VersionStats
from gateway.ui.history import GuardPoint, Reading, ReleaseHistory

_log = structlog.get_logger("gateway.ui")
Clock = Callable[[], float]


def reading_of(stats: VersionStats) -> Reading:
    latency = stats.latency
    return Reading(
        requests=stats.requests,
        errors=stats.errors,
        fallbacks=stats.fallbacks,
        feedback_total=stats.accuracy.total,
        feedback_correct=stats.accuracy.correct,
        latency_counts=tuple(latency.counts),
        latency_min_s=latency.min_s,
        latency_max_s=latency.max_s,
    )


def guard_point(status: Mapping[str, Any]) -> tuple[int | None, GuardPoint | None]:
    """The flag version in force and the guard's view, from `GuardService.status` as JSON."""
    window = status.get("window") or {}
    decisions = status.get("decisions") or []
    test = window.get("error_test") or {}
    if not window and not decisions:
        return None, None
    flag_version = window.get("flag_version")
    return flag_version if isinstance(flag_version, int) else None, GuardPoint(
        decision=decisions[0].get("kind") if decisions else None,
        statistic=_number(test.get("statistic")),
        threshold=_number(test.get("threshold")),
        candidate_requests=_count((window.get("candidate") or {}).get("requests")),
        baseline_requests=_count((window.get("baseline") or {}).get("requests")),
    )


class HistorySampler:
    """Every `history.interval_s`, one reading of each model `models()` names."""

    def __init__(
        self,
        guard: GuardService,
        models: Callable[[], Iterable[str]],
        history: ReleaseHistory,
        clock: Clock = time.time,
    ) -> None:
        self._guard = guard
        self._models = models
        self._history = history
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        now = self._clock()
        models = set(self._models())
        for model in sorted(models):
            status = msgspec.to_builtins(self._guard.status(model))
            flag_version, guard = guard_point(status)
            self._history.record(
                model,
                now,
                {v: reading_of(s) for v, s in self._guard.live.served(model).items()},
                {v: reading_of(s) for v, s in self._guard.live.shadowed(model).items()},
                flag_version=flag_version,
                guard=guard,
            )
        self._history.forget_except(models)

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a bad look must not end the charts for good
                _log.exception("ui_history_sample_failed")
            await asyncio.sleep(self._history.interval_s)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ui-history")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
