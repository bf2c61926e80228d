"""The interpreter tuned while the gateway serves, and put back when it stops."""

from __future__ import annotations

import gc
import sys


class InterpreterTuning:
    """`gc_freeze`: the heap after start-up (libraries, models, routes) lives as long as the
    process: kept out of the collector's sight, a full collection takes microseconds instead
    of tens of milliseconds, during which the event loop (and every request) waits.
    `gc_gen0_threshold`: tracked allocations between young-generation collections (0:
    Python's own); serving allocates fast, and at Python's 700 the collector ran hundreds of
    times a second. `switch_interval_s`: how long a thread may hold the GIL while another
    waits for it (0: Python's 5 ms); the executors' threads wait for it to hand each call's
    answers back, so it bounds what that hand-off adds to a request under load."""

    def __init__(
        self, *, gc_freeze: bool, gc_gen0_threshold: int, switch_interval_s: float
    ) -> None:
        self._freeze = gc_freeze
        self._gen0_threshold = gc_gen0_threshold
        self._switch_interval_s = switch_interval_s
        self._thresholds: tuple[int, ...] = ()
        self._switch_before = 0.0

    def apply(self) -> None:
        if self._freeze:
            gc.collect()
            gc.freeze()
        self._thresholds = gc.get_threshold()
        if self._gen0_threshold:
            gc.set_threshold(self._gen0_threshold, *self._thresholds[1:])
        self._switch_before = sys.getswitchinterval()
        if self._switch_interval_s:
            sys.setswitchinterval(self._switch_interval_s)

    def restore(self) -> None:
        if self._freeze:
            gc.unfreeze()  # a process that builds apps again (tests) collects the old ones
        if self._thresholds:
            gc.set_threshold(*self._thresholds)
        if self._switch_before:
            sys.setswitchinterval(self._switch_before)
