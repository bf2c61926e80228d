"""One version's executor: bounded queues, instance threads, deadlines, dynamic batching.

No model runs on the event loop. A primary request is queued (`infer`, on the loop) and one
of the version's `instances` threads takes it, with whatever else is queued, as one call of
up to `max_batch_size` rows; each request gets its own rows back. Like Triton's dynamic
batcher, a call waits up to `max_queue_delay_ms` after its first request for more to join,
but only while requests arrive together (the previous call held more than one, or more than
one is queued): under concurrent load each call then carries many requests, and one thread
hand-off serves them all, while a request that arrives alone never waits. onnxruntime
and torch release the GIL while they compute, so several versions, and several instances of
one, use several cores.

Deadlines: every request is abandoned at `timeout_ms` after its arrival, whether it is still
queued (it never runs) or running (the call goes on; its result is dropped and counted as
late). One timer per version watches them all (deadlines fall in arrival order). A full
queue refuses a request at once. Nothing waits without a bound.

Shadows share the executor but never a primary's place in it: they wait in the version's
`ShadowLane`, with its own bounded queue and thread, so an instance thread never takes one.
The threads are daemons: a version that hangs holds up its own queue, never the process's
exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from gateway.errors import InferenceFailed, InferenceTimeout, ModelNotReady, Overloaded
from gateway.execution.batch import Answer, has_batch_dimension, predict
from gateway.execution.budget import CpuBudget
from gateway.execution.config import ExecutionConfig
from gateway.execution.shadow_lane import ShadowLane, ShadowRun, ShadowSink
from gateway.observability.execution_metrics import ExecutionMetrics
from gateway.repository.manifest import Manifest
from gateway.runtimes.base import ModelRuntime, Tensor

_log = structlog.get_logger("gateway.execution")

DEMOTED_NICE = 19


class _Call:
    """A primary request from its arrival until its future is settled."""

    __slots__ = ("arrived", "future", "inputs", "rows", "worker")

    def __init__(
        self, inputs: Mapping[str, Tensor], rows: int, future: asyncio.Future[Answer], at: float
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.arrived = at
        self.worker: int | None = None
        """The native id of the instance thread running it, once one took it."""


def _lower_priority(thread_id: int | None = None) -> None:
    """Give a thread (the calling one by default) the lowest scheduling priority (Linux
    threads are tasks with their own nice value); where that is not possible, it runs as it
    is. Lowering is always allowed; raising it back needs a privilege the gateway lacks."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, thread_id or threading.get_native_id(), DEMOTED_NICE)


