"""Per-version executors over real model versions: batching, deadlines, bounded queues,
priorities, failure isolation, configuration and shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.demo.digits import held_out_digits
from gateway.errors import InferenceFailed, InferenceTimeout, ModelNotReady, Overloaded
from gateway.execution.batch import Answer
from gateway.execution.budget import CpuBudget
from gateway.execution.config import ExecutionConfig
from gateway.execution.executor import DEMOTED_NICE, VersionExecutor
from gateway.execution.shadow_lane import ShadowRun
from gateway.observability.execution_metrics import ExecutionMetrics
from gateway.repository import ModelRegistry, VersionState
from gateway.runtimes import RuntimeOptions
from tests.shadow_support import (
    NAN,
    PICKY,
    RAISES,
    SLOW,
    SLOW_S,
    build_fault_repository,
    loaded_fault_registry,
    picky_model,
    write_version,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def registry(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelRegistry]:
    """The demo versions and the failing ones (nan, wide, slow, picky), loaded."""
    with loaded_fault_registry(demo_models, tmp_path_factory.mktemp("faults") / "models") as loaded:
        yield loaded


class Shadows:
    """A shadow sink that keeps what it is handed, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ended: list[tuple[ShadowRun, Answer]] = []

    def __call__(
        self, model: str, version: str, runs: Sequence[ShadowRun], answers: Sequence[Answer]
    ) -> None:
        with self.lock:
            self.ended.extend(zip(runs, answers, strict=True))


def executor(
    registry: ModelRegistry,
    version: str,
    metrics: ExecutionMetrics | None = None,
    shadows: Shadows | None = None,
    shadow_budget: CpuBudget | None = None,
    **config: Any,
) -> VersionExecutor:
    """An executor of `version` bound to the running loop, with `config` over the defaults."""
    manifest, runtime = registry.version("digits", version).ready_runtime()
    built = VersionExecutor(
        "digits",
        version,
        manifest,
        runtime,
        ExecutionConfig(**config),
        metrics or ExecutionMetrics(),
        shadows or Shadows(),
        shadow_budget,
    )
    built.bind(asyncio.get_running_loop())
    return built


