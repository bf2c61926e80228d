"""The guard's loop on a real asyncio loop, acting through the real release control and the
SQLite store: one audited rollback with its evidence, ramp steps, webhooks that can fail
without harm, and a second replica's rollback that loses the race quietly.

Async tests run on anyio's pytest plugin (`@pytest.mark.anyio`, asyncio backend).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.control.gate import OfflineGate
from gateway.control.releases import ReleaseControl
from gateway.flags.operations import describe_release, set_rollout
from gateway.flags.router import Router
from gateway.guard.decision import DecisionKind
from gateway.guard.errors import WebhookFailed
from gateway.guard.live import GuardStats
from gateway.guard.monitor import GuardMonitor, GuardTarget
from gateway.guard.policy import GuardPolicy
from gateway.guard.ramp import advance, ramp_state, rollback_release, start_ramp
from gateway.guard.stats import ErrorKind
from gateway.guard.webhook import WebhookFn
from gateway.guard.window import Arm
from gateway.observability.metrics import GatewayMetrics
from gateway.state import SQLiteStore
from tests.flags_support import DEMO_KEY, KNOWN, demo_flag

MODEL = "digits"
T0 = 1_767_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A clock the test moves by hand (the bake time is measured on it)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Counts:
    """A GuardMetricsSink that keeps what it was told."""

    decisions: list[tuple[str, str]] = field(default_factory=list)
    rollbacks: list[tuple[str, str]] = field(default_factory=list)
    advances: list[str] = field(default_factory=list)
    webhook_failures: list[str] = field(default_factory=list)

    def observe_guard_decision(self, model: str, kind: str) -> None:
        self.decisions.append((model, kind))

    def count_guard_rollback(self, model: str, trigger: str) -> None:
        self.rollbacks.append((model, trigger))

    def count_ramp_advance(self, model: str) -> None:
        self.advances.append(model)

    def count_webhook_failure(self, model: str) -> None:
        self.webhook_failures.append(model)


class Replica:
    """What one gateway process holds for the guard: its live stats, and the release control
    over the store every replica shares. Its callbacks are the glue the app wires."""

    def __init__(self, state: Path, flags_dir: Path, clock: Clock) -> None:
        self.store = SQLiteStore(state)
        self.control = ReleaseControl(
            self.store,
            Router(KNOWN, {MODEL: "1"}),
            KNOWN,
            GatewayMetrics(),
            OfflineGate(lambda _model, _version: None),  # no manifests: nothing to judge
            flags_dir=flags_dir,
        )
        self.live = GuardStats()
        self.clock = clock

    async def targets(self) -> list[GuardTarget]:
        record = await self.control.release_record(MODEL)
        described = describe_release(record.flag)
        window = self.live.sync_release(
            MODEL,
            record.version,
            baseline=("baseline", described["baseline"]["version"]),
            candidate=("candidate", described["candidate"]["version"]),
            now=self.clock(),
        )
        policy = GuardPolicy.from_metadata(record.flag.get("metadata", {}))
        return [GuardTarget(MODEL, record.version, policy, window, ramp_state(record.flag))]

    async def rollback(self, model: str, evidence: dict[str, Any], expected: int) -> int:
        record = await self.control.edit(
            model,
            rollback_release,
            action="guard_rollback",
            expected_version=expected,
            actor="guard",
            reason=str(evidence["reason"]),
            evidence=evidence,
        )
        return record.version

    async def advance(self, model: str, expected: int) -> int:
        record = await self.control.edit(
            model,
            lambda flag: advance(flag, self.clock()),
            action="ramp_advance",
            expected_version=expected,
            actor="guard",
            reason="the step baked with a healthy guard",
        )
        return record.version

    async def breach(self) -> None:
        """Traffic in which the candidate fails 30 % of its requests."""
        (target,) = await self.targets()
        target.window.record_successes(Arm.BASELINE, 900)
        for index in range(100):
            error = ErrorKind.EXCEPTION if index % 10 < 3 else None
            target.window.record(Arm.CANDIDATE, 0.001, error, fallback=error is not None)

    async def healthy(self) -> None:
        """Enough clean traffic for the window to be ready."""
        (target,) = await self.targets()
        target.window.record_successes(Arm.BASELINE, 900, 0.001)
        target.window.record_successes(Arm.CANDIDATE, 100, 0.001)

    def monitor(self, **options: Any) -> GuardMonitor:
        return GuardMonitor(
            self.targets,
            rollback=self.rollback,
            advance=self.advance,
            clock=self.clock,
            interval_s=0.01,
            **options,
        )


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    (tmp_path / "flags").mkdir()
    one = Replica(tmp_path / "state.db", tmp_path / "flags", Clock())
    await one.control.replace(DEMO_KEY, demo_flag(), expected_version=0, actor="test", reason="")
    yield one
    await one.store.close()


async def audit_actions(replica: Replica) -> list[str]:
    return [entry.action for entry in await replica.store.audit(model=MODEL)]


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    async def wait() -> None:
        while not await condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout_s)


@pytest.mark.anyio
async def test_a_breach_is_rolled_back_once_with_its_evidence(replica: Replica) -> None:
    """The running monitor rolls a breaching release back with one audited flag write whose
    evidence holds the counts, statistic, threshold, window and flag versions; later looks
    do not roll back again; the webhook gets the event; metrics count it."""
    posted: list[dict[str, Any]] = []

    async def webhook(payload: dict[str, Any]) -> None:
        posted.append(payload)

    counts = Counts()
    monitor = replica.monitor(webhook=webhook, metrics=counts)
    await replica.breach()
    await monitor.start()
    try:
        await eventually(lambda: has_action(replica, "guard_rollback"))
        await asyncio.sleep(0.1)  # many more looks
    finally:
        await monitor.stop()
    assert (await audit_actions(replica)).count("guard_rollback") == 1
    entry = (await replica.store.audit(model=MODEL))[0]
    assert (entry.actor, entry.version_before, entry.version_after) == ("guard", 1, 2)
    evidence = entry.evidence
    assert evidence is not None
    assert evidence["flag_version_before"] == 1
    assert evidence["candidate"]["requests"] == 100
    assert evidence["candidate"]["errors"] == 30
    assert evidence["candidate"]["fallbacks"] == 30
    assert evidence["baseline"]["requests"] == 900
    assert evidence["error_test"]["statistic"] >= evidence["error_test"]["threshold"]
    assert evidence["window"]["flag_version"] == 1
    assert set(evidence["triggers"]) == {"error_test", "error_ceiling"}
    record = await replica.control.release_record(MODEL)
    assert describe_release(record.flag)["split"] == {"baseline": 100.0, "candidate": 0.0}
    assert [p["event"] for p in posted] == ["guard.rollback"]
    assert posted[0]["flag_version_after"] == 2
    assert counts.rollbacks == [(MODEL, "error_test")]
    history = monitor.recent_decisions(MODEL)
    assert any(d.kind is DecisionKind.BREACH and d.action == "rollback" for d in history)


async def has_action(replica: Replica, action: str) -> bool:
    return action in await audit_actions(replica)


async def roll_back_with(replica: Replica, webhook: WebhookFn) -> None:
    """Put the candidate on 10 %, breach, and let a running monitor with `webhook` (timing out
    after 50 ms) roll it back; check it went on looking after the webhook failed."""
    await replica.control.edit(
        MODEL,
        lambda flag: set_rollout(flag, "2", 10),
        action="rollout",
        expected_version=None,
        actor="test",
        reason="",
    )
    before = (await audit_actions(replica)).count("guard_rollback")
    counts = Counts()
    monitor = replica.monitor(webhook=webhook, metrics=counts, webhook_timeout_s=0.05)
    await replica.breach()
    await monitor.start()

    async def rolled_back_and_reported() -> bool:
        rollbacks = (await audit_actions(replica)).count("guard_rollback")
        return rollbacks == before + 1 and counts.webhook_failures == [MODEL]

    try:
        await eventually(rolled_back_and_reported)
        looks = len(counts.decisions)
        await asyncio.sleep(0.05)
        assert len(counts.decisions) > looks
    finally:
        await monitor.stop()


@pytest.mark.anyio
async def test_a_failing_or_hanging_webhook_never_stops_the_rollback(replica: Replica) -> None:
    """A webhook that raises, or never answers, is logged and counted after its timeout; the
    rollback is written all the same and the monitor goes on looking."""
    calls: list[str] = []

    async def failing(payload: dict[str, Any]) -> None:
        calls.append("fail")
        raise WebhookFailed("the webhook is down")

    async def hanging(payload: dict[str, Any]) -> None:
        calls.append("hang")
        await asyncio.sleep(3_600)

    await roll_back_with(replica, failing)
    await roll_back_with(replica, hanging)
    assert calls == ["fail", "hang"]
    assert (await audit_actions(replica)).count("guard_rollback") == 2


@pytest.mark.anyio
async def test_a_second_replica_that_loses_the_race_is_quiet(
    replica: Replica, tmp_path: Path
) -> None:
    """Two replicas share the store and both see the breach under flag version 1; the first
    rolls back, the second's write meets a VersionConflict, which it swallows: one rollback
    in the audit log, and the loser's decision is recorded as superseded."""
    other = Replica(tmp_path / "state.db", tmp_path / "flags", replica.clock)
    try:
        await replica.breach()
        await other.breach()
        stale = await other.targets()  # what the second replica saw before the first acted

        async def stale_targets() -> list[GuardTarget]:
            return stale

        first = replica.monitor()
        second = GuardMonitor(
            stale_targets, rollback=other.rollback, advance=other.advance, clock=other.clock
        )
        await first.check_once()
        decisions = await second.check_once()
        assert decisions[MODEL].kind is DecisionKind.BREACH
        assert (await audit_actions(replica)).count("guard_rollback") == 1
        last = second.last_decision(MODEL)
        assert last is not None
        assert last.action == "superseded"
        await second.check_once()  # acts at most once per flag version
        assert (await audit_actions(replica)).count("guard_rollback") == 1
    finally:
        await other.store.close()


