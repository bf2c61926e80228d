"""Every change to a release flag goes through here: validate, write with its audit entry, apply.

Flags live in the store (the source of truth shared by every worker). This process applies
them to its router after each write it makes, when the store's change counter moves (a write
by another worker), and when a file under `flags/` changes (the file is then the source).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import FlagNotFound, ReleaseNotFound
from gateway.flags.errors import InvalidFlag
from gateway.flags.router import Router
from gateway.flags.validation import validate_flag
from gateway.flags.versions import KnownVersions
from gateway.observability.metrics import GatewayMetrics
from gateway.state import FlagFileError, FlagFilesInvalid, FlagFileWatcher, FlagRecord, Store
from gateway.state.files import read_flag_files

FlagEdit = Callable[[dict[str, Any]], dict[str, Any]]
_log = structlog.get_logger("gateway.control")


class ReleaseControl:
    """Reads, changes and applies release flags; owns the file watcher and the store poller."""

    def __init__(
        self,
        store: Store,
        router: Router,
        known_versions: KnownVersions,
        metrics: GatewayMetrics,
        *,
        flags_dir: Path,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.router = router
        self._known_versions = known_versions
        self._metrics = metrics
        self._flags_dir = flags_dir
        self._poll_interval_s = poll_interval_s
        self._records: dict[str, FlagRecord] = {}
        self._counter = -1
        self._watcher = FlagFileWatcher(flags_dir, self._on_file_change)
        self._poller: asyncio.Task[None] | None = None
        self._reload_listeners: list[Callable[[dict[str, FlagRecord]], None]] = []

    def on_reload(self, listener: Callable[[dict[str, FlagRecord]], None]) -> None:
        """Call `listener` with the flags in force (by key) each time they are applied."""
        self._reload_listeners.append(listener)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Seed flags the store lacks from `flags/`, apply the store's flags, start watching."""
        await self._watcher.start()
        await self._seed_from_files()
        await self.reload()
        self._poller = asyncio.create_task(self._poll(), name="flag-poller")

    async def stop(self) -> None:
        await self._watcher.stop()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.store.close()

    async def reload(self) -> None:
        """Apply every stored flag to the router; an invalid one keeps its last good form."""
        counter = await self.store.change_counter()
        records = {record.key: record for record in await self.store.list_flags()}
        good: dict[str, FlagRecord] = {}
        for key, record in records.items():
            try:
                validate_flag(key, record.flag, self._known_versions)
            except InvalidFlag as exc:
                _log.error("stored_flag_invalid", flag=key, version=record.version, error=str(exc))
                previous = self._records.get(key)
                if previous is not None:
                    good[key] = previous
                continue
            good[key] = record
        self.router.set_flags({key: record.flag for key, record in good.items()})
        self._records = good
        self._counter = counter
        for listener in self._reload_listeners:
            listener(dict(good))
        for key, record in good.items():
            self._metrics.set_flag_version(key, record.version)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                if await self.store.change_counter() != self._counter:
                    await self.reload()
            except Exception:
                _log.exception("flag_poll_failed")

    # -- files -------------------------------------------------------------------------------

    async def _seed_from_files(self) -> None:
        try:
            docs = read_flag_files(self._flags_dir)
        except FlagFilesInvalid as exc:
            for name, error in exc.errors.items():
                _log.error("flag_file_rejected", file=name, error=str(error))
            docs = exc.docs
        stored = {record.key for record in await self.store.list_flags()}
        for name, doc in docs.items():
            for key, flag in doc.flags.items():
                if key not in stored:
                    await self._write_from_file(Path(name), key, flag, action="seed")

    async def _on_file_change(self, path: Path, change: dict[str, Any] | FlagFileError) -> None:
        if isinstance(change, FlagFileError):
            _log.error("flag_file_rejected", file=path.name, error=str(change))
            await self.store.append_audit(
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
            await self._write_from_file(path, key, flag, action="file_change")
        await self.reload()

    async def _write_from_file(self, path: Path, key: str, flag: Any, *, action: str) -> None:
        actor = f"file:{path.name}"
        try:
            release = validate_flag(key, flag, self._known_versions)
            self._check_one_flag_per_model(key, release.model)
        except InvalidFlag as exc:
            _log.error("flag_rejected", flag=key, source=actor, error=str(exc))
            await self.store.append_audit(
                actor=actor, action=f"{action}_rejected", key=key, model="", reason=str(exc)
            )
            return
        record = await self.store.put_flag(
            key,
            flag,
            expected_version=None,
            actor=actor,
            action=action,
            reason=f"flag file {path.name} changed" if action == "file_change" else "seeded",
            model=release.model,
        )
        _log.info("flag_changed", flag=key, version=record.version, actor=actor, action=action)

    # -- reads ---------------------------------------------------------------------------------

    async def flags(self) -> list[FlagRecord]:
        return await self.store.list_flags()

    async def flag(self, key: str) -> FlagRecord:
        record = await self.store.get_flag(key)
        if record is None:
            raise FlagNotFound(f"no flag {key!r}")
        return record

    async def release_record(self, model: str) -> FlagRecord:
        for record in await self.store.list_flags():
            if record.flag.get("metadata", {}).get("model") == model:
                return record
        raise ReleaseNotFound(f"no release flag names model {model!r}")

    # -- changes -------------------------------------------------------------------------------

    async def replace(
        self, key: str, flag: Any, *, expected_version: int | None, actor: str, reason: str
    ) -> FlagRecord:
        """Replace (or create) a whole flag; nothing changes unless it validates."""
        release = validate_flag(key, flag, self._known_versions)
        self._check_one_flag_per_model(key, release.model)
        return await self._write(
            key, flag, release.model, expected_version, actor, "replace", reason
        )

    async def edit(
        self,
        model: str,
        edit: FlagEdit,
        *,
        action: str,
        expected_version: int | None,
        actor: str,
        reason: str,
        evidence: dict[str, Any] | None = None,
    ) -> FlagRecord:
        """Apply a release operation to the model's flag, as one validated, versioned write."""
        record = await self.release_record(model)
        flag = edit(record.flag)
        validate_flag(record.key, flag, self._known_versions)
        expected = record.version if expected_version is None else expected_version
        return await self._write(record.key, flag, model, expected, actor, action, reason, evidence)

    async def _write(
        self,
        key: str,
        flag: dict[str, Any],
        model: str,
        expected_version: int | None,
        actor: str,
        action: str,
        reason: str,
        evidence: dict[str, Any] | None = None,
    ) -> FlagRecord:
        record = await self.store.put_flag(
            key,
            flag,
            expected_version=expected_version,
            actor=actor,
            action=action,
            reason=reason,
            model=model,
            evidence=evidence,
        )
        _log.info(
            "flag_changed",
            flag=key,
            model=model,
            version=record.version,
            actor=actor,
            action=action,
        )
        await self.reload()
        return record

    def _check_one_flag_per_model(self, key: str, model: str) -> None:
        for other_key, record in self._records.items():
            if other_key != key and record.flag.get("metadata", {}).get("model") == model:
                raise InvalidFlag(
                    f"flag {key!r}: model {model!r} already has its release flag {other_key!r}"
                )
