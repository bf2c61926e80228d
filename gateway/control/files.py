"""The flags directory as a way into the store: seeded at start, then watched.

A flag file goes through the same checks as the admin API (`ReleaseControl.write`): one
that fails them is logged and audited as rejected, and not applied. A change that could not
be written because the store was unreachable waits and is written when it answers again
(the newest change of each flag; files are the source while they change).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.control.outbox import AuditOutbox
from gateway.flags.errors import InvalidFlag
from gateway.guard.errors import OfflineGateRefused
from gateway.state import (
    FlagFileError,
    FlagFilesInvalid,
    FlagFileWatcher,
    StoreUnavailable,
    read_flag_files,
)

_log = structlog.get_logger("gateway.control")


class FileWrite(Protocol):
    """`ReleaseControl.write_from_file`: validate, gate and write one flag from a file."""

    def __call__(self, path: Path, key: str, flag: Any, *, action: str) -> Awaitable[None]: ...


class FlagFiles:
    """Seeds the store from `flags_dir` and applies later edits of its files."""

    def __init__(
        self,
        flags_dir: Path,
        write: FileWrite,
        outbox: AuditOutbox,
        stored_keys: Callable[[], Awaitable[set[str]]],
        applied: Callable[[], Awaitable[None]],
    ) -> None:
        self._flags_dir = flags_dir
        self._write = write
        self._outbox = outbox
        self._stored_keys = stored_keys
        self._applied = applied
        self._watcher = FlagFileWatcher(flags_dir, self._on_change)
        self._waiting: dict[str, tuple[Path, Any, str]] = {}

    async def start(self) -> None:
        """Watch the files (from before the seed, so that no edit in between is lost)."""
        await self._watcher.start()

    async def stop(self) -> None:
        await self._watcher.stop()

    def documents(self) -> dict[str, dict[str, Any]]:
        """Every valid flag of the files, by key (invalid files are logged)."""
        try:
            docs = read_flag_files(self._flags_dir)
        except FlagFilesInvalid as exc:
            for name, error in exc.errors.items():
                _log.error("flag_file_rejected", file=name, error=str(error))
            docs = exc.docs
        return {key: flag for doc in docs.values() for key, flag in doc.flags.items()}

    async def seed(self) -> None:
        """Write the flags the store lacks from the files (StoreUnavailable when it cannot
        be read)."""
        stored = await self._stored_keys()
        try:
            docs = read_flag_files(self._flags_dir)
        except FlagFilesInvalid as exc:
            docs = exc.docs
        for name, doc in docs.items():
            for key, flag in doc.flags.items():
                if key not in stored:
                    await self._guarded_write(Path(name), key, flag, "seed")

    async def retry(self) -> None:
        """Write the changes that waited for the store (StoreUnavailable: they wait on)."""
        for key, (path, flag, action) in list(self._waiting.items()):
            await self._write(path, key, flag, action=action)
            del self._waiting[key]
            _log.info("flag_file_change_written", flag=key, file=path.name)

    async def _on_change(self, path: Path, change: dict[str, Any] | FlagFileError) -> None:
        if isinstance(change, FlagFileError):
            _log.error("flag_file_rejected", file=path.name, error=str(change))
            await self._outbox.append(
                actor=f"file:{path.name}",
                action="file_rejected",
                key="",
                model="",
                reason=str(change),
            )
            return
        flags = change.get("flags")
        if not isinstance(flags, dict):
            return
        for key, flag in flags.items():
            await self._guarded_write(path, key, flag, "file_change")
        await self._applied()

    async def _guarded_write(self, path: Path, key: str, flag: Any, action: str) -> None:
        try:
            await self._write(path, key, flag, action=action)
        except StoreUnavailable as exc:
            self._waiting[key] = (path, flag, action)
            _log.warning("flag_file_change_waiting", flag=key, file=path.name, error=str(exc))
        except (InvalidFlag, OfflineGateRefused) as exc:
            actor = f"file:{path.name}"
            _log.error("flag_rejected", flag=key, source=actor, error=str(exc))
            await self._outbox.append(
                actor=actor, action=f"{action}_rejected", key=key, model="", reason=str(exc)
            )
