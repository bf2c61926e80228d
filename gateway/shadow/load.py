"""How busy the primary is, so shadow work runs only on capacity the primary leaves spare.

The primary runs inline on the event loop's thread, so that thread is the primary's
bottleneck: its CPU time over wall time (its utilisation) says how close the gateway is to its
maximum throughput. A concurrency budget alone cannot say it: short shadow runs free their
slots at once, and at full load they would still take CPU and the GIL from every request.

`LoopLoad` samples the loop thread's demand on the loop itself a few times a second and
smooths it. Demand is CPU time plus time spent runnable but waiting for a CPU (Linux's
`/proc/thread-self/schedstat`): on a machine whose CPUs other processes hold, the loop's CPU
time falls while its requests queue up, and CPU time alone would then admit more shadows
exactly when there is least room for them. Elsewhere demand is the thread's CPU time.

The shadow workers' own demand is added to it: their Python work holds the GIL the loop
needs, and while the loop waits for the GIL it is neither running nor runnable, so its own
demand drops as shadow work grows (all the more when the OS preempts a worker that holds the
GIL). Counting the workers' demand as the loop's (an overestimate: a model's prediction
releases the GIL) keeps that from feeding on itself.

Shadow runs are admitted while this load is below `shed_start`, refused above `shed_full`,
and in between admitted with a probability that falls linearly to 0; `shed_start` 1
switches shedding off.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable

SCHEDSTAT = "/proc/thread-self/schedstat"


class _SchedStat:
    """The calling thread's schedstat file, open for as long as the thread lives."""

    def __init__(self) -> None:
        self.fd = os.open(SCHEDSTAT, os.O_RDONLY)

    def __del__(self) -> None:  # the thread ended: its thread-local state goes
        os.close(self.fd)


_files = threading.local()


def thread_demand_s() -> float:
    """Seconds the calling thread has run or waited to run on a CPU (its CPU time where the
    scheduler's statistics are not available).

    The file is opened once per thread and re-read from its start: opening a /proc file
    costs tens of microseconds, and the workers read theirs once a batch."""
    try:
        stat = getattr(_files, "schedstat", None)
        if stat is None:
            stat = _files.schedstat = _SchedStat()
        running_ns, waiting_ns, _ = os.pread(stat.fd, 128, 0).split()
    except (OSError, ValueError):
        return time.thread_time()
    return (int(running_ns) + int(waiting_ns)) / 1e9


class LoopLoad:
    """The event loop thread's smoothed utilisation, and the admission rule built on it."""

    def __init__(
        self,
        *,
        shed_start: float,
        shed_full: float,
        interval_s: float = 0.05,
        smoothing: float = 0.5,
        rng: random.Random | None = None,
        cpu_clock: Callable[[], float] = thread_demand_s,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < shed_start <= shed_full:
            raise ValueError("need 0 < shed_start <= shed_full")
        self.shed_start = shed_start
        self.shed_full = shed_full
        self.interval_s = interval_s
        self._smoothing = smoothing
        self._random = (rng or random.Random()).random  # noqa: S311 - sampling, not secrets
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self.busy = 0.0
        """The loop's smoothed demand with the shadows' CPU, 0..1."""
        self._last: tuple[float, float, float] | None = None
        self._lock = threading.Lock()
        self._shadow_cpu_s = 0.0

    def add_shadow_cpu(self, seconds: float) -> None:
        """Count a shadow worker's demand (CPU, and waiting for one) for a batch; called from
        the workers."""
        with self._lock:
            self._shadow_cpu_s += seconds

    def sample(self) -> float:
        """Read the clocks (on the loop's thread) and update `busy`; returns it."""
        with self._lock:
            shadow = self._shadow_cpu_s
        now = (self._cpu_clock(), self._wall_clock(), shadow)
        last, self._last = self._last, now
        if last is not None and now[1] > last[1]:
            demand = (now[0] - last[0]) + (now[2] - last[2])
            utilisation = min(max(demand / (now[1] - last[1]), 0.0), 1.0)
            self.busy += self._smoothing * (utilisation - self.busy)
        return self.busy

    def admit(self) -> bool:
        """Whether one more shadow run fits the capacity the primary leaves."""
        busy = self.busy
        if busy < self.shed_start or self.shed_start >= 1.0:
            return True
        if busy >= self.shed_full:
            return False
        return self._random() * (self.shed_full - self.shed_start) < self.shed_full - busy

    async def run(self, on_sample: Callable[[float], None] | None = None) -> None:
        """Sample every `interval_s` until cancelled (a task on the loop being measured)."""
        self.sample()
        while True:
            await asyncio.sleep(self.interval_s)
            busy = self.sample()
            if on_sample is not None:
                on_sample(busy)
