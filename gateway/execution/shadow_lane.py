"""One version's shadow lane: the bounded queue and the thread its shadow runs use.

Shadows share a version's executor but never a primary's place in it: they wait here, in
their own bounded queue, and run on their own thread, so an instance thread never takes one,
and all versions' shadow threads together stay within a CPU budget (`CpuBudget`). The
shadow thread keeps the normal OS priority on purpose: at nice 19 it was starved by the OS
while holding the GIL for its Python work, and the event loop waited for it (a priority
inversion that cost a fully loaded gateway a fifth of its throughput); the budget bounds its
share instead.

A run that does not fit the queue or the budget is refused (the caller drops and counts it);
one past its deadline is settled as a timeout by `expire`, and its late answer, if any, is
discarded. Nobody waits for a shadow's answer, so queued runs wait up to `GATHER_S` for
others to fill a call: a fuller call costs less CPU a row.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.execution.batch import Answer
from gateway.execution.budget import CpuBudget
from gateway.observability.execution_metrics import ExecutionMetrics
from gateway.runtimes.base import Tensor

QUEUED, RUNNING, SETTLED = 0, 1, 2
TIMEOUT = "timeout"
QUEUE_FULL, CPU_BUDGET = "queue_full", "cpu_budget"
GATHER_S = 0.02
"""How long queued shadow runs wait for others to fill a call (at most half their time to
their deadline)."""


class ShadowRun:
    """One shadow version's run of one request. `job` is the caller's, handed back with the
    answer; `state` changes under the lane's lock."""

    __slots__ = ("deadline", "inputs", "job", "queued_at", "rows", "state")

    def __init__(self, inputs: Mapping[str, Tensor], rows: int, deadline: float, job: Any) -> None:
        self.inputs = inputs
        self.rows = rows
        self.deadline = deadline
        self.job = job
        self.state = QUEUED
        self.queued_at = 0.0


ShadowSink = Callable[[str, str, Sequence[ShadowRun], Sequence[Answer]], None]
"""(model, version, runs, answers): shadow runs that ended, answered or timed out. Called from
the shadow thread, and from the event loop for timeouts."""


