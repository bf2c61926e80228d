"""Shadow mode over real executors and model versions: records, failures, timeouts, drops,
sampling, the record buffer, the store, retention and the drop log."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from gateway.dataplane import DataPlane, InferenceRequest, Limits, RequestInput
from gateway.demo.digits import held_out_digits
from gateway.execution.budget import CpuBudget
from gateway.execution.pool import Executors
from gateway.flags.document import ShadowTarget
from gateway.flags.router import RouteDecision
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.shadow.policy import ShadowConfig, ShadowPolicy
from gateway.shadow.recorder import ComparisonRecorder
from gateway.shadow.service import ShadowOutcome, ShadowRequest, ShadowService
from gateway.state import ComparisonRecord, SQLiteStore, StoreUnavailable
from tests.shadow_support import (
    NAN,
    RAISES,
    SLOW,
    SLOW_S,
    WRONG_SHAPE,
    loaded_fault_registry,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def registry(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelRegistry]:
    """The demo versions and the failing ones (nan, wide, slow, picky), loaded (`slow` queues
    two shadow runs at most, so that it fills its queue at once)."""
    with loaded_fault_registry(demo_models, tmp_path_factory.mktemp("faults") / "models") as loaded:
        yield loaded


class Stack:
    """Executors, a shadow service over a real SQLite store, and what reached the guard."""

    def __init__(
        self,
        registry: ModelRegistry,
        store: SQLiteStore,
        config: ShadowConfig,
        budget: CpuBudget | None = None,
    ) -> None:
        self.metrics = GatewayMetrics()
        self.executors = Executors(registry, self.metrics.execution, budget)
        self.dataplane = DataPlane(registry, self.executors, Limits(), self.metrics)
        self.outcomes: list[ShadowOutcome] = []
        self.store = store
        self.service = ShadowService(
            registry,
            self.executors,
            self.metrics,
            store,
            config,
            on_outcomes=self.outcomes.extend,
            rng=random.Random(4),
        )

    async def records(self, count: int) -> list[ComparisonRecord]:
        await until(lambda: self.service.recorder.pending + self.written >= count)
        await self.service.flush()
        return await self.store.comparisons("digits")

    @property
    def written(self) -> int:
        value = self.metrics.registry.get_sample_value(
            "gateway_shadow_records_total", {"fate": "written"}
        )
        return int(value or 0)

    async def answered(self, route: RouteDecision, rows: int = 1) -> ShadowRequest:
        """A request whose primary (route.serve) really answered through its executor."""
        decoded = self.dataplane.decode("digits", route.serve, v2(rows))
        prediction = await self.dataplane.run(decoded)
        return ShadowRequest(
            decision=route,
            request_id=f"req-{time.perf_counter_ns()}",
            targeting_key="user-1",
            context={"tier": "free"},
            at=time.time(),
            inputs=decoded.inputs,
            primary=prediction,
        )

    def counted(self, shadow: str, outcome: str, primary: str = "1") -> float:
        value = self.metrics.registry.get_sample_value(
            "gateway_shadow_requests_total",
            {"model": "digits", "primary": primary, "shadow": shadow, "outcome": outcome},
        )
        return value or 0.0


def config(timeout_s: float = 5.0, **extra: Any) -> ShadowConfig:
    return ShadowConfig(defaults=ShadowPolicy(timeout_s=timeout_s, keep_inputs=True), **extra)


@pytest.fixture
async def stack(registry: ModelRegistry, tmp_path: Path) -> AsyncIterator[Stack]:
    built = Stack(registry, SQLiteStore(tmp_path / "state.db"), config())
    await built.executors.start()
    await built.service.start()
    yield built
    await built.service.stop()
    await built.executors.stop()
    await built.store.close()


def v2(rows: int = 1, offset: int = 0) -> InferenceRequest:
    pixels = held_out_digits()[0][offset : offset + rows]
    return InferenceRequest(
        inputs=[RequestInput("pixels", [rows, 64], "FP32", pixels.ravel().tolist())]
    )


def decision(*shadows: tuple[str, float], serve: str = "1") -> RouteDecision:
    targets = tuple(ShadowTarget(version, percent) for version, percent in shadows)
    return RouteDecision("digits", "digits-release", "baseline", "STATIC", serve, targets, None)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def targets(route: RouteDecision) -> Sequence[ShadowTarget]:
    return route.shadows


@pytest.mark.anyio
async def test_compared_record_carries_both_sides(stack: Stack) -> None:
    """A shadow that answers gives a 'compared' record: both outputs, classes, agreement,
    difference, both latencies, context, and the inputs (the policy keeps them); the guard
    hears its latency and predicted classes."""
    route = decision(("2", 100))
    request = await stack.answered(route, rows=3)

    assert stack.service.submit(request, targets(route)) == 1
    (record,) = await stack.records(1)

    assert (record.outcome, record.primary_version, record.shadow_version) == ("compared", "1", "2")
    assert (record.request_id, record.context, record.rows) == (
        request.request_id,
        {"tier": "free"},
        3,
    )
    assert record.primary_output is not None
    assert record.shadow_output is not None
    assert record.primary_output.classes is not None
    assert record.shadow_output.classes is not None
    agreed = sum(
        a == b
        for a, b in zip(record.primary_output.classes, record.shadow_output.classes, strict=True)
    )
    assert record.agreed_rows == agreed
    assert record.agree is (agreed == 3)
    assert record.max_abs_diff is not None
    assert 0.0 <= record.max_abs_diff <= 1.0
    assert record.primary_latency_ms is not None
    assert record.shadow_latency_ms is not None
    assert record.inputs is not None
    assert record.inputs["pixels"].shape == [3, 64]
    assert stack.counted("2", "compared") == 1
    await until(lambda: len(stack.outcomes) == 1)
    (outcome,) = stack.outcomes
    assert (outcome.version, outcome.request_id, outcome.error) == ("2", request.request_id, None)
    assert outcome.classes == record.shadow_output.classes


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("version", "words"),
    [
        (RAISES, "Gather|indices|RuntimeException|Fail"),
        (NAN, "non-finite"),
        (WRONG_SHAPE, "shape"),
    ],
)
async def test_failing_shadow_is_recorded_and_counted(
    stack: Stack, version: str, words: str
) -> None:
    """A shadow that raises or answers outside its signature becomes a 'shadow_error' record
    saying why, for every run, counted in the metrics and reported to the guard; the
    primary's answer is kept beside it."""
    route = decision((version, 100))
    for rows in (1, 2):
        assert stack.service.submit(await stack.answered(route, rows=rows), targets(route)) == 1
    records = await stack.records(2)

    for record in records:
        assert record.outcome == "shadow_error"
        assert re.search(words, record.shadow_error), record.shadow_error
        assert (record.agree, record.shadow_output) == (None, None)
        assert record.primary_output is not None
    assert stack.counted(version, "shadow_error") == 2
    await until(lambda: len(stack.outcomes) == 2)
    assert {outcome.error for outcome in stack.outcomes} <= {"exception", "invalid_output"}


