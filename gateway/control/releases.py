"""Every change to a release flag goes through here: validate, gate, write with its audit
entry, apply.

Every way in (an admin operation, a whole-flag PUT, a flag file, a seed) passes the same
checks: the flag validates (flagd structure, routes to loaded versions, the typed release
policy of its metadata: `gateway.flags.policy`), and a version it brings into a non-baseline
variant passes the offline gate (`gate`) or is forced, audited. A write that fails any of
them changes nothing.

Flags live in the store (the source of truth shared by every worker). This process applies
them to its router after each write it makes, when the store's change counter moves (a write
by another worker), and when a file under `flags/` changes (the file is then the source). A
stored flag whose policy no longer parses (written by another version of the gateway) keeps
serving its routes with its automation off, and says so (`release_policy_invalid`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.control.gate import OfflineGate
from gateway.errors import FlagNotFound, ReleaseNotFound
from gateway.flags.document import Release
from gateway.flags.errors import InvalidFlag, InvalidPolicy
from gateway.flags.router import Router
from gateway.flags.validation import validate_flag
from gateway.flags.versions import KnownVersions
from gateway.guard.errors import OfflineGateRefused
from gateway.observability.metrics import GatewayMetrics
from gateway.state import FlagFileError, FlagFilesInvalid, FlagFileWatcher, FlagRecord, Store
from gateway.state.files import read_flag_files

FlagEdit = Callable[[dict[str, Any]], dict[str, Any]]
_log = structlog.get_logger("gateway.control")


@dataclass(frozen=True, slots=True)
class InForce:
    """A flag as stored, and the release it describes, as this process applies it."""

    record: FlagRecord
    release: Release


ReloadListener = Callable[[Mapping[str, InForce]], None]


class ReleaseControl:
    """Reads, changes and applies release flags; owns the file watcher and the store poller."""

    def __init__(
        self,
        store: Store,
        router: Router,
        known_versions: KnownVersions,
        metrics: GatewayMetrics,
        gate: OfflineGate,
        *,
        flags_dir: Path,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.router = router
        self._known_versions = known_versions
        self._metrics = metrics
        self._gate = gate
        self._flags_dir = flags_dir
        self._poll_interval_s = poll_interval_s
        self._in_force: dict[str, InForce] = {}
        self._counter = -1
        self._watcher = FlagFileWatcher(flags_dir, self._on_file_change)
        self._poller: asyncio.Task[None] | None = None
        self._reload_listeners: list[ReloadListener] = []
        self._reported: set[tuple[str, int]] = set()  # stored policies reported invalid

    def on_reload(self, listener: ReloadListener) -> None:
        """Call `listener` with the flags in force (by key) each time they are applied."""
        self._reload_listeners.append(listener)

    @property
    def in_force(self) -> Mapping[str, InForce]:
        """The flags this process applies, by key."""
        return self._in_force

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
        good: dict[str, InForce] = {}
        for key, record in records.items():
            try:
                release = validate_flag(key, record.flag, self._known_versions, stored=True)
            except InvalidFlag as exc:
                _log.error("stored_flag_invalid", flag=key, version=record.version, error=str(exc))
                previous = self._in_force.get(key)
                if previous is not None:
                    good[key] = previous
                continue
            self._report_policy(record, release)
            good[key] = InForce(record, release)
        self.router.set_flags({key: applied.record.flag for key, applied in good.items()})
        self._in_force = good
        self._counter = counter
        for listener in self._reload_listeners:
            listener(dict(good))
        for key, applied in good.items():
            self._metrics.set_flag_version(key, applied.record.version)

    def _report_policy(self, record: FlagRecord, release: Release) -> None:
        """Log, once per flag version, a stored policy that no longer parses."""
        if release.policy.automated or (record.key, record.version) in self._reported:
            return
        self._reported.add((record.key, record.version))
        _log.error(
            "release_policy_invalid",
            flag=record.key,
            model=release.model,
            version=record.version,
            error=release.policy.problem,
            automation="off: no automatic rollback or ramp step until the flag is fixed",
        )

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
        """A flag from a file, through the same checks as the API; one that fails them is
        logged and audited as rejected, and not applied."""
        actor = f"file:{path.name}"
        try:
            release = validate_flag(key, flag, self._known_versions)
            self._check_one_flag_per_model(key, release.model)
            await self._write(
                key,
                flag,
                release,
                None,
                actor,
                action,
                f"flag file {path.name} changed" if action == "file_change" else "seeded",
            )
        except (InvalidFlag, OfflineGateRefused) as exc:
            _log.error("flag_rejected", flag=key, source=actor, error=str(exc))
            await self.store.append_audit(
                actor=actor, action=f"{action}_rejected", key=key, model="", reason=str(exc)
            )

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

    def release_in_force(self, model: str) -> InForce | None:
        """The model's release as this process applies it."""
        return next(
            (applied for applied in self._in_force.values() if applied.release.model == model),
            None,
        )

    # -- changes -------------------------------------------------------------------------------

    async def replace(
        self,
        key: str,
        flag: Any,
        *,
        expected_version: int | None,
        actor: str,
        reason: str,
        force: bool = False,
    ) -> FlagRecord:
        """Replace (or create) a whole flag; nothing changes unless it validates and passes
        the offline gate (or `force` overrides it, audited)."""
        release = validate_flag(key, flag, self._known_versions)
        self._check_one_flag_per_model(key, release.model)
        return await self._write(
            key, flag, release, expected_version, actor, "replace", reason, force=force
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
        force: bool = False,
    ) -> FlagRecord:
        """Apply a release operation to the model's flag, as one validated, gated, versioned
        write."""
        record = await self.release_record(model)
        flag = edit(record.flag)
        release = self._validate_edit(record.key, flag)
        expected = record.version if expected_version is None else expected_version
        return await self._write(
            record.key, flag, release, expected, actor, action, reason, evidence, force=force
        )

    def _validate_edit(self, key: str, flag: dict[str, Any]) -> Release:
        """An operation may not bring in a bad policy entry, but one the stored flag already
        had (written by another version of the gateway) never blocks it: a release whose
        automation is off must still be rolled back, disabled or fixed by hand."""
        try:
            return validate_flag(key, flag, self._known_versions)
        except InvalidPolicy:
            current = self._in_force.get(key)
            release = validate_flag(key, flag, self._known_versions, stored=True)
            if current is None or release.policy.problem != current.release.policy.problem:
                raise
            return release

    async def _write(
        self,
        key: str,
        flag: dict[str, Any],
        release: Release,
        expected_version: int | None,
        actor: str,
        action: str,
        reason: str,
        evidence: dict[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> FlagRecord:
        current = self._in_force.get(key)
        forced = self._gate.check(current.release if current else None, release, force=force)
        if forced is not None:
            action, evidence = f"{action}_forced", (evidence or {}) | forced
        record = await self.store.put_flag(
            key,
            flag,
            expected_version=expected_version,
            actor=actor,
            action=action,
            reason=reason,
            model=release.model,
            evidence=evidence,
        )
        _log.info(
            "flag_changed",
            flag=key,
            model=release.model,
            version=record.version,
            actor=actor,
            action=action,
        )
        await self.reload()
        return record

    def _check_one_flag_per_model(self, key: str, model: str) -> None:
        for other_key, applied in self._in_force.items():
            if other_key != key and applied.release.model == model:
                raise InvalidFlag(
                    f"flag {key!r}: model {model!r} already has its release flag {other_key!r}"
                )