def pixels(rows: int = 1, offset: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    return {"pixels": held_out_digits()[0][offset : offset + rows]}


def sample(metrics: ExecutionMetrics, name: str, labels: dict[str, str]) -> float:
    registry = CollectorRegistry()
    registry.register(metrics)
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def loop_keeps_the_gil() -> Iterator[None]:
    """The event loop keeps the GIL until it waits (a switch interval of 10 s), so every
    request one gather starts is queued before an instance thread, woken by the first, can
    take any: the calls they form are then exact, not a race with that thread's wake-up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(10.0)
    yield
    sys.setswitchinterval(before)


async def until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


@pytest.mark.anyio
@pytest.mark.usefixtures("loop_keeps_the_gil")
async def test_requests_queued_together_run_as_one_call_and_get_their_own_rows(
    registry: ModelRegistry,
) -> None:
    """Requests that arrive within the queue delay run as one call of their rows together,
    and each gets exactly the rows it would get alone, and its own rows' predicted classes."""
    metrics = ExecutionMetrics()
    batched = executor(registry, "2", metrics, max_batch_size=32, max_queue_delay_ms=200)
    requests = [pixels(1 + index % 3, offset=index * 3) for index in range(6)]

    answers = await asyncio.gather(*(batched.infer(one, len(one["pixels"])) for one in requests))

    runtime = registry.version("digits", "2").ready_runtime()[1]
    for one, answer in zip(requests, answers, strict=True):
        alone = runtime.predict(one)
        outputs = answer.outputs
        assert outputs is not None
        assert outputs["probabilities"].shape == alone["probabilities"].shape
        np.testing.assert_allclose(outputs["probabilities"], alone["probabilities"], atol=1e-6)
        np.testing.assert_array_equal(outputs["label"], alone["label"])
        assert answer.classes == [str(i) for i in alone["probabilities"].argmax(axis=1)]
    rows = sum(len(one["pixels"]) for one in requests)
    labels = {"model": "digits", "version": "2"}
    assert sample(metrics, "gateway_executor_batch_size_count", labels) == 1
    assert sample(metrics, "gateway_executor_batch_size_sum", labels) == rows
    assert sample(metrics, "gateway_executor_queue_seconds_count", labels) == len(requests)
    batched.close()


@pytest.mark.anyio
async def test_a_request_that_arrives_alone_never_waits_for_the_queue_delay(
    registry: ModelRegistry,
) -> None:
    """The queue delay only holds a call while requests arrive together: one client's
    requests, one at a time, each run at once although the delay is long."""
    metrics = ExecutionMetrics()
    lone = executor(registry, "2", metrics, max_batch_size=32, max_queue_delay_ms=5_000)
    started = time.monotonic()
    for index in range(3):
        await lone.infer(pixels(1, index), 1)
    assert time.monotonic() - started < 2.5  # one wait for the delay would be 5 s
    labels = {"model": "digits", "version": "2"}
    assert sample(metrics, "gateway_executor_batch_size_count", labels) == 3
    lone.close()


@pytest.mark.anyio
@pytest.mark.usefixtures("loop_keeps_the_gil")
async def test_a_call_holds_at_most_max_batch_size_rows(registry: ModelRegistry) -> None:
    """Queued rows beyond max_batch_size wait for the next call; batching off (1) runs every
    request in a call of its own."""
    metrics = ExecutionMetrics()
    capped = executor(registry, "1", metrics, max_batch_size=4, max_queue_delay_ms=200)
    await asyncio.gather(*(capped.infer(pixels(1, i), 1) for i in range(10)))
    single = executor(registry, "2", metrics, max_batch_size=1, max_queue_delay_ms=200)
    await asyncio.gather(*(single.infer(pixels(1, i), 1) for i in range(5)))

    assert (
        sample(metrics, "gateway_executor_batch_size_count", {"model": "digits", "version": "1"})
        == 3
    )
    assert (
        sample(
            metrics,
            "gateway_executor_batch_size_bucket",
            {"model": "digits", "version": "1", "le": "4.0"},
        )
        == 3
    )
    assert (
        sample(metrics, "gateway_executor_batch_size_count", {"model": "digits", "version": "2"})
        == 5
    )
    capped.close()
    single.close()


@pytest.mark.anyio
async def test_one_bad_request_never_fails_its_neighbours_in_a_call(
    registry: ModelRegistry,
) -> None:
    """A call that raises because of one request is retried request by request: only that
    request fails, saying why; the others are answered as if alone."""
    picky = executor(registry, PICKY, max_batch_size=32, max_queue_delay_ms=200)
    good = [pixels(1, i) for i in range(4)]
    bad = {"pixels": good[0]["pixels"].copy()}
    bad["pixels"][0, 0] = 40.0  # the first pixel indexes a table of 17 rows

    results = await asyncio.gather(
        *(picky.infer(one, 1) for one in [*good[:2], bad, *good[2:]]), return_exceptions=True
    )

    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1
    assert isinstance(results[2], InferenceFailed)
    assert results[2].kind == "exception"
    assert re.search("Gather|indices|out of", results[2].detail)
    runtime = registry.version("digits", PICKY).ready_runtime()[1]
    for one, result in zip(
        good, [r for r in results if not isinstance(r, BaseException)], strict=True
    ):
        assert isinstance(result, Answer)
        assert result.outputs is not None
        np.testing.assert_array_equal(result.outputs["label"], runtime.predict(one)["label"])
    picky.close()


@pytest.mark.anyio
async def test_output_outside_the_signature_fails_the_request(registry: ModelRegistry) -> None:
    """A version answering NaN fails each request as invalid_output; one raising, as an
    exception; both name the version."""
    for version, kind in ((NAN, "invalid_output"), (RAISES, "exception")):
        broken = executor(registry, version)
        with pytest.raises(InferenceFailed) as failure:
            await broken.infer(pixels(2), 2)
        assert failure.value.kind == kind
        assert f"version {version!r}" in str(failure.value)
        broken.close()


@pytest.mark.anyio
async def test_a_request_past_its_deadline_is_abandoned_and_its_late_result_counted(
    registry: ModelRegistry,
) -> None:
    """A request is abandoned at its deadline with a timeout naming the version and the
    deadline, whether it was running or still queued (the queued one never runs); the running
    call's late result is dropped and counted."""
    metrics = ExecutionMetrics()
    slow = executor(registry, SLOW, metrics, max_batch_size=1, timeout_ms=200)
    started = time.monotonic()

    results = await asyncio.gather(
        slow.infer(pixels(), 1), slow.infer(pixels(), 1), return_exceptions=True
    )

    waited = time.monotonic() - started
    assert all(isinstance(r, InferenceTimeout) for r in results)
    assert "version 'slow'" in str(results[0])
    assert "200 ms" in str(results[0])
    assert waited < SLOW_S  # abandoned at the deadline, not when the call returned
    labels = {"model": "digits", "version": SLOW, "priority": "primary"}
    assert sample(metrics, "gateway_executor_timeouts_total", labels) == 2
    late = {"model": "digits", "version": SLOW}
    await until(
        lambda: sample(metrics, "gateway_executor_late_results_total", late) == 1, SLOW_S * 10
    )
    assert (
        sample(metrics, "gateway_executor_batch_size_count", late) == 1
    )  # the queued one never ran
    slow.close()


@pytest.mark.anyio
async def test_each_request_is_abandoned_at_its_own_deadline(registry: ModelRegistry) -> None:
    """Requests that arrive apart are each abandoned at their own deadline, not the first
    one's nor a later one's: the version's one deadline timer wakes again for the next
    waiting request, and is armed anew for a request that arrives once none waits."""
    deadline_s = 0.3
    slow = executor(registry, SLOW, max_batch_size=1, timeout_ms=deadline_s * 1000)
    started = time.monotonic()

    async def abandoned_at(arrival_s: float) -> float:
        await asyncio.sleep(arrival_s)
        with pytest.raises(InferenceTimeout):
            await slow.infer(pixels(), 1)
        return time.monotonic() - started

    arrivals = [0.0, 0.15, 0.5]  # the third comes after the first two were abandoned
    abandoned = await asyncio.gather(*(abandoned_at(arrival) for arrival in arrivals))

    for arrival, at in zip(arrivals, abandoned, strict=True):
        assert arrival + deadline_s <= at < arrival + deadline_s + 0.1
    slow.close()


def instance_priorities(executor: VersionExecutor) -> list[int]:
    """The nice value of each live instance thread of `executor`."""
    return [
        os.getpriority(os.PRIO_PROCESS, thread.native_id)
        for thread in executor.instance_threads
        if thread.native_id is not None
    ]


@pytest.mark.anyio
async def test_a_call_past_its_deadline_goes_on_at_the_lowest_priority(
    registry: ModelRegistry,
) -> None:
    """A call that overruns its deadline keeps its thread only at the lowest OS priority (a
    runaway model then takes no CPU anything else wants); once it returns, a fresh instance
    thread at normal priority serves the next request."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    slow = executor(registry, SLOW, max_batch_size=1, timeout_ms=100)
    with pytest.raises(InferenceTimeout):
        await slow.infer(pixels(), 1)

    assert instance_priorities(slow) == [DEMOTED_NICE]
    await until(lambda: instance_priorities(slow) == [base], SLOW_S * 10)
    quick = executor(registry, "2", max_batch_size=1, timeout_ms=100)
    await quick.infer(pixels(), 1)
    assert instance_priorities(quick) == [base]
    slow.close()
    quick.close()


@pytest.mark.anyio
async def test_a_full_queue_refuses_at_once(registry: ModelRegistry) -> None:
    """With its instance busy and its queue full, a version refuses the next request at once
    (overloaded, counted), and serves the queued one in its turn."""
    metrics = ExecutionMetrics()
    slow = executor(
        registry, SLOW, metrics, max_batch_size=1, max_queue=1, timeout_ms=SLOW_S * 60_000
    )
    running = asyncio.ensure_future(slow.infer(pixels(), 1))
    await until(lambda: slow.busy == 1)
    queued = asyncio.ensure_future(slow.infer(pixels(), 1))
    await asyncio.sleep(0)

    started = time.monotonic()
    with pytest.raises(Overloaded) as refused:
        await slow.infer(pixels(), 1)
    assert time.monotonic() - started < 0.05
    assert "queue is full" in str(refused.value)
    assert (
        sample(
            metrics,
            "gateway_executor_overloads_total",
            {"model": "digits", "version": SLOW, "priority": "primary"},
        )
        == 1
    )
    await running
    await queued
    slow.close()


@pytest.mark.anyio
async def test_instances_run_calls_side_by_side(registry: ModelRegistry) -> None:
    """With two instances, two slow requests run at the same time (both instance threads
    busy), not one after the other."""
    slow = executor(registry, SLOW, instances=2, max_batch_size=1, timeout_ms=SLOW_S * 60_000)
    first = asyncio.ensure_future(slow.infer(pixels(), 1))
    second = asyncio.ensure_future(slow.infer(pixels(), 1))

    await until(lambda: slow.busy == 2, timeout_s=SLOW_S)
    await asyncio.gather(first, second)
    slow.close()


@pytest.mark.anyio
async def test_shadows_never_take_a_primarys_place(registry: ModelRegistry) -> None:
    """Shadow runs queued before a primary do not delay it: the primary is answered while
    most of them still wait, on their own thread (which never serves a primary)."""
    shadows = Shadows()
    slow = executor(registry, SLOW, shadows=shadows, max_batch_size=1, timeout_ms=SLOW_S * 60_000)
    for index in range(6):
        assert slow.offer_shadow(ShadowRun(pixels(), 1, time.monotonic() + 60, index)) is None

    await slow.infer(pixels(), 1)

    assert slow.depths()[1] >= 4
    with shadows.lock:
        assert len(shadows.ended) <= 1
    shadow_thread = next(t for t in threading.enumerate() if t.name == "gateway-digits-slow-shadow")
    assert shadow_thread.native_id is not None
    # The normal priority, as the loop's: at nice 19 it would hold the GIL while starved.
    assert os.getpriority(os.PRIO_PROCESS, shadow_thread.native_id) == os.getpriority(
        os.PRIO_PROCESS, threading.get_native_id()
    )
    slow.close()


@pytest.mark.anyio
async def test_shadow_runs_are_bounded_batched_and_expire(registry: ModelRegistry) -> None:
    """Shadow runs beyond the shadow queue are refused (counted); queued ones run as one call
    and reach the sink with their answers; one past its deadline is settled as a timeout, and
    its late answer is discarded."""
    metrics = ExecutionMetrics()
    shadows = Shadows()
    quick = executor(registry, "2", metrics, shadows, max_shadow_queue=3)
    refusals = [
        quick.offer_shadow(ShadowRun(pixels(1, i), 1, time.monotonic() + 60, i)) for i in range(5)
    ]
    accepted = [refused is None for refused in refusals]
    assert accepted.count(True) >= 3
    assert set(refusals) <= {None, "queue_full"}
    await until(lambda: len(shadows.ended) == accepted.count(True))
    assert all(answer.outputs is not None for _, answer in shadows.ended)
    assert sample(
        metrics,
        "gateway_executor_overloads_total",
        {"model": "digits", "version": "2", "priority": "shadow"},
    ) == accepted.count(False)
    quick.close()

    late = Shadows()
    slow = executor(registry, SLOW, metrics, late, max_batch_size=1)
    for index in range(2):
        slow.offer_shadow(ShadowRun(pixels(), 1, time.monotonic() + 0.1, index))
    await asyncio.sleep(0.15)
    assert slow.expire_shadows(time.monotonic()) == 2
    assert [answer.kind for _, answer in late.ended] == ["timeout", "timeout"]
    late_results = {"model": "digits", "version": SLOW}
    await until(
        lambda: sample(metrics, "gateway_executor_late_results_total", late_results) == 1,
        SLOW_S * 10,
    )
    assert len(late.ended) == 2  # the running one's late answer went nowhere
    slow.close()


def test_the_cpu_budget_refills_at_its_share_and_holds_at_most_its_burst() -> None:
    """The shadows' CPU budget admits while it holds CPU time, refuses once it is spent (even
    into debt), and refills at its share of a core per second up to its burst."""
    now = [0.0]
    budget = CpuBudget(0.25, burst_s=0.1, clock=lambda: now[0])
    assert budget.admits()
    budget.spend(0.05)  # 25 ms of burst, 50 ms spent: 25 ms in debt
    assert not budget.admits()
    now[0] += 0.09  # refills 22.5 ms: still 2.5 ms in debt
    assert not budget.admits()
    now[0] += 0.02  # 5 ms more
    assert budget.admits()
    now[0] += 100.0
    budget.spend(0.025)  # a long idle time refills the burst, never more
    assert not budget.admits()
    assert budget.spent_s == pytest.approx(0.075)


@pytest.mark.anyio
async def test_shadow_runs_past_the_cpu_budget_are_refused(registry: ModelRegistry) -> None:
    """Once the shadows have spent their CPU budget, the executor refuses new shadow runs
    (reason cpu_budget) without queueing them, while primaries are served as ever."""
    shadows = Shadows()
    budget = CpuBudget(1e-6, burst_s=1.0)  # one microsecond of CPU: any run overdraws it
    quick = executor(registry, "2", shadows=shadows, shadow_budget=budget)
    assert quick.offer_shadow(ShadowRun(pixels(), 1, time.monotonic() + 60, 0)) is None
    await until(lambda: len(shadows.ended) == 1)
    await until(lambda: budget.spent_s > 0)

    assert quick.offer_shadow(ShadowRun(pixels(), 1, time.monotonic() + 60, 1)) == "cpu_budget"
    assert quick.depths() == (0, 0)
    assert (await quick.infer(pixels(), 1)).outputs is not None
    quick.close()


@pytest.mark.anyio
async def test_closing_fails_queued_requests_and_leaves_a_hung_call_behind(
    registry: ModelRegistry,
) -> None:
    """Closing an executor fails its queued requests as not ready at once, refuses new ones,
    and does not wait for a call that is still running."""
    slow = executor(registry, SLOW, max_batch_size=1, timeout_ms=SLOW_S * 60_000)
    running = asyncio.ensure_future(slow.infer(pixels(), 1))
    await until(lambda: slow.busy == 1)
    queued = asyncio.ensure_future(slow.infer(pixels(), 1))
    await asyncio.sleep(0)

    slow.close()
    started = time.monotonic()
    slow.join(0.1)
    assert time.monotonic() - started < SLOW_S / 2
    with pytest.raises(ModelNotReady):
        await queued
    with pytest.raises(ModelNotReady):
        await slow.infer(pixels(), 1)
    await running  # the call in flight still finishes on its thread


@pytest.mark.parametrize(
    ("execution", "words"),
    [
        ({"timeout_ms": -5}, "'timeout_ms' is -5"),
        ({"max_batch_size": 0}, "'max_batch_size' is 0"),
        ({"max_batch": 8}, "'max_batch' is unknown"),
        ({"instances": 1.5}, "'instances' is 1.5"),
        ({"max_queue_delay_ms": True}, "'max_queue_delay_ms' is True"),
    ],
)
def test_bad_execution_config_fails_that_version_only(
    demo_models: Path, tmp_path: Path, execution: dict[str, Any], words: str
) -> None:
    """A manifest whose execution object has an unknown key or a bad value fails that
    version's load with a message naming the version and the key; the rest still load."""
    root = tmp_path / "models"
    build_fault_repository(demo_models, root)
    write_version(root / "digits", "odd", picky_model(), "Badly configured.", execution)

    loaded = ModelRegistry.load(root, RuntimeOptions())

    odd = loaded.version("digits", "odd")
    assert odd.state is VersionState.FAILED
    assert "version 'odd'" in odd.reason
    assert words in odd.reason
    assert loaded.version("digits", "1").state is VersionState.READY
    assert loaded.version("digits", PICKY).state is VersionState.READY
    loaded.unload()


def test_a_manifest_execution_overrides_the_defaults(demo_models: Path, tmp_path: Path) -> None:
    """Keys a manifest sets override the gateway's defaults; the others keep them."""
    root = tmp_path / "models"
    build_fault_repository(demo_models, root)
    write_version(
        root / "digits", "tuned", picky_model(), "Tuned.", {"max_batch_size": 8, "timeout_ms": 50}
    )
    defaults = ExecutionConfig(instances=2, max_queue=9)

    loaded = ModelRegistry.load(root, RuntimeOptions(), defaults)

    assert loaded.version("digits", "tuned").execution == ExecutionConfig(
        instances=2, max_batch_size=8, timeout_ms=50.0, max_queue=9
    )
    assert loaded.version("digits", "1").execution == defaults
    loaded.unload()