@pytest.mark.anyio
async def test_slow_shadow_times_out_and_a_full_queue_drops_at_once(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """A slow shadow's runs are settled as timeouts after the release's timeout (queued or
    running); while its queue is full, further runs are dropped at once and counted by
    reason; the late answer writes nothing."""
    built = Stack(registry, SQLiteStore(tmp_path / "state.db"), config(timeout_s=0.1))
    await built.executors.start()
    await built.service.start()
    route = decision((SLOW, 100))
    requests = [await built.answered(route) for _ in range(5)]

    started = time.perf_counter()
    accepted = [built.service.submit(request, targets(route)) for request in requests]
    submit_s = time.perf_counter() - started

    assert sum(accepted) in (2, 3)  # the queue holds two; the first may already be running
    assert submit_s < 0.05
    dropped = len(requests) - sum(accepted)
    assert built.counted(SLOW, "dropped") == dropped
    assert built.service.take_drops() == {("digits", "1", SLOW, "queue_full"): dropped}
    records = await built.records(sum(accepted))
    assert {record.outcome for record in records} == {"timeout"}
    assert all(record.shadow_latency_ms == pytest.approx(100.0) for record in records)
    await asyncio.sleep(SLOW_S * 1.5)
    await built.service.flush()
    assert len(await built.store.comparisons("digits")) == sum(accepted)
    assert built.counted(SLOW, "timeout") == sum(accepted)
    await built.service.stop()
    await built.executors.stop()
    await built.store.close()


@pytest.mark.anyio
async def test_sample_percentage_draws_per_request(stack: Stack) -> None:
    """A shadow at p % runs on about p % of requests; at 0 % on none, at 100 % on all."""
    some = decision(("2", 25), ("3", 0))
    drawn = [len(stack.service.sample(some)) for _ in range(400)]
    everything = [len(stack.service.sample(decision(("2", 100)))) for _ in range(20)]

    assert 60 <= sum(drawn) <= 140  # binomial(400, 0.25): mean 100, sd 8.7
    assert everything == [1] * 20
    assert stack.service.sample(decision(("3", 0))) == []


@pytest.mark.anyio
async def test_a_spent_cpu_budget_drops_drawn_shadows_before_anything_is_built(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """While the shadows' CPU budget is spent, sample() draws nothing to run: every drawn
    shadow is dropped and counted with reason cpu_budget; with budget left it draws as ever."""
    now = [0.0]
    budget = CpuBudget(0.5, burst_s=0.1, clock=lambda: now[0])
    built = Stack(registry, SQLiteStore(tmp_path / "state.db"), config(), budget)
    route = decision(("2", 100), ("3", 100))
    assert len(built.service.sample(route)) == 2

    budget.spend(1.0)
    assert built.service.sample(route) == []
    assert built.counted("2", "dropped") == built.counted("3", "dropped") == 1
    assert (
        built.metrics.registry.get_sample_value(
            "gateway_shadow_drops_total", {"reason": "cpu_budget"}
        )
        == 2
    )

    now[0] += 2.5  # 1.25 s of CPU refilled: the debt is repaid
    assert len(built.service.sample(route)) == 2
    await built.store.close()


@pytest.mark.anyio
async def test_shadows_are_dropped_while_too_many_primaries_are_in_flight(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """sample() drops every drawn shadow, counted as primary_busy, when more primaries than
    the limit are in flight; at the limit it draws as ever, and a limit of 0 is no limit."""
    built = Stack(registry, SQLiteStore(tmp_path / "state.db"), config(max_primaries_in_flight=4))
    unlimited = Stack(
        registry, SQLiteStore(tmp_path / "other.db"), config(max_primaries_in_flight=0)
    )
    route = decision(("2", 100), ("3", 100))

    assert len(built.service.sample(route, primaries_in_flight=4)) == 2
    assert built.service.sample(route, primaries_in_flight=5) == []
    assert built.counted("2", "dropped") == built.counted("3", "dropped") == 1
    assert (
        built.metrics.registry.get_sample_value(
            "gateway_shadow_drops_total", {"reason": "primary_busy"}
        )
        == 2
    )
    assert len(unlimited.service.sample(route, primaries_in_flight=10_000)) == 2
    await built.store.close()
    await unlimited.store.close()


@pytest.mark.anyio
async def test_shadow_runs_when_the_primary_failed(stack: Stack) -> None:
    """When the primary fails, the shadow runs on the inputs the request was decoded to, and
    its answer is kept in a 'primary_error' record with the primary's error."""
    route = decision(("2", 100), serve=RAISES)
    decoded = stack.dataplane.decode("digits", RAISES, v2(2))
    request = ShadowRequest(
        decision=route,
        request_id="failed-1",
        targeting_key="k",
        context={},
        at=time.time(),
        inputs=decoded.inputs,
        primary=None,
        primary_error="Gather index out of bounds",
        primary_latency_s=0.001,
    )

    stack.service.submit(request, targets(route))
    (record,) = await stack.records(1)

    assert (record.outcome, record.primary_version) == ("primary_error", RAISES)
    assert record.primary_error == "Gather index out of bounds"
    assert record.shadow_output is not None
    assert record.shadow_output.classes is not None
    assert len(record.shadow_output.classes) == 2
    assert record.primary_output is None
    assert stack.counted("2", "primary_error", primary=RAISES) == 1


@pytest.mark.anyio
async def test_runs_answered_together_record_as_each_alone(stack: Stack) -> None:
    """Runs that shared one call get exactly the classes and differences each request gets
    alone; agreements keep a summary, disagreements both outputs."""
    route = decision(("3", 100))
    requests = []
    for index in range(12):
        rows = 1 + index % 3
        decoded = stack.dataplane.decode("digits", "1", v2(rows, offset=index))
        requests.append(
            ShadowRequest(
                decision=route,
                request_id=f"r{index}",
                targeting_key="k",
                context={},
                at=time.time(),
                inputs=decoded.inputs,
                primary=await stack.dataplane.run(decoded),
            )
        )

    for request in requests:
        stack.service.submit(request, targets(route))
    records = await stack.records(len(requests))

    alone = stack.executors.get("digits", "3")._runtime
    by_id = {record.request_id: record for record in records}
    for request in requests:
        record = by_id[request.request_id]
        assert request.primary is not None
        expected = alone.predict(request.primary.inputs)
        assert record.shadow_output is not None
        assert record.shadow_output.classes == [
            str(c) for c in expected["probabilities"].argmax(axis=1)
        ]
        primary = request.primary.raw_outputs["probabilities"]
        assert record.primary_output is not None
        assert record.primary_output.classes == [str(c) for c in primary.argmax(axis=1)]
        diff = float(abs(primary.astype("f8") - expected["probabilities"].astype("f8")).max())
        assert record.max_abs_diff == pytest.approx(diff, abs=1e-6)
        data = record.shadow_output.tensors["probabilities"].data
        assert (data is None) is (record.agree is True)


@pytest.mark.anyio
async def test_agreements_keep_their_outputs_when_configured(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """With keep_agreeing_outputs, an agreeing comparison keeps both output tensors too."""
    built = Stack(
        registry,
        SQLiteStore(tmp_path / "state.db"),
        msgspec.structs.replace(config(), keep_agreeing_outputs=True),
    )
    await built.executors.start()
    await built.service.start()
    route = decision(("1", 100), serve="1")
    built.service.submit(await built.answered(route), targets(route))
    (record,) = await built.records(1)

    assert (record.agree, record.max_abs_diff) == (True, 0.0)
    assert record.primary_output is not None
    assert record.shadow_output is not None
    assert record.primary_output.tensors["probabilities"].data is not None
    assert record.shadow_output.tensors["probabilities"].data is not None
    await built.service.stop()
    await built.executors.stop()
    await built.store.close()


def sample_record(request_id: str, at: float = 1.0) -> ComparisonRecord:
    return ComparisonRecord(
        request_id=request_id,
        at=at,
        model="digits",
        primary_version="1",
        shadow_version="2",
        outcome="compared",
        rows=1,
        agreed_rows=1,
        agree=True,
    )


@pytest.mark.anyio
async def test_buffer_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    """Past its capacity the buffer drops records and counts them; a flush writes the rest in
    one go and empties it."""
    store = SQLiteStore(tmp_path / "state.db")
    metrics = GatewayMetrics()
    recorder = ComparisonRecorder(store, metrics, capacity=3)

    lost = [recorder.add([sample_record(str(i))]) for i in range(2)]
    lost.append(recorder.add([sample_record(str(i)) for i in range(2, 5)]))

    assert lost == [0, 0, 2]
    assert recorder.take_dropped() == 2
    assert (
        metrics.registry.get_sample_value("gateway_shadow_records_total", {"fate": "buffer_full"})
        == 2
    )
    assert await recorder.flush() == 3
    assert recorder.pending == 0
    assert len(await store.comparisons("digits")) == 3
    await store.close()


@pytest.mark.anyio
async def test_records_wait_while_the_store_is_locked(tmp_path: Path) -> None:
    """When the store cannot write (another process holds the file's lock), the batch goes
    back to the buffer and is written by the next flush once the lock is gone."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    recorder = ComparisonRecorder(store, GatewayMetrics(), capacity=10)
    for i in range(4):
        recorder.add([sample_record(str(i))])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")

    with capture_logs() as logs:
        assert await recorder.flush() == 0
    assert recorder.pending == 4
    assert logs[0]["event"] == "shadow_records_not_written"

    other.execute("COMMIT")
    other.close()
    assert await recorder.flush() == 4
    assert [r.request_id for r in await store.comparisons("digits")] == ["3", "2", "1", "0"]
    await store.close()


@pytest.mark.anyio
async def test_service_flushes_on_its_interval_and_prunes_by_retention(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """The background task writes buffered records without being asked; prune keeps neither
    records past the retention age nor more than the most kept; stop writes the rest."""
    now = 10_000.0
    store = SQLiteStore(tmp_path / "state.db")
    metrics = GatewayMetrics()
    service = ShadowService(
        registry,
        Executors(registry, metrics.execution),
        metrics,
        store,
        ShadowConfig(flush_interval_s=0.02, retention_s=100.0, max_records=3),
        clock=lambda: now,
    )
    await service.start()
    for i, at in enumerate([now - 500, now - 50, now - 40, now - 30, now - 20]):
        service.recorder.add([sample_record(str(i), at)])
    await until(lambda: service.recorder.pending == 0)
    await asyncio.sleep(0.05)
    assert len(await store.comparisons("digits")) == 5

    assert await service.prune() == 2
    assert [r.request_id for r in await store.comparisons("digits")] == ["4", "3", "2"]

    service.recorder.add([sample_record("late", now)])
    await service.stop()
    assert len(await store.comparisons("digits")) == 4
    await store.close()


@pytest.mark.anyio
async def test_dropped_work_is_logged_periodically(registry: ModelRegistry, tmp_path: Path) -> None:
    """Dropped runs and records are summed into one warning per interval, then reset."""
    built = Stack(registry, SQLiteStore(tmp_path / "state.db"), config(timeout_s=0.05))
    await built.executors.start()
    route = decision((SLOW, 100), ("missing", 100))
    request = await built.answered(route)
    queued = sum(built.service.submit(request, targets(route)) for _ in range(5))

    with capture_logs() as logs:
        built.service._log_drops()
        built.service._log_drops()

    assert len(logs) == 1
    assert logs[0]["event"] == "shadow_work_dropped"
    assert logs[0]["runs_dropped"] == 10 - queued
    assert logs[0]["by_pair"] == {f"digits:1->{SLOW}": 5 - queued, "digits:1->missing": 5}
    assert logs[0]["by_reason"] == {"queue_full": 5 - queued, "unavailable": 5}
    await built.executors.stop()
    await built.store.close()


@pytest.mark.anyio
async def test_closed_store_is_reported_not_raised(tmp_path: Path) -> None:
    """A store that is gone fails the flush quietly: the records wait, nothing raises."""
    store = SQLiteStore(tmp_path / "state.db")
    await store.close()
    recorder = ComparisonRecorder(store, GatewayMetrics(), capacity=2)
    recorder.add([sample_record("a")])

    with capture_logs():
        assert await recorder.flush() == 0
    assert recorder.pending == 1
    with pytest.raises(StoreUnavailable):
        await store.comparisons("digits")
