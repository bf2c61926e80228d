"""Shadow runs off the request path, over real model versions: budget, sampling, timeouts,
failures, the record buffer, batching to the store, retention and the drop log."""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from gateway.dataplane import DataPlane, InferenceRequest, Limits, Prediction, RequestInput
from gateway.demo.digits import held_out_digits
from gateway.flags.document import ShadowTarget
from gateway.flags.router import RouteDecision
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry
from gateway.runtimes import RuntimeOptions
from gateway.shadow.batch import VersionBatches
from gateway.shadow.columns import OneRowBatch
from gateway.shadow.jobs import ShadowJob
from gateway.shadow.load import LoopLoad, thread_demand_s
from gateway.shadow.policy import ShadowConfig, ShadowPolicy
from gateway.shadow.recorder import ComparisonRecorder
from gateway.shadow.records import RecordMaker
from gateway.shadow.runner import RecordSink, ShadowRequest, ShadowRunner
from gateway.shadow.service import ShadowService
from gateway.state import (
    AgreementBatch,
    ComparisonRecord,
    SQLiteStore,
    StoreUnavailable,
)
from gateway.state.store import expand
from tests.conftest import agreements
from tests.shadow_support import NAN, RAISES, SLOW, SLOW_S, WRONG_SHAPE, build_fault_repository


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def registry(
    demo_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelRegistry]:
    """The demo versions and the failing ones (5 NaN, 6 wrong shape, 7 slow), loaded."""
    root = build_fault_repository(demo_models, tmp_path_factory.mktemp("faults") / "models")
    loaded = ModelRegistry.load(root, RuntimeOptions())
    yield loaded
    loaded.unload()


def v2(rows: int = 1, offset: int = 0) -> InferenceRequest:
    pixels = held_out_digits()[0][offset : offset + rows]
    return InferenceRequest(
        inputs=[RequestInput("pixels", [rows, 64], "FP32", pixels.ravel().tolist())]
    )


def decision(*shadows: tuple[str, float], serve: str = "1") -> RouteDecision:
    targets = tuple(ShadowTarget(version, percent) for version, percent in shadows)
    return RouteDecision("digits", "digits-release", "baseline", "STATIC", serve, targets, None)


def answered(registry: ModelRegistry, route: RouteDecision, rows: int = 1) -> ShadowRequest:
    """A request whose primary (route.serve) really answered through the data plane."""
    prediction: Prediction = DataPlane(registry, Limits(), GatewayMetrics()).infer(
        "digits", route.serve, v2(rows)
    )
    return ShadowRequest(
        decision=route,
        request_id=f"req-{time.perf_counter_ns()}",
        targeting_key="user-1",
        context={"tier": "free"},
        at=time.time(),
        primary=prediction,
    )


def collect(into: list[ComparisonRecord]) -> RecordSink:
    """A sink that keeps every record handed on, agreement batches as their records."""
    return lambda items: into.extend(expand(items))


def claim_all(jobs: Sequence[ShadowJob]) -> list[bool]:
    return [True] * len(jobs)


def config(
    threads: int = 4, concurrency: int = 4, timeout_s: float = 5.0, window_s: float = 0.005
) -> ShadowConfig:
    return ShadowConfig(
        threads=threads,
        batch_window_s=window_s,
        defaults=ShadowPolicy(timeout_s=timeout_s, concurrency=concurrency, keep_inputs=True),
    )


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def counted(metrics: GatewayMetrics, shadow: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "gateway_shadow_requests_total",
        {"model": "digits", "primary": "1", "shadow": shadow, "outcome": outcome},
    )
    return value or 0.0


