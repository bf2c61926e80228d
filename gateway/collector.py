"""The garbage collector tuned while the gateway serves, and put back when it stops."""

from __future__ import annotations

import gc


class CollectorTuning:
    """`freeze`: the heap after start-up (libraries, models, routes) lives as long as the
    process: kept out of the collector's sight, a full collection takes microseconds instead
    of tens of milliseconds, during which the event loop (and every request) waits.
    `gen0_threshold`: tracked allocations between young-generation collections (0: Python's
    own); serving allocates fast, and at Python's 700 the collector ran hundreds of times a
    second."""

    def __init__(self, *, freeze: bool, gen0_threshold: int) -> None:
        self._freeze = freeze
        self._gen0_threshold = gen0_threshold
        self._before: tuple[int, ...] = ()

    def apply(self) -> None:
        if self._freeze:
            gc.collect()
            gc.freeze()
        self._before = gc.get_threshold()
        if self._gen0_threshold:
            gc.set_threshold(self._gen0_threshold, *self._before[1:])

    def restore(self) -> None:
        if self._freeze:
            gc.unfreeze()  # a process that builds apps again (tests) collects the old ones
        if self._before:
            gc.set_threshold(*self._before)
