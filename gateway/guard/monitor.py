"""The guard's loop: look at every release's window, roll back on a breach, advance a ramp.

Every `interval_s` the monitor asks `targets()` for the releases to judge (each with its
window, policy, ramp and the flag version the window belongs to), decides, and acts through
injected callbacks, so it knows no store, router or HTTP:

- a breach calls `rollback(model, evidence, expected_version)`: one flag write that fails
  with VersionConflict when the flag moved (another replica, or a person, acted first); the
  conflict is expected and swallowed. It acts at most once per flag version.
- a ready, baked step of a running ramp calls `advance(model, expected_version)`.
- after a rollback or an advance, the event is posted to `webhook` in a task of its own,
  bounded by `webhook_timeout_s`: a slow or failing webhook is logged and counted, and
  never delays or undoes the flag change.

The last `history` decisions per model are kept, with their reasons, for the admin API
(`recent_decisions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gateway.guard.decision import Decision, decide
from gateway.guard.history import DecisionHistory, RecordedDecision
from gateway.guard.policy import GuardPolicy
from gateway.guard.ramp import RampAction, RampState, next_action
from gateway.guard.webhook import WebhookFn
from gateway.guard.window import ReleaseWindow
from gateway.state.errors import VersionConflict

_log = structlog.get_logger("gateway.guard")

RollbackFn = Callable[[str, dict[str, Any], int], Awaitable[int]]
"""(model, evidence, expected flag version) -> the flag version after the rollback."""
AdvanceFn = Callable[[str, int], Awaitable[int]]
"""(model, expected flag version) -> the flag version after the advance (or promotion)."""


@dataclass(frozen=True, slots=True)
class GuardTarget:
    """One release to judge: its window for flag version `flag_version`, its policy and ramp."""

    model: str
    flag_version: int
    policy: GuardPolicy
    window: ReleaseWindow
    ramp: RampState | None = None


TargetsFn = Callable[[], Awaitable[Sequence[GuardTarget]]]


class GuardMetricsSink(Protocol):
    """What the monitor counts (the composition root adapts GatewayMetrics to it)."""

    def observe_guard_decision(self, model: str, kind: str) -> None: ...
    def count_guard_rollback(self, model: str, trigger: str) -> None:
        """One rollback, labelled with the first rule that fired (error_test, latency,
        error_ceiling, latency_ceiling, in that order of precedence)."""

    def count_ramp_advance(self, model: str) -> None: ...
    def count_webhook_failure(self, model: str) -> None: ...


class GuardMonitor:
    """Runs the guard on a timer (`start`/`stop`), or once (`check_once`)."""

    def __init__(
        self,
        targets: TargetsFn,
        *,
        rollback: RollbackFn,
        advance: AdvanceFn,
        webhook: WebhookFn | None = None,
        metrics: GuardMetricsSink | None = None,
        interval_s: float = 1.0,
        webhook_timeout_s: float = 5.0,
        history: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._targets = targets
        self._rollback = rollback
        self._advance = advance
        self._webhook = webhook
        self._metrics = metrics
        self.interval_s = interval_s
        self._webhook_timeout_s = webhook_timeout_s
        self.history = DecisionHistory(history)
        self._clock = clock
        self._acted: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._posts: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="guard-monitor")

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop looking; give webhook posts in flight `grace_s` to finish, then cancel them."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._posts:
            _, pending = await asyncio.wait(set(self._posts), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:
                _log.exception("guard_check_failed")
            await asyncio.sleep(self.interval_s)

    # -- one look --------------------------------------------------------------------------

    async def check_once(self) -> dict[str, Decision]:
        """Judge every target once and act; the decisions by model."""
        decisions: dict[str, Decision] = {}
        for target in await self._targets():
            if target.window.flag_version != target.flag_version:
                continue  # the window is not yet the current flag's; next look
            try:
                decisions[target.model] = await self._judge(target)
            except Exception:
                _log.exception("guard_judge_failed", model=target.model)
        return decisions

    async def _judge(self, target: GuardTarget) -> Decision:
        now = self._clock()
        decision = decide(target.window, target.policy, now)
        if self._metrics is not None:
            self._metrics.observe_guard_decision(target.model, decision.kind)
        action: str | None = None
        match next_action(target.ramp, decision, now):
            case RampAction.ROLLBACK:
                action = await self._roll_back(target, decision)
            case RampAction.ADVANCE:
                action = await self._step(target)
            case RampAction.WAIT:
                pass
        if self.history.record(target.model, target.flag_version, decision, action, now):
            _log.info(
                "guard_decision",
                model=target.model,
                kind=str(decision.kind),
                reason=decision.reason,
                flag_version=target.flag_version,
            )
        return decision

    async def _roll_back(self, target: GuardTarget, decision: Decision) -> str | None:
        model, version = target.model, target.flag_version
        if self._acted.get(model) == version:
            return None
        if not target.policy.auto_rollback:
            self._acted[model] = version
            _log.warning("guard_breach_not_acted", model=model, reason=decision.reason)
            return "rollback_disabled"
        evidence = {
            **decision.evidence,
            "reason": decision.reason,
            "flag_version_before": version,
        }
        try:
            after = await self._rollback(model, evidence, version)
        except VersionConflict as exc:
            self._acted[model] = version
            _log.info("guard_rollback_superseded", model=model, detail=str(exc))
            return "superseded"
        except Exception as exc:
            _log.exception("guard_rollback_failed", model=model, error=str(exc))
            return "rollback_failed"
        self._acted[model] = version
        evidence["flag_version_after"] = after
        _log.warning(
            "guard_rollback",
            model=model,
            reason=decision.reason,
            triggers=evidence.get("triggers"),
            flag_version_before=version,
            flag_version_after=after,
            evidence=evidence,
        )
        if self._metrics is not None:
            trigger = decision.triggers[0] if decision.triggers else "unknown"
            self._metrics.count_guard_rollback(model, trigger)
        self._post(model, {"event": "guard.rollback", "model": model, **_payload(evidence)})
        return "rollback"

    async def _step(self, target: GuardTarget) -> str | None:
        model, version = target.model, target.flag_version
        if self._acted.get(model) == version:
            return None
        ramp = target.ramp
        try:
            after = await self._advance(model, version)
        except VersionConflict as exc:
            self._acted[model] = version
            _log.info("ramp_advance_superseded", model=model, detail=str(exc))
            return "superseded"
        except Exception as exc:
            _log.exception("ramp_advance_failed", model=model, error=str(exc))
            return "advance_failed"
        self._acted[model] = version
        promoted = ramp is not None and ramp.next_percent == 100
        event = "ramp.promote" if promoted else "ramp.advance"
        _log.info(
            "ramp_promoted" if promoted else "ramp_advanced",
            model=model,
            percent=ramp.next_percent if ramp is not None else None,
            flag_version_before=version,
            flag_version_after=after,
        )
        if self._metrics is not None:
            self._metrics.count_ramp_advance(model)
        self._post(
            model,
            {
                "event": event,
                "model": model,
                "percent": ramp.next_percent if ramp is not None else None,
                "flag_version_before": version,
                "flag_version_after": after,
            },
        )
        return "promote" if promoted else "advance"

    # -- webhook -----------------------------------------------------------------------------

    def _post(self, model: str, payload: dict[str, Any]) -> None:
        """Fire and forget: the post runs in its own task, bounded by its timeout."""
        if self._webhook is None:
            return
        task = asyncio.create_task(
            self._deliver(self._webhook, model, payload), name=f"guard-webhook-{model}"
        )
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)

    async def _deliver(self, webhook: WebhookFn, model: str, payload: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(webhook(payload), self._webhook_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            _log.warning(
                "webhook_failed", model=model, webhook_event=payload.get("event"), error=detail
            )
            if self._metrics is not None:
                self._metrics.count_webhook_failure(model)

    # -- history -----------------------------------------------------------------------------

    def recent_decisions(self, model: str) -> list[RecordedDecision]:
        """The model's last decisions, newest first (see `DecisionHistory`)."""
        return self.history.recent(model)

    def last_decision(self, model: str) -> RecordedDecision | None:
        return self.history.last(model)


def _payload(evidence: dict[str, Any]) -> dict[str, Any]:
    return {
        "reason": evidence.get("reason"),
        "triggers": evidence.get("triggers"),
        "flag_version_before": evidence.get("flag_version_before"),
        "flag_version_after": evidence.get("flag_version_after"),
        "evidence": evidence,
    }