@pytest.mark.anyio
async def test_the_monitor_walks_a_ramp_after_each_bake_and_promotes(replica: Replica) -> None:
    """With a healthy window, a running ramp advances only once its step has baked, each
    step a new audited flag version and a new window; the last advance promotes."""
    posted: list[dict[str, Any]] = []

    async def webhook(payload: dict[str, Any]) -> None:
        posted.append(payload)

    clock = replica.clock
    assert isinstance(clock, Clock)
    await replica.control.edit(
        MODEL,
        lambda flag: start_ramp(flag, "2", [1, 5, 100], 60, clock()),
        action="ramp_start",
        expected_version=None,
        actor="test",
        reason="",
    )
    counts = Counts()
    monitor = replica.monitor(webhook=webhook, metrics=counts)
    await replica.healthy()
    clock.now += 30
    assert (await monitor.check_once())[MODEL].kind is DecisionKind.READY_TO_ADVANCE
    assert "ramp_advance" not in await audit_actions(replica)  # not baked yet
    clock.now += 30
    await monitor.check_once()
    record = await replica.control.release_record(MODEL)
    state = ramp_state(record.flag)
    assert state is not None
    assert (state.percent, state.step_started_at) == (5, clock.now)
    assert (await monitor.check_once())[MODEL].kind is DecisionKind.INSUFFICIENT_DATA
    await replica.healthy()
    clock.now += 60
    await monitor.check_once()
    record = await replica.control.release_record(MODEL)
    assert ramp_state(record.flag) is None
    assert describe_release(record.flag)["baseline"]["version"] == "2"
    assert (await audit_actions(replica)).count("ramp_advance") == 2
    await asyncio.sleep(0.01)  # the webhook tasks run
    assert [p["event"] for p in posted] == ["ramp.advance", "ramp.promote"]
    assert counts.advances == [MODEL, MODEL]


