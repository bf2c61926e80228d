"""The guard wired to the control plane: windows follow the flags in force, decisions act
through `ReleaseControl` as audited flag writes, and ramps start behind the offline gate."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from gateway.control.releases import ReleaseControl
from gateway.dataplane import Prediction
from gateway.dataplane.classes import predicted_classes
from gateway.errors import GatewayError
from gateway.flags import operations
from gateway.guard import (
    ErrorKind,
    GuardMonitor,
    GuardPolicy,
    GuardStats,
    GuardTarget,
    PredictionLog,
    check_offline,
    ramp_state,
    webhook_poster,
)
from gateway.guard import ramp as ramps
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.shadow.service import ShadowOutcome
from gateway.state import FlagRecord

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
        self._records: dict[str, FlagRecord] = {}
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

    def sync(self, records: dict[str, FlagRecord]) -> None:
        """Give every release a window for the flag version in force; forget the others."""
        by_model = {}
        now = self._clock()
        for record in records.values():
            description = operations.describe_release(record.flag)
            model = description["model"]
            by_model[model] = record
            self.live.sync_release(
                model,
                record.version,
                baseline=(description["baseline"]["variant"], description["baseline"]["version"]),
                candidate=(
                    description["candidate"]["variant"],
                    description["candidate"]["version"],
                ),
                now=now,
            )
        for model in set(self.live.windows()) - set(by_model):
            self.live.drop_release(model)
        self._records = by_model

    async def _targets(self) -> Sequence[GuardTarget]:
        targets = []
        for model, record in self._records.items():
            window = self.live.window(model)
            if window is None or record.flag.get("state") == "DISABLED":
                continue
            metadata = record.flag.get("metadata", {})
            targets.append(
                GuardTarget(
                    model=model,
                    flag_version=record.version,
                    policy=GuardPolicy.from_metadata(metadata),
                    window=window,
                    ramp=ramp_state(record.flag),
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

    def offline_gate(self, model: str, version: str, *, force: bool) -> dict[str, Any] | None:
        """Refuse (OfflineGateRefused) a candidate worse offline than the baseline, unless
        forced; the evidence of a forced override, for the audit entry."""
        record = self._records.get(model)
        if record is None:
            return None
        description = operations.describe_release(record.flag)
        try:
            baseline = self._registry.version(model, description["baseline"]["version"]).manifest
            candidate = self._registry.version(model, version).manifest
        except GatewayError:
            return None  # an unknown version: flag validation refuses it with its own words
        if baseline is None or candidate is None:
            return None
        policy = GuardPolicy.from_metadata(record.flag.get("metadata", {}))
        comparison = check_offline(
            baseline,
            candidate,
            policy,
            force=force,
            baseline_version=description["baseline"]["version"],
            candidate_version=version,
        )
        return {"offline_gate": comparison.evidence()} if comparison.forced else None

    def status(self, model: str) -> dict[str, Any]:
        """The guard's view of a release for `GET /admin/releases/{model}`."""
        record = self._records.get(model)
        window = self.live.window(model)
        now = self._clock()
        policy = GuardPolicy.from_metadata(record.flag.get("metadata", {})) if record else None
        quantile = policy.latency_quantile if policy else 0.99
        ramp = ramp_state(record.flag) if record else None
        return {
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
            "decisions": self.monitor.recent_decisions(model),
        }

    async def start(self) -> None:
        await self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()
