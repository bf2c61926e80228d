"""Keeping a process's flags in step with the store, and the store with what it is owed.

The flags in force follow the store: reloaded when it notifies a flag write (its change feed,
where it has one) and, as the fallback for a missed notification, when a poll finds its
change counter moved. Each look at the store also writes what waited for it (audit events,
flag-file changes), finishes a start that found no store, and refills a store that came
back empty (a new epoch) from the flags this process last had in force, or from `flags/`.
While the store is unreachable nothing changes: requests are served with the flags in force.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from gateway.control.files import FlagFiles
from gateway.control.in_force import InForce
from gateway.control.outbox import AuditOutbox
from gateway.flags.errors import InvalidFlag
from gateway.flags.validation import validate_flag
from gateway.state import FlagRecord, StoreUnavailable, VersionConflict

if TYPE_CHECKING:
    from gateway.control.releases import ReleaseControl

_log = structlog.get_logger("gateway.control")


class StoreFollower:
    """Follows the store for one `ReleaseControl` (see the module docstring)."""

    def __init__(
        self,
        control: ReleaseControl,
        files: FlagFiles,
        outbox: AuditOutbox,
        poll_interval_s: float,
    ) -> None:
        self._control = control
        self._store = control.store
        self._files = files
        self._outbox = outbox
        self._poll_interval_s = poll_interval_s
        self._epoch: str | None = None
        self._started = False  # seeded from the files and loaded from the store
        self._tasks: list[asyncio.Task[None]] = []
        self.problem: str | None = None
        """Why the store cannot be reached now (None while it answers)."""

    async def start(self) -> None:
        await self._files.start()
        try:
            await self._start_from_store()
        except StoreUnavailable as exc:
            self.problem = str(exc)
            _log.error("store_unavailable_at_start", error=str(exc), serving="flags/ files")
            self._apply_files()
        self._tasks = [asyncio.create_task(self._poll(), name="flag-poller")]
        feed = self._store.change_feed()
        if feed is not None:
            self._tasks.append(asyncio.create_task(self._listen(feed), name="flag-notifications"))

    async def stop(self) -> None:
        await self._files.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(StoreUnavailable):
            await self._outbox.flush()
        if self._outbox.waiting:
            _log.error("audit_events_lost_at_stop", events=self._outbox.waiting)

    async def _start_from_store(self) -> None:
        self._epoch = await self._store.epoch()
        await self._files.seed()
        await self._control.reload()
        self._started = True

    def _apply_files(self) -> None:
        """Put the valid flags of `flags/` in force as they are (no store to write them to)."""
        good: dict[str, InForce] = {}
        for key, flag in self._files.documents().items():
            try:
                release = validate_flag(key, flag, self._control.known_versions)
            except InvalidFlag as exc:
                _log.error("flag_rejected", flag=key, source="flags/", error=str(exc))
                continue
            record = FlagRecord(key=key, flag=flag, version=0, updated_at=0.0, updated_by="file")
            good[key] = InForce(record, release)
        self._control.install(good)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            await self.follow()

    async def _listen(self, feed: AsyncIterator[None]) -> None:
        while True:
            try:
                async for _ in feed:
                    await self.follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("flag_notifications_failed")
            await asyncio.sleep(self._poll_interval_s)

    async def follow(self) -> None:
        """One look at the store (see the module docstring). Never raises."""
        try:
            epoch = await self._store.epoch()
            if self._epoch is not None and epoch != self._epoch:
                await self._restore()
            self._epoch = epoch
            if not self._started:
                await self._start_from_store()
            await self._outbox.flush()
            await self._files.retry()
            if await self._store.change_counter() != self._control.counter:
                await self._control.reload()
        except StoreUnavailable as exc:
            if self.problem is None:
                _log.error("store_unreachable", error=str(exc), serving="the flags in force")
            self.problem = str(exc)
            return
        except Exception:
            _log.exception("flag_poll_failed")
            return
        if self.problem is not None:
            _log.info("store_reachable", audit_events_waiting=self._outbox.waiting)
            self.problem = None

    async def _restore(self) -> None:
        """The store came back empty: write back the flags this process had in force (or,
        if none, the files'), create-only, so that one process's copy wins."""
        known = {key: applied.record.flag for key, applied in self._control.in_force.items()}
        source = "last known state" if known else "flags/"
        if not known:
            known = self._files.documents()
        _log.warning("store_reset_detected", flags=sorted(known), restoring_from=source)
        restored = 0
        for key, flag in known.items():
            try:
                release = validate_flag(key, flag, self._control.known_versions, stored=True)
                await self._store.put_flag(
                    key,
                    flag,
                    expected_version=0,
                    actor="restore",
                    action="restore",
                    reason=f"the store came back empty; restored from this process's {source}",
                    model=release.model,
                )
                restored += 1
            except VersionConflict:
                continue  # another process restored it first
            except InvalidFlag as exc:
                _log.error("flag_not_restored", flag=key, error=str(exc))
        _log.warning("flags_restored", restored=restored, source=source)
        self._control.invalidate()  # reload whatever is stored now