class ShadowLane:
    """Runs one loaded version's shadow runs (see the module docstring); `call` runs the
    version once over several requests' inputs, an answer each, and never raises."""

    def __init__(
        self,
        model: str,
        version: str,
        call: Callable[[Sequence[Mapping[str, Tensor]]], list[Answer]],
        *,
        max_rows: int,
        max_queue: int,
        metrics: ExecutionMetrics,
        sink: ShadowSink,
        budget: CpuBudget | None,
    ) -> None:
        self.model = model
        self.version = version
        self._call = call
        self._max_rows = max_rows
        self._max_queue = max_queue
        self._metrics = metrics
        self._sink = sink
        self._budget = budget
        self._lock = threading.Condition(threading.Lock())
        self._queue: deque[ShadowRun] = deque()
        self._running: list[ShadowRun] = []
        self._idle = False
        self._closed = False
        self._earliest_deadline = math.inf

    def thread(self) -> threading.Thread:
        """The lane's thread, not yet started (a daemon: a version that hangs holds up its
        own queue, never the process's exit)."""
        name = f"gateway-{self.model}-{self.version}-shadow"
        return threading.Thread(target=self._serve, name=name, daemon=True)

    def close(self) -> None:
        """Abandon the queued runs; the thread ends once its call, if any, returns."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._lock.notify_all()

    # -- event loop --------------------------------------------------------------------------

    def offer(self, run: ShadowRun) -> str | None:
        """Queue a run if the shadows' CPU budget and the queue have room; never blocks. None
        when queued, else why not (`queue_full`, `cpu_budget`)."""
        budget = self._budget
        if budget is not None and not budget.admits():
            return CPU_BUDGET
        with self._lock:
            if self._closed or len(self._queue) >= self._max_queue:
                self._metrics.count_overload(self.model, self.version, "shadow")
                return QUEUE_FULL
            run.queued_at = time.monotonic()
            self._queue.append(run)
            self._earliest_deadline = min(self._earliest_deadline, run.deadline)
            queued = len(self._queue)
            if self._idle and (queued == 1 or queued >= self._max_rows):
                self._lock.notify()
        return None

    def expire(self, now: float) -> int:
        """Settle every run past its deadline as a timeout (a queued one never runs; a
        running one's answer will be discarded) and hand them to the sink; how many."""
        with self._lock:
            if now < self._earliest_deadline:
                return 0
            overdue = [
                run
                for run in (*self._queue, *self._running)
                if run.state != SETTLED and run.deadline <= now
            ]
            for run in overdue:
                run.state = SETTLED
            if overdue:  # in place: `_gather` holds the queue across its waits
                waiting = [run for run in self._queue if run.state == QUEUED]
                self._queue.clear()
                self._queue.extend(waiting)
            self._earliest_deadline = min(
                (run.deadline for run in (*self._queue, *self._running) if run.state != SETTLED),
                default=math.inf,
            )
        if overdue:
            self._metrics.count_timeout(self.model, self.version, "shadow", len(overdue))
            timeout = Answer(None, "no answer within the shadow timeout", TIMEOUT)
            self._sink(self.model, self.version, overdue, [timeout] * len(overdue))
        return len(overdue)

    @property
    def queued(self) -> int:
        """Runs waiting now."""
        return len(self._queue)

    @property
    def pending(self) -> int:
        """Runs queued or in a call now."""
        with self._lock:
            return len(self._queue) + len(self._running)

    # -- the lane's thread -------------------------------------------------------------------

    def _serve(self) -> None:
        lock = self._lock
        while True:
            with lock:
                while not self._queue:
                    if self._closed:
                        return
                    self._idle = True
                    lock.wait()
                    self._idle = False
                self._gather()
                runs = self._take()
                self._running = runs
            if runs:
                self._run(runs)

    def _run(self, runs: list[ShadowRun]) -> None:
        cpu_before = time.thread_time()
        answers = self._call([run.inputs for run in runs])
        with self._lock:
            claimed = [
                (run, answer)
                for run, answer in zip(runs, answers, strict=True)
                if run.state == RUNNING
            ]
            for run, _ in claimed:
                run.state = SETTLED
            self._running = []
        if len(claimed) < len(runs):
            self._metrics.count_late(self.model, self.version, len(runs) - len(claimed))
        if claimed:
            self._metrics.observe_batch(
                self.model, self.version, sum(run.rows for run, _ in claimed), ()
            )
            self._sink(
                self.model,
                self.version,
                [run for run, _ in claimed],
                [answer for _, answer in claimed],
            )
        if self._budget is not None:
            self._budget.spend(time.thread_time() - cpu_before)

    def _gather(self) -> None:
        """Wait until a full call's rows are queued, or the oldest run has waited GATHER_S
        (the caller holds the lock)."""
        lock, queue = self._lock, self._queue
        while queue and not self._closed and len(queue) < self._max_rows:
            if sum(run.rows for run in queue) >= self._max_rows:
                return
            first = queue[0]
            until = min(first.queued_at + GATHER_S, (first.queued_at + first.deadline) / 2)
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._idle = True
            lock.wait(remaining)
            self._idle = False

    def _take(self) -> list[ShadowRun]:
        """Queued runs up to `max_rows` rows (the caller holds the lock)."""
        runs: list[ShadowRun] = []
        rows = 0
        queue = self._queue
        while queue:
            run = queue[0]
            if run.state != QUEUED:
                queue.popleft()
                continue
            if runs and rows + run.rows > self._max_rows:
                break
            queue.popleft()
            run.state = RUNNING
            runs.append(run)
            rows += run.rows
        return runs
