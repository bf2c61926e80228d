"""The inference path in plain Python: route, predict on the version's executor (falling back
to the baseline when the candidate fails, times out or is overloaded), feed the guard and the
prediction log, and hand the request to shadow mode.

The HTTP layer only translates: it decodes the request and its evaluation context, awaits
`Serving.serve`, and encodes what comes back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.control.guarding import GuardService
from gateway.dataplane import DataPlane, InferenceRequest, Prediction
from gateway.dataplane.dataplane import Decoded
from gateway.errors import InferenceFailed
from gateway.flags.router import Attribute, RouteDecision, Router
from gateway.guard import ErrorKind
from gateway.observability.access import AccessLog
from gateway.observability.metrics import GatewayMetrics
from gateway.shadow.service import ShadowRequest, ShadowService


@dataclass(frozen=True, slots=True)
class Served:
    """A request's answer and how it was routed."""

    prediction: Prediction
    variant: str = ""
    reason: str = ""
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class _Routed:
    decision: RouteDecision
    targeting_key: str
    context: Mapping[str, Attribute]


class Serving:
    """Everything one inference request touches, behind one call."""

    def __init__(
        self,
        dataplane: DataPlane,
        router: Router,
        shadows: ShadowService,
        guard: GuardService,
        access_log: AccessLog,
        metrics: GatewayMetrics,
    ) -> None:
        self.dataplane = dataplane
        self.router = router
        self.shadows = shadows
        self.guard = guard
        self.access_log = access_log
        self._metrics = metrics
        self._in_flight = 0  # requests in `serve` now: shadows start only while it is low

    def route(
        self,
        model: str,
        targeting_key: str | None,
        attributes: Mapping[str, Attribute],
        request_id: str,
    ) -> _Routed:
        """Evaluate the model's release flag once for this request's context."""
        # Without a targeting key the request id stands in; it is not sticky, so its
        # decision stays out of the repeat-user cache.
        key = request_id if targeting_key is None else targeting_key
        decision = self.router.route(model, key, attributes, cacheable=targeting_key is not None)
        return _Routed(decision, key, attributes)

    async def serve(
        self,
        model: str,
        version: str | None,
        request: InferenceRequest,
        binary_inputs: dict[str, bytes] | None,
        *,
        request_id: str,
        targeting_key: str | None = None,
        attributes: Mapping[str, Attribute] | None = None,
    ) -> Served:
        """Answer `request`: from `version` when pinned, else from the route the flag picks."""
        self._in_flight += 1
        try:
            if version is not None:
                prediction = await self.dataplane.infer(model, version, request, binary_inputs)
                self._observe(prediction, None, request_id)
                served = Served(prediction)
            else:
                routed = self.route(model, targeting_key, attributes or {}, request_id)
                served = await self._serve_routed(routed, request, binary_inputs, request_id)
        finally:
            self._in_flight -= 1
        self.access_log.served(
            request_id=request_id,
            model=model,
            version=served.prediction.version,
            latency_s=served.prediction.latency_s,
            variant=served.variant,
            reason=served.reason,
        )
        return served

    async def _serve_routed(
        self,
        routed: _Routed,
        request: InferenceRequest,
        binary_inputs: dict[str, bytes] | None,
        request_id: str,
    ) -> Served:
        decision = routed.decision
        variant = decision.variant or ""
        decoded = self.dataplane.decode(
            decision.model, decision.serve, request, binary_inputs, variant=variant
        )
        try:
            prediction = await self.dataplane.run(decoded, variant=variant)
        except InferenceFailed as failure:
            if decision.shadows:
                self._shadow(routed, request_id, decoded, None, failure.detail)
            return await self._fall_back(routed, failure, request, binary_inputs, request_id)
        self._observe(prediction, decision.variant, request_id)
        if decision.shadows:
            self._shadow(routed, request_id, decoded, prediction)
        return Served(prediction, variant, decision.reason)

    async def _fall_back(
        self,
        routed: _Routed,
        failure: InferenceFailed,
        request: InferenceRequest,
        binary_inputs: dict[str, bytes] | None,
        request_id: str,
    ) -> Served:
        """Answer from the baseline when the release allows it; the failure is counted
        against the version that failed either way."""
        decision = routed.decision
        release = decision.release
        can_fall_back = (
            release is not None
            and release.fallback
            and decision.serve != release.baseline_route.serve
        )
        self.guard.live.observe(
            decision.model,
            decision.serve,
            decision.variant,
            None,
            ErrorKind(failure.kind),
            fallback=can_fall_back,
        )
        if release is None or not can_fall_back:
            raise failure
        baseline = release.baseline_route.serve
        prediction = await self.dataplane.infer(decision.model, baseline, request, binary_inputs)
        self._metrics.count_fallback(decision.model, decision.serve)
        # Outside the window (no variant): the baseline arm keeps its own traffic's figures.
        self._observe(prediction, None, request_id)
        return Served(prediction, decision.variant or "", decision.reason, fallback=True)

    def _observe(self, prediction: Prediction, variant: str | None, request_id: str) -> None:
        self.guard.live.observe(prediction.model, prediction.version, variant, prediction.latency_s)
        self.guard.record_prediction(prediction, request_id, variant)

    def _shadow(
        self,
        routed: _Routed,
        request_id: str,
        decoded: Decoded,
        prediction: Prediction | None,
        error: str = "",
    ) -> None:
        """Hand the request to shadow mode: it returns at once, whatever happens. The sample
        is drawn first, so a request no shadow runs for builds nothing more, and with the
        primaries in flight: shadows run on spare capacity only."""
        targets = self.shadows.sample(routed.decision, self._in_flight)
        if not targets:
            return
        self.shadows.submit(
            ShadowRequest(
                decision=routed.decision,
                request_id=request_id,
                targeting_key=routed.targeting_key,
                context=routed.context,
                at=time.time(),
                inputs=decoded.inputs,
                primary=prediction,
                primary_error=error,
                primary_latency_s=None
                if prediction is not None
                else time.perf_counter() - decoded.started,
            ),
            targets,
        )