class VersionExecutor:
    """Runs one loaded version's requests (see the module docstring)."""

    def __init__(
        self,
        model: str,
        version: str,
        manifest: Manifest,
        runtime: ModelRuntime,
        config: ExecutionConfig,
        metrics: ExecutionMetrics,
        shadow_sink: ShadowSink,
        shadow_budget: CpuBudget | None = None,
    ) -> None:
        self.model = model
        self.version = version
        self.config = config
        self._manifest = manifest
        self._runtime = runtime
        self._metrics = metrics
        self._batchable = has_batch_dimension(manifest)
        self.max_rows = config.max_batch_size if self._batchable else 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._primary_lock = threading.Condition(threading.Lock())
        self._primaries: deque[_Call] = deque()
        self._queued_rows = 0
        self._idle = 0  # instance threads waiting on `_primary_lock`
        self._busy = 0  # instance threads in a call
        self._demoted: set[int] = set()  # instance threads whose call overran its deadline
        self._together = False  # the last call held more than one request
        # On the loop only: requests not yet known to be settled, oldest first, and the one
        # timer that abandons them at their deadlines (see `_expire_overdue`).
        self._waiting: deque[_Call] = deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._shadow_lane = ShadowLane(
            model,
            version,
            self._call,
            max_rows=self.max_rows,
            max_queue=config.max_shadow_queue,
            metrics=metrics,
            sink=shadow_sink,
            budget=shadow_budget,
        )
        self._threads: list[threading.Thread] = []

    # -- lifecycle (event loop) ------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose coroutines await this executor's answers; the threads start now,
        so the first requests find an instance waiting rather than one starting up."""
        self._loop = loop
        self._ensure_threads()

    def close(self) -> None:
        """Take no more work; queued primaries fail as not ready, queued shadows are
        abandoned, idle threads end, a running call finishes on its own thread."""
        with self._primary_lock:
            self._closed = True
            abandoned = list(self._primaries)
            self._primaries.clear()
            self._queued_rows = 0
            self._primary_lock.notify_all()
        self._shadow_lane.close()
        for call in abandoned:
            if not call.future.done():
                call.future.set_exception(self._not_ready())

    def join(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` in all for the threads to end (a hung call's thread is a
        daemon and is left behind)."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _not_ready(self) -> ModelNotReady:
        return ModelNotReady(
            f"model {self.model!r} version {self.version!r} is not ready: the gateway is stopping"
        )

    # -- primaries (event loop) --------------------------------------------------------------

    async def infer(self, inputs: Mapping[str, Tensor], rows: int) -> Answer:
        """The version's answer to one request (its outputs checked, and its classes). Raises
        Overloaded when the queue is full, InferenceTimeout past the deadline, InferenceFailed
        when the version fails."""
        if self._closed:
            raise self._not_ready()
        loop = self._loop
        if loop is None:  # served before the app's start-up bound it (an app called bare)
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        call = _Call(inputs, rows, future, loop.time())
        with self._primary_lock:
            if len(self._primaries) >= self.config.max_queue:
                self._metrics.count_overload(self.model, self.version, "primary")
                raise Overloaded(self.model, self.version, self.config.max_queue)
            self._primaries.append(call)
            self._queued_rows += rows
            if not self._threads:
                self._start_threads()
            elif self._idle and (len(self._primaries) == 1 or self._queued_rows >= self.max_rows):
                self._primary_lock.notify()
        self._waiting.append(call)
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(
                call.arrived + self.config.timeout_s, self._expire_overdue
            )
        answer = await future
        if answer.outputs is None:
            raise InferenceFailed(self.model, self.version, answer.error, kind=answer.kind)
        return answer

    def _expire_overdue(self) -> None:
        """On the loop, at the oldest waiting request's deadline: abandon every request past
        its deadline, and wake again at the next one's.

        Every request of a version has the same timeout and arrives later than the one
        before, so deadlines fall in arrival order and one timer serves them all (a timer a
        request, armed and cancelled, cost the loop about 20 µs of a request's 120)."""
        loop, waiting = asyncio.get_running_loop(), self._waiting
        self._deadline_timer = None
        now, timeout_s = loop.time(), self.config.timeout_s
        while waiting:
            call = waiting[0]
            if not call.future.done():
                if call.arrived + timeout_s > now:
                    self._deadline_timer = loop.call_at(
                        call.arrived + timeout_s, self._expire_overdue
                    )
                    return
                self._expire(call)
            waiting.popleft()

    def _expire(self, call: _Call) -> None:
        """Abandon a request at its deadline; a call that runs past it goes on at the lowest
        priority (see `_demote`)."""
        future = call.future
        self._metrics.count_timeout(self.model, self.version, "primary")
        future.set_exception(InferenceTimeout(self.model, self.version, self.config.timeout_ms))
        if call.worker is not None:
            self._demote(call.worker)

    def _demote(self, worker: int) -> None:
        """A call that outlives its deadline (a slow or hung model) keeps computing, but only
        on CPU time nothing else wants: its thread drops to the lowest priority, and is
        replaced by a fresh instance thread once the call returns (if it ever does)."""
        with self._primary_lock:
            if worker in self._demoted or self._closed:
                return
            self._demoted.add(worker)
        _lower_priority(worker)
        _log.warning(
            "executor_call_overran",
            model=self.model,
            version=self.version,
            timeout_ms=self.config.timeout_ms,
        )

    def _deliver(self, calls: Sequence[_Call], answers: Sequence[Answer]) -> None:
        """On the loop: hand each call its answer, unless it was abandoned meanwhile."""
        late = 0
        for call, answer in zip(calls, answers, strict=True):
            future = call.future
            if future.done():
                late += not future.cancelled()
                continue
            future.set_result(answer)
        if late:
            self._metrics.count_late(self.model, self.version, late)
        waiting = self._waiting
        while waiting and waiting[0].future.done():  # answered: no deadline to watch
            waiting.popleft()

    # -- shadows (event loop) ---------------------------------------------------------------

    def offer_shadow(self, run: ShadowRun) -> str | None:
        """Queue a shadow run (see `ShadowLane.offer`)."""
        self._ensure_threads()
        return self._shadow_lane.offer(run)

    def expire_shadows(self, now: float) -> int:
        """Settle the shadow runs past their deadline as timeouts; how many."""
        return self._shadow_lane.expire(now)

    # -- threads ---------------------------------------------------------------------------

    def _ensure_threads(self) -> None:
        """Start the threads unless they run (or the executor closed); `bind` starts them,
        and a call before it (an app served without its start-up) too."""
        if not self._threads:
            with self._primary_lock:
                if not self._threads and not self._closed:
                    self._start_threads()

    def _start_threads(self) -> None:
        """Start the instance threads and the shadow thread (the caller holds the lock)."""
        workers = [self._instance_thread(index) for index in range(self.config.instances)]
        workers.append(self._shadow_lane.thread())
        self._threads = workers
        for thread in workers:
            thread.start()

    def _replace_instance(self, index: int) -> None:
        with self._primary_lock:
            if self._closed:
                return
            replacement = self._instance_thread(index)
            self._threads[index] = replacement
        replacement.start()

    def _instance_thread(self, index: int) -> threading.Thread:
        return threading.Thread(
            target=self._serve_primaries,
            args=(index,),
            name=f"gateway-{self.model}-{self.version}-{index}",
            daemon=True,
        )

    def _serve_primaries(self, index: int) -> None:
        me = threading.get_native_id()
        while True:
            with self._primary_lock:
                if me in self._demoted:  # its call overran: a fresh thread takes its place
                    self._demoted.discard(me)
                    # Started from the loop's thread: a thread inherits its creator's priority.
                    self._post(self._replace_instance, index)
                    return
                calls = self._take_primaries()
                if not calls:
                    return  # closed
                for call in calls:
                    call.worker = me
                self._busy += 1
            started = time.monotonic()
            try:
                answers = self._call([call.inputs for call in calls])
            finally:
                with self._primary_lock:
                    self._busy -= 1
            self._metrics.observe_batch(
                self.model,
                self.version,
                sum(call.rows for call in calls),
                [started - c.arrived for c in calls],
            )
            self._post(self._deliver, calls, answers)

    def _call(self, inputs: Sequence[Mapping[str, Tensor]]) -> list[Answer]:
        """One call of the version on the calling thread (an instance or the shadow lane's):
        an answer per request, and a bug of ours becomes each request's failure, never a dead
        thread."""
        try:
            return predict(self._manifest, self._runtime, inputs)
        except Exception as exc:
            _log.exception("executor_batch_failed", model=self.model, version=self.version)
            return [Answer(None, f"internal error: {exc}", "exception")] * len(inputs)

    def _take_primaries(self) -> list[_Call]:
        """The next call's requests, oldest first, up to `max_rows` rows (one request always,
        whatever its rows); [] once closed. The caller holds `_primary_lock`."""
        lock, queue = self._primary_lock, self._primaries
        delay = self.config.max_queue_delay_s
        while True:
            while not queue:
                if self._closed:
                    return []
                self._idle += 1
                lock.wait()
                self._idle -= 1
            if self._closed:
                return []
            together = self._together or len(queue) > 1
            if delay > 0 and together and self._queued_rows < self.max_rows:
                remaining = queue[0].arrived + delay - time.monotonic()
                if remaining > 0:
                    self._idle += 1
                    lock.wait(remaining)
                    self._idle -= 1
                    continue
            break
        calls: list[_Call] = []
        rows = 0
        while queue:
            call = queue[0]
            if call.future.done():  # abandoned while queued: it never runs
                queue.popleft()
                self._queued_rows -= call.rows
                continue
            if calls and rows + call.rows > self.max_rows:
                break
            queue.popleft()
            self._queued_rows -= call.rows
            calls.append(call)
            rows += call.rows
        self._together = len(calls) > 1
        if queue and self._idle:
            lock.notify()  # more is queued: another instance may take it
        return calls

    def _post(self, callback: Callable[..., object], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(callback, *args)

    # -- reads -------------------------------------------------------------------------------

    def depths(self) -> tuple[int, int]:
        """(primary requests, shadow runs) waiting now."""
        return len(self._primaries), self._shadow_lane.queued

    @property
    def busy(self) -> int:
        """Instance threads in a call now."""
        return self._busy

    @property
    def instance_threads(self) -> list[threading.Thread]:
        """The instance threads alive now (a replaced one is gone once its call returned)."""
        with self._primary_lock:
            return [t for t in self._threads[: self.config.instances] if t.is_alive()]

    @property
    def shadows_pending(self) -> int:
        """Shadow runs queued or in a call now."""
        return self._shadow_lane.pending
