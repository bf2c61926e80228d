"""The guard wired to the control plane: windows follow the flags in force, decisions act
through `ReleaseControl` as audited flag writes, and ramps start behind the offline gate."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from gateway.control.releases import InForce, ReleaseControl
from gateway.dataplane import Prediction
from gateway.dataplane.classes import predicted_classes
from gateway.guard import (
    ErrorKind,
    GuardMonitor,
    GuardStats,
    GuardTarget,
    PredictionLog,
    ramp_state,
    webhook_poster,
)
from gateway.guard import ramp as ramps
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.shadow.service import ShadowOutcome
from gateway.shadow.summary import LiveAccuracy

_log = structlog.get_logger("gateway.guard")
Clock = Callable[[], float]


class GuardService:
    """Owns the live stats, the prediction log and the monitor of one process."""

    def __init__(
        self,
        control: ReleaseControl,
        registry: ModelRegistry,
        metrics: GatewayMetrics,
        *,
        interval_s: float = 1.0,
        webhook_url: str = "",
        webhook_timeout_s: float = 5.0,
        feedback_ttl_s: float = 24 * 3600.0,
        feedback_max_entries: int = 100_000,
        clock: Clock = time.time,
    ) -> None:
        self._control = control
        self._registry = registry
        self._clock = clock
        self.live = GuardStats()
        self.predictions = PredictionLog(
            max_entries=feedback_max_entries, ttl_s=feedback_ttl_s, sink=self.live
        )
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
        manifest = self._registry.version(prediction.model, prediction.version).manifest
        if manifest is None:
            return
        classes = predicted_classes(prediction.raw_outputs, manifest.outputs, manifest.labels)
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
        policy did not has its automation off, and is not judged)."""
        targets = []
        for model, applied in self._in_force.items():
            release = applied.release
            window = self.live.window(model)
            if window is None or not release.enabled or not release.policy.automated:
                continue
            targets.append(
                GuardTarget(
                    model=model,
                    flag_version=applied.record.version,
                    policy=release.policy.guard,
                    window=window,
                    ramp=release.policy.ramp,
                )
            )
        return targets

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
        applied = self._in_force.get(model)
        window = self.live.window(model)
        now = self._clock()
        release_policy = applied.release.policy if applied else None
        policy = release_policy.guard if release_policy else None
        quantile = policy.latency_quantile if policy else 0.99
        ramp = release_policy.ramp if release_policy else None
        return {
            "automation": None
            if release_policy is None
            else {
                "enabled": release_policy.automated,
                "problem": release_policy.problem or None,
            },
            "policy": policy.to_metadata() if policy else None,
            "ramp": ramp.describe(now) if ramp else None,
            "window": None
            if window is None
            else {
                "flag_version": window.flag_version,
                "started_at": window.started_at,
                "length_s": round(now - window.started_at, 3),
                "baseline": window.baseline.snapshot(quantile),
                "candidate": window.candidate.snapshot(quantile),
                "error_test": window.error_test.result(policy.alpha if policy else 0.005),
            },
            "versions": {v: s.snapshot(quantile) for v, s in self.live.served(model).items()},
            "shadow_versions": {
                v: s.snapshot(quantile) for v, s in self.live.shadowed(model).items()
            },
            "shadow_pairs": [
                {
                    "primary": primary,
                    "shadow": shadow,
                    "labelled": accuracy.labelled,
                    "primary_accuracy": accuracy.primary,
                    "shadow_accuracy": accuracy.shadow,
                }
                for (primary, shadow), accuracy in sorted(self.pair_accuracy(model).items())
            ],
            "decisions": self.monitor.recent_decisions(model),
        }

    async def start(self) -> None:
        await self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()