@pytest.mark.anyio
async def test_compared_record_carries_both_sides(registry: ModelRegistry) -> None:
    """A shadow that answers gives a 'compared' record: both outputs, classes, agreement,
    difference, both latencies, context, and the inputs (the policy keeps them)."""
    records: list[ComparisonRecord] = []
    metrics = GatewayMetrics()
    runner = ShadowRunner(registry, metrics, config(), collect(records))
    request = answered(registry, decision(("2", 100)), rows=3)

    assert runner.submit(request) == 1
    await until(lambda: len(records) == 1)
    runner.shutdown()

    record = records[0]
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
    assert counted(metrics, "2", "compared") == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("version", "words"),
    [
        (RAISES, "InferenceFailed|Gather|indices|RuntimeException|Fail"),
        (NAN, "non-finite"),
        (WRONG_SHAPE, "shape"),
    ],
)
async def test_failing_shadow_is_recorded_and_counted(
    registry: ModelRegistry, version: str, words: str
) -> None:
    """A shadow that raises or answers outside its signature becomes a 'shadow_error' record
    saying why, for every run of a batch, counted in the metrics; the primary's answer is
    kept beside it."""
    records: list[ComparisonRecord] = []
    metrics = GatewayMetrics()
    runner = ShadowRunner(registry, metrics, config(window_s=0.05), collect(records))

    for rows in (1, 2, 1):  # one batch of three: it fails, and so does each run alone
        runner.submit(answered(registry, decision((version, 100)), rows=rows))
    await until(lambda: len(records) == 3)
    runner.shutdown()

    for record in records:
        assert record.outcome == "shadow_error"
        assert re.search(words, record.shadow_error), record.shadow_error
        assert (record.agree, record.shadow_output) == (None, None)
        assert record.primary_output is not None
    assert counted(metrics, version, "shadow_error") == 3


@pytest.mark.anyio
async def test_hung_shadow_times_out_keeps_its_slot_and_drops_the_rest(
    registry: ModelRegistry,
) -> None:
    """With a budget of one, a slow shadow takes the slot: the next submits are dropped at
    once and counted; the slow run is settled as a timeout after the release's timeout while
    its thread still holds the slot; its late answer writes nothing; then the slot frees."""
    records: list[ComparisonRecord] = []
    metrics = GatewayMetrics()
    runner = ShadowRunner(registry, metrics, config(1, 1, timeout_s=0.1), collect(records))
    route = decision((SLOW, 100))
    requests = [answered(registry, route) for _ in range(3)]
    watch = asyncio.create_task(runner.watch(0.01))

    started = time.perf_counter()
    accepted = [runner.submit(request) for request in requests]
    submit_s = time.perf_counter() - started

    assert accepted == [1, 0, 0]
    assert submit_s < 0.05
    assert counted(metrics, SLOW, "dropped") == 2
    assert runner.take_drops() == {("digits", "1", SLOW, "budget"): 2}
    await until(lambda: len(records) == 1, timeout_s=2.0)
    assert records[0].outcome == "timeout"
    assert "100 ms" in records[0].shadow_error
    assert runner.in_flight == 1  # the thread is still spinning
    assert runner.submit(answered(registry, route)) == 0
    await until(lambda: runner.in_flight == 0, timeout_s=SLOW_S * 5)
    assert len(records) == 1
    assert counted(metrics, SLOW, "timeout") == 1
    assert metrics.registry.get_sample_value("gateway_shadow_in_flight") in {0.0, 1.0}
    watch.cancel()
    runner.shutdown()


@pytest.mark.anyio
async def test_each_queued_run_times_out_at_its_own_deadline(registry: ModelRegistry) -> None:
    """Runs still waiting for their batch are settled as timeouts one by one, each once its
    own deadline (submit time + timeout) has passed and not before."""
    records: list[ComparisonRecord] = []
    timeout_s = 5.0
    runner = ShadowRunner(
        registry,
        GatewayMetrics(),
        config(1, 4, timeout_s=timeout_s, window_s=60.0),
        collect(records),
    )
    route = decision(("2", 100))
    first_before = time.monotonic()
    runner.submit(answered(registry, route))
    first_after = time.monotonic()
    await asyncio.sleep(0.05)
    second_before = time.monotonic()
    runner.submit(answered(registry, route))

    assert runner.expire_overdue(now=first_before + timeout_s - 0.001) == 0
    assert runner.expire_overdue(now=first_after + timeout_s) == 1
    assert runner.expire_overdue(now=second_before + timeout_s - 0.001) == 0
    assert runner.expire_overdue(now=second_before + timeout_s + 1.0) == 1
    assert [record.outcome for record in records] == ["timeout", "timeout"]
    runner.shutdown()


