"""Pauses that leave the GIL to the event loop.

A shadow worker's Python work holds the GIL that the event loop serving the primaries needs.
The interpreter takes it from a running thread only after its switch interval (5 ms), and on
a busy machine the OS may preempt the holder for longer still. So a worker pauses between
the stages of a batch, and every `EVERY` records it builds, for long enough that a loop
thread waiting for the GIL is scheduled and takes it. (A zero sleep would not do: the worker
would take the GIL back before the woken loop thread runs, and the loop would wait out the
switch interval.)
"""

from __future__ import annotations

import time

EVERY = 32
"""Records built between two pauses."""
PAUSE_S = 0.0002


def leave_gil() -> None:
    """Let a thread that waits for the GIL take it."""
    time.sleep(PAUSE_S)
