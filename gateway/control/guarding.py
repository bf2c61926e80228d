"""The guard wired to the control plane: windows follow the flags in force, decisions act
through `ReleaseControl` as audited flag writes, and ramps start behind the offline gate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from gateway.control.guard_status import release_status
from gateway.control.pooling import WindowPool
from gateway.control.releases import InForce, ReleaseControl
from gateway.dataplane import Prediction
from gateway.guard import (
    ErrorKind,
    FeedbackItem,
    FeedbackResult,
    GuardMonitor,
    GuardStats,
    GuardTarget,
    PredictionLog,
    ramp_state,
    webhook_poster,
)
from gateway.guard import ramp as ramps
from gateway.guard.shared_feedback import SharedPredictions
from gateway.guard.window import ReleaseWindow
from gateway.observability.metrics import GatewayMetrics
from gateway.shadow.service import ShadowOutcome
from gateway.shadow.summary import LiveAccuracy
from gateway.state import Store, StoreUnavailable

_log = structlog.get_logger("gateway.guard")
Clock = Callable[[], float]


class GuardService:
    """Owns the live stats, the prediction log and the monitor of one process."""

    def __init__(
        self,
        control: ReleaseControl,
        metrics: GatewayMetrics,
        *,
        interval_s: float = 1.0,
        webhook_url: str = "",
        webhook_timeout_s: float = 5.0,
        feedback_ttl_s: float = 24 * 3600.0,
        feedback_max_entries: int = 100_000,
        shared: Store | None = None,
        clock: Clock = time.time,
    ) -> None:
        """`shared`: the store this gateway's processes pool through (several workers or
        replicas): the guard then judges every process's traffic, and feedback joins
        predictions whichever process served them."""
        self._control = control
        self._clock = clock
        self.live = GuardStats()
        self.predictions: PredictionLog | SharedPredictions
        if shared is None:
            self.predictions = PredictionLog(
                max_entries=feedback_max_entries, ttl_s=feedback_ttl_s, sink=self.live
            )
            self._pool: WindowPool | None = None
        else:
            self.predictions = SharedPredictions(
                shared, self.live, keep_s=feedback_ttl_s, max_entries=feedback_max_entries
            )
            self._pool = WindowPool(shared, self.live)
        self._pooled: dict[str, tuple[ReleaseWindow, int]] = {}
        self._pool_problem: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.monitor = GuardMonitor(
            self._targets,
            rollback=self._rollback,
            advance=self._advance,
            webhook=webhook_poster(webhook_url, webhook_timeout_s) if webhook_url else None,
            metrics=metrics,
            interval_s=interval_s,
            webhook_timeout_s=webhook_timeout_s,
            clock=clock,
        )
        self._in_force: dict[str, InForce] = {}
        control.on_reload(self.sync)

    # -- the request path ------------------------------------------------------------------

    def record_prediction(
        self, prediction: Prediction, request_id: str, variant: str | None
    ) -> None:
        """Log what `prediction` predicted, for feedback to join (`dataplane.classes`)."""
        classes = prediction.classes
        if classes is not None:
            self.predictions.record(
                prediction.model,
                request_id,
                prediction.version,
                classes,
                now=self._clock(),
                variant=variant,
            )

    def pair_accuracy(self, model: str) -> dict[tuple[str, str], LiveAccuracy]:
        """Both sides' live accuracy per (primary, shadow) pair, for the shadow review."""
        return {
            pair: LiveAccuracy(
                labelled=accuracy.labelled,
                primary=accuracy.primary_accuracy,
                shadow=accuracy.shadow_accuracy,
            )
            for pair, accuracy in self.live.pair_accuracy(model).items()
        }

    def on_shadow_outcomes(self, outcomes: Sequence[ShadowOutcome]) -> None:
        """Shadow runs that ended (on the loop): counted per shadow version, and their
        predictions logged beside the served one for feedback to join."""
        for outcome in outcomes:
            error = None if outcome.error is None else ErrorKind(outcome.error)
            self.live.observe_shadow(outcome.model, outcome.version, outcome.latency_s, error)
            if outcome.classes is not None:
                self.predictions.record_shadow(
                    outcome.model, outcome.request_id, outcome.version, outcome.classes
                )

    # -- following the flags ---------------------------------------------------------------

    def sync(self, in_force: Mapping[str, InForce]) -> None:
        """Give every release a window for the flag version in force; forget the others."""
        by_model: dict[str, InForce] = {}
        now = self._clock()
        for applied in in_force.values():
            release, record = applied.release, applied.record
            by_model[release.model] = applied
            self.live.sync_release(
                release.model,
                record.version,
                baseline=(release.baseline, release.baseline_route.serve),
                candidate=(release.candidate, release.candidate_route.serve),
                now=now,
                accuracy_margin=release.policy.guard.accuracy_margin,
            )
        for model in set(self.live.windows()) - set(by_model):
            self.live.drop_release(model)
        self._in_force = by_model

    async def _targets(self) -> Sequence[GuardTarget]:
        """The releases to judge: enabled ones whose stored policy parsed (a release whose
        policy did not has its automation off, and is not judged), over every process's
        figures when the gateway pools them (none while the store is unreachable)."""
        if self._pool is not None:
            try:
                await self._pool.flush()
            except StoreUnavailable as exc:
                self._lost_pool(exc)
                return []
        targets = []
        for model, applied in self._in_force.items():
            release = applied.release
            window = self.live.window(model)
            if window is None or not release.enabled or not release.policy.automated:
                continue
            if self._pool is not None:
                try:
                    self._pooled[model] = await self._pool.pooled(window)
                except StoreUnavailable as exc:
                    self._lost_pool(exc)
                    return []
                window = self._pooled[model][0]
            targets.append(
                GuardTarget(
                    model=model,
                    flag_version=applied.record.version,
                    policy=release.policy.guard,
                    window=window,
                    ramp=release.policy.ramp,
                )
            )
        if self._pool_problem is not None:
            _log.info("guard_pool_back", model_count=len(targets))
        self._pool_problem = None
        return targets

    def _lost_pool(self, exc: StoreUnavailable) -> None:
        if self._pool_problem is None:
            _log.warning("guard_blind", error=str(exc), decisions="none until the store is back")
        self._pool_problem = f"no decisions: the store is unreachable ({exc})"

    async def join_feedback(self, model: str, items: Sequence[FeedbackItem]) -> FeedbackResult:
        """True labels joined to the predictions they name (in any process of the gateway)."""
        if isinstance(self.predictions, SharedPredictions):
            return await self.predictions.join(model, items, self._clock())
        return self.predictions.join(model, items, self._clock())

    # -- acting ----------------------------------------------------------------------------

    async def _rollback(self, model: str, evidence: dict[str, Any], expected_version: int) -> int:
        record = await self._control.edit(
            model,
            ramps.rollback_release,
            action="guard_rollback",
            expected_version=expected_version,
            actor="guard",
            reason=str(evidence.get("reason", "guard breach")),
            evidence=evidence | {"flag_version_before": expected_version},
        )
        _log.warning(
            "guard_rollback",
            model=model,
            flag_version_before=expected_version,
            flag_version_after=record.version,
            reason=evidence.get("reason"),
        )
        return record.version

    async def _advance(self, model: str, expected_version: int) -> int:
        now = self._clock()
        record = await self._control.edit(
            model,
            lambda flag: ramps.advance(flag, now),
            action="ramp_advance",
            expected_version=expected_version,
            actor="guard",
            reason="ramp step healthy and baked",
        )
        state = ramp_state(record.flag)
        _log.info(
            "ramp_advanced",
            model=model,
            flag_version=record.version,
            percent=state.percent if state else 100,
            promoted=state is None,
        )
        return record.version

    # -- release manager operations ----------------------------------------------------------

    def status(self, model: str) -> dict[str, Any]:
        """The guard's view of a release for `GET /admin/releases/{model}`."""
        window = self.live.window(model)
        processes = 1
        pooled = self._pooled.get(model)
        if (
            pooled is not None
            and window is not None
            and pooled[0].flag_version == window.flag_version
        ):
            window, processes = pooled
        predictions = self.predictions
        dropped = predictions.dropped if isinstance(predictions, SharedPredictions) else 0
        return release_status(
            self._in_force.get(model),
            window,
            live=self.live,
            model=model,
            pool=None
            if self._pool is None
            else {
                "processes": processes,
                "available": self._pool_problem is None,
                "problem": self._pool_problem,
                # Predictions that found the buffer full while the store was unreachable.
                "predictions_dropped": dropped,
            },
            pairs=self.pair_accuracy(model),
            decisions=self.monitor.recent_decisions(model),
            now=self._clock(),
        )

    async def start(self) -> None:
        await self.monitor.start()
        if isinstance(self.predictions, SharedPredictions):
            self._tasks.append(
                asyncio.create_task(self.predictions.flush_every(), name="predictions-flush")
            )

    async def stop(self) -> None:
        await self.monitor.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if isinstance(self.predictions, SharedPredictions):
            with contextlib.suppress(StoreUnavailable):
                await self.predictions.flush()
