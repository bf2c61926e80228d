"""The guard's windows pooled over every process of a gateway (workers and replicas).

Each process counts its own share of a release's traffic in its local window; before the
guard decides, it writes its window's cumulative figures to the store (`WindowTally`,
replacing its previous ones) and reads every process's back, added up (`guard.tally`). So
all processes judge the same pooled figures; the one whose compare-and-set on the flag
version lands first acts, the others find the flag moved. When the store cannot be reached
the guard decides nothing: it cannot see the traffic it would judge.
"""

from __future__ import annotations

import uuid

from gateway.guard import GuardStats
from gateway.guard.tally import pooled, tally_of
from gateway.guard.window import ReleaseWindow
from gateway.state import Store, WindowTally


class WindowPool:
    """This process's windows in the store, and every process's, added up."""

    def __init__(self, store: Store, live: GuardStats, *, process: str | None = None) -> None:
        self._store = store
        self._live = live
        self.process = process or uuid.uuid4().hex
        """This process's name among the figures of a window (one per process start)."""
        self._written: dict[tuple[str, int], WindowTally] = {}

    async def flush(self) -> None:
        """Write every local window whose figures changed since they were last written
        (StoreUnavailable when the store cannot take them: they are written next time)."""
        for model, window in list(self._live.windows().items()):
            key = (model, window.flag_version)
            tally = tally_of(window)
            if self._written.get(key) == tally:
                continue
            await self._store.put_window_tally(model, window.flag_version, self.process, tally)
            self._written[key] = tally
        live = {(model, window.flag_version) for model, window in self._live.windows().items()}
        for key in set(self._written) - live:
            del self._written[key]

    async def pooled(self, window: ReleaseWindow) -> tuple[ReleaseWindow, int]:
        """The window over every process's figures (this one's as just flushed), and how many
        processes contributed to it."""
        tallies = await self._store.window_tallies(window.model, window.flag_version)
        found = pooled(
            window.model,
            window.flag_version,
            tallies,
            accuracy_margin=window.accuracy_margin,
        )
        return (window, 1) if found is None else (found, len(tallies))