@pytest.mark.anyio
async def test_in_flight_runs_are_capped_per_release_and_in_all(registry: ModelRegistry) -> None:
    """A release may not hold more slots than its concurrency, nor all releases together more
    than threads x batch_max; shutting down gives the queued runs' slots back."""
    records: list[ComparisonRecord] = []
    per_release = ShadowRunner(registry, GatewayMetrics(), config(2, 3, 5.0), collect(records))
    overall = ShadowRunner(
        registry,
        GatewayMetrics(),
        msgspec.structs.replace(config(2, 100, 5.0), batch_max=2),
        collect(records),
    )
    request = answered(registry, decision((SLOW, 100)))

    assert [per_release.submit(request) for _ in range(5)] == [1, 1, 1, 0, 0]
    assert [overall.submit(request) for _ in range(6)] == [1, 1, 1, 1, 0, 0]
    for runner in (per_release, overall):
        runner.shutdown()
    await until(lambda: per_release.in_flight == overall.in_flight == 0, timeout_s=SLOW_S * 5)
    assert records == []


@pytest.mark.anyio
async def test_sample_percentage_draws_per_request(registry: ModelRegistry) -> None:
    """A shadow at p % runs on about p % of requests; at 0 % on none, at 100 % on all."""
    records: list[ComparisonRecord] = []
    runner = ShadowRunner(
        registry, GatewayMetrics(), config(), collect(records), rng=random.Random(4)
    )
    request = answered(registry, decision(("2", 25), ("3", 0)))
    always = answered(registry, decision(("2", 100)))

    started = 0
    for _ in range(200):
        started += runner.submit(request)
        await until(lambda: runner.in_flight == 0)
    for _ in range(20):
        started += runner.submit(always)
        await until(lambda: runner.in_flight == 0)
    runner.shutdown()

    assert 30 <= started - 20 <= 70  # binomial(200, 0.25): mean 50, sd 6
    assert {record.shadow_version for record in records} == {"2"}


