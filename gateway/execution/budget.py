"""The CPU time shadow runs may use, all versions together: a share of one core.

On a machine whose cores are shared (hyperthreads, a busy host, wrk beside the server) even
"spare" cycles slow the primaries beside them, and a shadow's Python work holds the GIL the
event loop needs; an OS priority cannot help (see `executor`). So shadows get a budget: a
token bucket of CPU seconds that refills at `share` seconds per second (0.25 is a quarter
of one core) and holds at most `burst_s` of it. Each shadow thread spends what its
calls cost (its own thread CPU time, model and records together); while the bucket is
empty, new shadow runs are refused (the caller drops and counts them as `cpu_budget`), and
what was queued still runs, its cost repaid by the refill. Shadow threads spend under a lock;
the event loop only reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CpuBudget:
    """A token bucket of CPU seconds (see the module docstring)."""

    def __init__(
        self, share: float, *, burst_s: float = 0.05, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if share <= 0 or burst_s <= 0:
            raise ValueError("a CPU budget needs a positive share and burst")
        self.share = share
        self._capacity = share * burst_s
        self._tokens = self._capacity
        self._clock = clock
        self._refilled_at = clock()
        self._spent_s = 0.0
        self._lock = threading.Lock()

    def admits(self) -> bool:
        """Whether a new shadow run may be queued now (the bucket is not empty). A read
        without the lock: the request path asks, and a stale answer is off by one run."""
        return self._tokens + (self._clock() - self._refilled_at) * self.share > 0.0

    def spend(self, cpu_s: float) -> None:
        """Charge `cpu_s` seconds of CPU a shadow thread used (the bucket may go into debt)."""
        with self._lock:
            now = self._clock()
            refilled = self._tokens + (now - self._refilled_at) * self.share
            self._tokens = min(self._capacity, refilled) - cpu_s
            self._refilled_at = now
            self._spent_s += cpu_s

    @property
    def spent_s(self) -> float:
        """CPU seconds shadow runs used since the process started."""
        return self._spent_s