@pytest.mark.anyio
async def test_with_auto_rollback_off_a_breach_is_reported_not_acted_on(replica: Replica) -> None:
    """`guard.autoRollback: false` leaves the flag alone on a breach; the decision is kept
    with its reason and the action says why nothing happened."""
    await replica.control.edit(
        MODEL,
        lambda flag: {**flag, "metadata": {**flag["metadata"], "guard.autoRollback": False}},
        action="policy",
        expected_version=None,
        actor="test",
        reason="",
    )
    monitor = replica.monitor()
    await replica.breach()
    await monitor.check_once()
    await monitor.check_once()
    assert "guard_rollback" not in await audit_actions(replica)
    history = monitor.recent_decisions(MODEL)
    assert history[-1].action == "rollback_disabled"
    assert history[0].kind is DecisionKind.BREACH
    assert "above the ceiling" in history[0].reason


@pytest.mark.anyio
async def test_stopping_does_not_wait_on_a_hanging_webhook(replica: Replica) -> None:
    """A webhook post still hanging when the monitor stops gets its grace period and is then
    cancelled: stopping never blocks on it."""
    started = asyncio.Event()

    async def hanging(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3_600)

    monitor = replica.monitor(webhook=hanging, webhook_timeout_s=3_600)
    await replica.breach()
    await monitor.check_once()
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(monitor.stop(grace_s=0.05), 2)
    assert "guard_rollback" in await audit_actions(replica)