@pytest.mark.anyio
async def test_shadow_runs_when_the_primary_failed(registry: ModelRegistry) -> None:
    """When the primary fails, the shadow decodes the inputs itself and its answer is kept in
    a 'primary_error' record with the primary's error."""
    records: list[ComparisonRecord] = []
    metrics = GatewayMetrics()
    runner = ShadowRunner(registry, metrics, config(), collect(records))
    request = ShadowRequest(
        decision=decision(("2", 100), serve=RAISES),
        request_id="failed-1",
        targeting_key="k",
        context={},
        at=time.time(),
        primary=None,
        primary_error="Gather index out of bounds",
        primary_latency_s=0.001,
        request=v2(2),
    )

    runner.submit(request)
    await until(lambda: len(records) == 1)
    runner.shutdown()

    record = records[0]
    assert (record.outcome, record.primary_version) == ("primary_error", RAISES)
    assert record.primary_error == "Gather index out of bounds"
    assert record.shadow_output is not None
    assert record.shadow_output.classes is not None
    assert len(record.shadow_output.classes) == 2
    assert record.primary_output is None
    assert metrics.registry.get_sample_value(
        "gateway_shadow_requests_total",
        {"model": "digits", "primary": RAISES, "shadow": "2", "outcome": "primary_error"},
    )


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
async def test_agreement_batches_count_their_records_against_the_buffer(tmp_path: Path) -> None:
    """An agreement batch takes as much room as the records it holds: one that does not fit
    whole is dropped whole and counted by its records; flushed, it is written as them."""
    store = SQLiteStore(tmp_path / "state.db")
    recorder = ComparisonRecorder(store, GatewayMetrics(), capacity=5)
    assert recorder.add([agreements("a", "b", "c", first_at=1.0), sample_record("d")]) == 0
    assert recorder.add([agreements("e", "f", first_at=1.0), sample_record("g")]) == 2
    assert recorder.pending == 5
    assert await recorder.flush() == 5
    found = {record.request_id for record in await store.comparisons("digits")}
    assert found == {"a", "b", "c", "d", "g"}
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
    service = ShadowService(
        registry,
        GatewayMetrics(),
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
    store = SQLiteStore(tmp_path / "state.db")
    service = ShadowService(registry, GatewayMetrics(), store, config(1, 1, timeout_s=0.05))
    request = answered(registry, decision((SLOW, 100)))
    service.submit(request)
    service.submit(request)
    service.submit(request)

    with capture_logs() as logs:
        service._log_drops()
        service._log_drops()

    assert len(logs) == 1
    assert logs[0]["event"] == "shadow_work_dropped"
    assert logs[0]["runs_dropped"] == 2
    assert logs[0]["by_pair"] == {f"digits:1->{SLOW}": 2}
    assert logs[0]["by_reason"] == {"budget": 2}
    service.runner.shutdown()
    await store.close()


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


@pytest.mark.anyio
async def test_batched_runs_answer_as_single_runs(registry: ModelRegistry) -> None:
    """Runs gathered into one batch (one prediction for all their rows, one argmax over the
    stacked primaries) get exactly the top classes and differences each request gets alone;
    agreements keep a summary, while disagreements keep both outputs."""
    records: list[ComparisonRecord] = []
    runner = ShadowRunner(
        registry, GatewayMetrics(), config(concurrency=32, window_s=0.1), collect(records)
    )
    pixels = held_out_digits()[0]
    requests = []
    for index in range(12):
        rows = 1 + index % 3
        body = InferenceRequest(
            inputs=[
                RequestInput(
                    "pixels", [rows, 64], "FP32", pixels[index : index + rows].ravel().tolist()
                )
            ]
        )
        prediction = DataPlane(registry, Limits(), GatewayMetrics()).infer("digits", "1", body)
        requests.append(
            ShadowRequest(
                decision=decision(("3", 100)),
                request_id=f"r{index}",
                targeting_key="k",
                context={},
                at=time.time(),
                primary=prediction,
            )
        )

    for request in requests:
        runner.submit(request)
    await until(lambda: len(records) == len(requests))
    runner.shutdown()

    alone = registry.version("digits", "3").ready_runtime()[1]
    by_id = {record.request_id: record for record in records}
    for request in requests:
        record = by_id[request.request_id]
        assert request.primary is not None
        expected = alone.predict(request.primary.inputs)
        classes = [str(c) for c in expected["probabilities"].argmax(axis=1)]
        assert record.shadow_output is not None
        assert record.shadow_output.classes == classes
        primary = request.primary.raw_outputs["probabilities"]
        assert record.primary_output is not None
        assert record.primary_output.classes == [str(c) for c in primary.argmax(axis=1)]
        diff = float(abs(primary.astype("f8") - expected["probabilities"].astype("f8")).max())
        assert record.max_abs_diff == pytest.approx(diff, abs=1e-6)
        data = record.shadow_output.tensors["probabilities"].data
        assert (data is None) is (record.agree is True)
    assert len({record.shadow_latency_ms for record in records}) < len(records)  # batched


@pytest.mark.anyio
async def test_agreements_keep_their_outputs_when_configured(registry: ModelRegistry) -> None:
    """With keep_agreeing_outputs, an agreeing comparison keeps both output tensors too."""
    records: list[ComparisonRecord] = []
    settings = msgspec.structs.replace(config(), keep_agreeing_outputs=True)
    runner = ShadowRunner(registry, GatewayMetrics(), settings, collect(records))

    runner.submit(answered(registry, decision(("1", 100), serve="1")))
    await until(lambda: len(records) == 1)
    runner.shutdown()

    (record,) = records
    assert (record.agree, record.max_abs_diff) == (True, 0.0)
    assert record.primary_output is not None
    assert record.shadow_output is not None
    assert record.primary_output.tensors["probabilities"].data is not None
    assert record.shadow_output.tensors["probabilities"].data is not None


def one_row_jobs(registry: ModelRegistry, shadow: str, count: int = 40) -> list[ShadowJob]:
    """`count` one-row runs of `shadow` behind version 1's real answers to held-out digits."""
    dataplane = DataPlane(registry, Limits(), GatewayMetrics())
    route = decision((shadow, 100))
    policy = ShadowPolicy(keep_inputs=False)
    return [
        ShadowJob(
            ShadowRequest(
                decision=route,
                request_id=f"r{index}",
                targeting_key="k",
                context={"tier": "free"},
                at=float(index),
                primary=dataplane.infer("digits", "1", v2(1, offset=index)),
            ),
            shadow,
            policy,
            deadline=1e18,
        )
        for index in range(count)
    ]


def without_latency(records: Sequence[ComparisonRecord]) -> list[Any]:
    return [
        msgspec.to_builtins(msgspec.structs.replace(record, shadow_latency_ms=None))
        for record in records
    ]


@pytest.mark.parametrize("keep_agreeing", [False, True])
def test_one_row_runs_of_a_batch_record_as_each_run_alone(
    registry: ModelRegistry, keep_agreeing: bool
) -> None:
    """A batch of one-row runs gives each run the record it gets alone, field for field but
    for the shadow's latency: the disagreements as records, the agreements (unless they keep
    their outputs) as one agreement batch."""
    shadow_config = msgspec.structs.replace(config(), keep_agreeing_outputs=keep_agreeing)
    batches = VersionBatches(registry, GatewayMetrics(), RecordMaker(registry, shadow_config))
    jobs = one_row_jobs(registry, "3")

    handed_on = batches.run("digits", "3", jobs, claim_all)
    together = sorted(expand(handed_on), key=lambda record: record.at)
    alone = [expand(batches.run("digits", "3", [job], claim_all))[0] for job in jobs]

    assert {record.agree for record in together} == {True, False}
    kinds = [type(item) for item in handed_on]
    assert kinds.count(AgreementBatch) == (0 if keep_agreeing else 1)
    # A batched prediction's floats can differ from a one-row one's in the last bits.
    for mine, reference in zip(without_latency(together), without_latency(alone), strict=True):
        assert close(mine, reference), mine["request_id"]


@pytest.mark.parametrize("shadow", [RAISES, NAN, WRONG_SHAPE])
def test_a_failing_version_fails_each_run_of_a_one_row_batch_as_alone(
    registry: ModelRegistry, shadow: str
) -> None:
    """When a version's batched prediction raises or breaks its signature, every one-row run
    of the batch gets the shadow-error record it gets alone (the batch is not one error)."""
    batches = VersionBatches(registry, GatewayMetrics(), RecordMaker(registry, config()))
    jobs = one_row_jobs(registry, shadow, count=8)

    together = sorted(expand(batches.run("digits", shadow, jobs, claim_all)), key=by_time)
    alone = [expand(batches.run("digits", shadow, [job], claim_all))[0] for job in jobs]

    assert [record.outcome for record in together] == ["shadow_error"] * len(jobs)
    assert all(record.shadow_error for record in together)
    assert without_latency(together) == without_latency(alone)


def test_a_one_row_batch_records_only_the_runs_its_claim_keeps(registry: ModelRegistry) -> None:
    """Runs that timed out while their batch ran (the claim says so) get no record from the
    batch, agreeing or not; the others get theirs."""
    batches = VersionBatches(registry, GatewayMetrics(), RecordMaker(registry, config()))
    jobs = one_row_jobs(registry, "3")

    def every_other(claimed: Sequence[ShadowJob]) -> list[bool]:
        return [index % 2 == 0 for index in range(len(claimed))]

    records = sorted(expand(batches.run("digits", "3", jobs, every_other)), key=by_time)

    assert [record.request_id for record in records] == [
        job.request.request_id for job in jobs[::2]
    ]
    assert {record.agree for record in records} == {True, False}


def test_only_one_row_runs_behind_one_answered_version_batch_as_columns(
    registry: ModelRegistry,
) -> None:
    """A batch qualifies for the column path only when every run is one row behind an
    answered primary of one version and keeps no inputs; a two-row run, a second primary
    version, a failed primary or kept inputs send it down the general path."""
    maker = RecordMaker(registry, config())
    manifest = registry.version("digits", "3").ready_runtime()[0]
    dataplane = DataPlane(registry, Limits(), GatewayMetrics())
    jobs = one_row_jobs(registry, "3", count=6)

    def replaced(index: int, **changes: Any) -> list[ShadowJob]:
        changed = list(jobs)
        request = msgspec.structs.replace(jobs[index].request, **changes)
        changed[index] = ShadowJob(request, "3", jobs[index].policy, deadline=1e18)
        return changed

    keeping = list(jobs)
    keeping[2] = ShadowJob(jobs[2].request, "3", ShadowPolicy(keep_inputs=True), deadline=1e18)
    assert OneRowBatch.prepare(maker, manifest, jobs) is not None
    assert OneRowBatch.prepare(maker, manifest, jobs[:1]) is None
    assert OneRowBatch.prepare(maker, manifest, keeping) is None
    for changes in (
        {"primary": dataplane.infer("digits", "1", v2(2))},
        {"primary": dataplane.infer("digits", "2", v2(1))},
        {"primary": None, "primary_error": "failed"},
    ):
        assert OneRowBatch.prepare(maker, manifest, replaced(3, **changes)) is None, changes


def by_time(record: ComparisonRecord) -> float:
    return record.at


def close(mine: Any, theirs: Any) -> bool:
    """Equal plain data, floats within a float32's precision of each other."""
    if isinstance(mine, float) and isinstance(theirs, float):
        return math.isclose(mine, theirs, rel_tol=1e-5, abs_tol=1e-9)
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return mine.keys() == theirs.keys() and all(close(mine[k], theirs[k]) for k in mine)
    if isinstance(mine, list) and isinstance(theirs, list):
        return len(mine) == len(theirs) and all(map(close, mine, theirs))
    return bool(mine == theirs)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_loop_load_is_smoothed_demand_with_the_shadows_cpu() -> None:
    """Load is the loop's CPU demand over wall time plus the shadows' CPU, smoothed, capped
    at 1."""
    cpu, wall = FakeClock(), FakeClock()
    load = LoopLoad(shed_start=0.5, shed_full=0.9, smoothing=0.5, cpu_clock=cpu, wall_clock=wall)
    load.sample()
    cpu.now, wall.now = 0.4, 1.0
    assert load.sample() == pytest.approx(0.2)  # half way from 0 to 0.4
    load.add_shadow_cpu(0.2)
    cpu.now, wall.now = 0.8, 2.0
    assert load.sample() == pytest.approx(0.4)  # half way from 0.2 to 0.6
    load.add_shadow_cpu(5.0)
    cpu.now, wall.now = 1.2, 3.0
    assert load.sample() == pytest.approx(0.7)  # 1.0 at most
    assert thread_demand_s() > 0.0


def test_thread_demand_grows_with_work_per_thread_and_holds_no_file_after_it() -> None:
    """Each thread reads its own demand, which grows as it works; a thread that ended leaves
    no open file behind (the demand is read from a file kept open per thread)."""
    open_files = len(os.listdir("/proc/self/fd"))
    readings: list[tuple[float, float]] = []

    def work() -> None:
        before = thread_demand_s()
        sum(i * i for i in range(200_000))
        readings.append((before, thread_demand_s()))

    for _ in range(50):
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()

    assert all(after > before for before, after in readings)
    assert len(readings) == 50
    assert len(os.listdir("/proc/self/fd")) == open_files


def test_loop_load_admits_below_sheds_between_and_refuses_above() -> None:
    """Below shed_start every run is admitted; above shed_full none; in between a share
    falling linearly; shed_start 1 never sheds."""
    load = LoopLoad(shed_start=0.6, shed_full=0.8, rng=random.Random(1))
    load.busy = 0.5
    assert all(load.admit() for _ in range(100))
    load.busy = 0.85
    assert not any(load.admit() for _ in range(100))
    load.busy = 0.75
    assert 70 <= sum(load.admit() for _ in range(400)) <= 130  # a quarter: (0.8 - 0.75) / 0.2
    never = LoopLoad(shed_start=1.0, shed_full=1.0)
    never.busy = 1.0
    assert never.admit()
    with pytest.raises(ValueError, match="shed_start"):
        LoopLoad(shed_start=0.9, shed_full=0.5)


@pytest.mark.anyio
async def test_a_busy_event_loop_drops_shadow_work(registry: ModelRegistry) -> None:
    """When the primary's event loop is too busy, runs are dropped before they take a slot,
    counted with the reason 'load'."""
    metrics = GatewayMetrics()
    load = LoopLoad(shed_start=0.5, shed_full=0.7)
    runner = ShadowRunner(registry, metrics, config(), lambda records: None, load=load)
    load.busy = 0.9

    assert runner.submit(answered(registry, decision(("2", 100)))) == 0
    assert runner.in_flight == 0
    assert counted(metrics, "2", "dropped") == 1
    assert metrics.registry.get_sample_value("gateway_shadow_drops_total", {"reason": "load"})
    assert runner.take_drops() == {("digits", "1", "2", "load"): 1}
    runner.shutdown()
