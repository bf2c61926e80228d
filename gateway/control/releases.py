"""Every change to a release flag goes through here: validate, gate, write with its audit
entry, apply.

Every way in (an admin operation, a whole-flag PUT, a flag file, a seed) passes the same
checks: the flag validates (flagd structure, routes to loaded versions, the typed release
policy of its metadata: `gateway.flags.policy`), and a version it brings into a non-baseline
variant passes the offline gate (`gate`) or is forced, audited. A write that fails any of
them changes nothing.

Flags live in the store (the source of truth shared by every worker and replica). This
process applies them to its router after each write it makes, when the store notifies a write
(pub/sub, where it has it) or its change counter moves (polled, the fallback), and when a file
under `flags/` changes (the file is then the source). A stored flag whose policy no longer
parses (written by another version of the gateway) keeps serving its routes with its
automation off, and says so (`release_policy_invalid`).

While the store is unreachable the flags in force stay as they are (requests never need the
store), audit events wait in a bounded outbox, and admin changes fail (StoreUnavailable: 503).
A gateway that starts without its store serves the flags of `flags/` until it answers. A
store that comes back empty (a Redis restarted without persistence: a new epoch) is refilled
from the flags this process last had in force, or from `flags/`, by whichever process gets
there first (a create-only write), and the log says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from gateway.control.files import FlagFiles
from gateway.control.follow import StoreFollower
from gateway.control.gate import OfflineGate
from gateway.control.in_force import InForce
from gateway.control.outbox import AuditOutbox
from gateway.errors import FlagNotFound, ReleaseNotFound
from gateway.flags.document import Release
from gateway.flags.errors import InvalidFlag, InvalidPolicy
from gateway.flags.router import Router
from gateway.flags.validation import validate_flag
from gateway.flags.versions import KnownVersions
from gateway.observability.metrics import GatewayMetrics
from gateway.state import FlagRecord, Store

FlagEdit = Callable[[dict[str, Any]], dict[str, Any]]
_log = structlog.get_logger("gateway.control")


ReloadListener = Callable[[Mapping[str, InForce]], None]

__all__ = ["FlagEdit", "InForce", "ReleaseControl", "ReloadListener"]


class ReleaseControl:
    """Reads, changes and applies release flags; follows the store and the flag files."""

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
        self.known_versions = known_versions
        self._metrics = metrics
        self._gate = gate
        self._in_force: dict[str, InForce] = {}
        self._counter = -1
        self.outbox = AuditOutbox(store)
        files = FlagFiles(flags_dir, self.write_from_file, self.outbox, self._keys, self.reload)
        self._follower = StoreFollower(self, files, self.outbox, poll_interval_s)
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
        """Seed flags the store lacks from `flags/`, apply the store's flags, then follow the
        store and the files (`follow.StoreFollower`)."""
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()
        await self.store.close()

    async def follow(self) -> None:
        """One look at the store now (what the poller does every interval)."""
        await self._follower.follow()

    async def reload(self) -> None:
        """Apply every stored flag to the router; an invalid one keeps its last good form."""
        counter = await self.store.change_counter()
        records = {record.key: record for record in await self.store.list_flags()}
        good: dict[str, InForce] = {}
        for key, record in records.items():
            try:
                release = validate_flag(key, record.flag, self.known_versions, stored=True)
            except InvalidFlag as exc:
                _log.error("stored_flag_invalid", flag=key, version=record.version, error=str(exc))
                previous = self._in_force.get(key)
                if previous is not None:
                    good[key] = previous
                continue
            self._report_policy(record, release)
            good[key] = InForce(record, release)
        self.install(good)
        self._counter = counter

    @property
    def counter(self) -> int:
        """The store's change counter when the flags in force were read."""
        return self._counter

    def invalidate(self) -> None:
        """Make the next look at the store reload, whatever its counter says."""
        self._counter = -1

    def install(self, good: dict[str, InForce]) -> None:
        """Put `good` in force: the router's flags, the listeners', the metrics'."""
        self.router.set_flags({key: applied.record.flag for key, applied in good.items()})
        self._in_force = good
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

    async def write_from_file(self, path: Path, key: str, flag: Any, *, action: str) -> None:
        """A flag from a file, through the same checks as the API (InvalidFlag,
        OfflineGateRefused and StoreUnavailable as they come)."""
        release = validate_flag(key, flag, self.known_versions)
        self._check_one_flag_per_model(key, release.model)
        reason = f"flag file {path.name} changed" if action == "file_change" else "seeded"
        await self._write(key, flag, release, None, f"file:{path.name}", action, reason)

    async def _keys(self) -> set[str]:
        return {record.key for record in await self.store.list_flags()}

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
        release = validate_flag(key, flag, self.known_versions)
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
            return validate_flag(key, flag, self.known_versions)
        except InvalidPolicy:
            current = self._in_force.get(key)
            release = validate_flag(key, flag, self.known_versions, stored=True)
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
