"""Flag records, audit entries and the one `Store` protocol every implementation satisfies.

The same contract suite (`tests/test_store_contract.py`) runs over every implementation: the
embedded SQLite store today, Redis when several machines share one release.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec

DiffFn = Callable[[Any, Any], list[dict[str, Any]]]
"""A pure function `(before, after) -> diff`; `before` is None when the flag is new."""


class FlagRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One flag as stored: the flagd flag object, its version (1 on creation) and its last write."""

    key: str
    flag: dict[str, Any]
    version: int
    updated_at: float
    updated_by: str


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the append-only audit log: who did what, when, why, and the diff it made.

    `version_before` is None for a new flag, and both versions are None for an event that did not
    write a flag (a rejected file change, a guard decision).
    """

    id: int
    at: float
    actor: str
    action: str
    key: str
    model: str
    reason: str
    version_before: int | None
    version_after: int | None
    diff: list[dict[str, Any]]
    evidence: dict[str, Any] | None


def whole_value_diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """The coarsest diff: nothing when equal, else one operation carrying both whole values.

    The default of the stores; the composition root injects a finer one.
    """
    if before == after:
        return []
    op = "add" if before is None else "replace"
    return [{"op": op, "path": "", "before": before, "after": after}]


class Store(Protocol):
    """Flags with versions, and the audit log. Every write of a flag is one atomic transaction."""

    async def get_flag(self, key: str) -> FlagRecord | None:
        """The flag under `key`, or None."""
        ...

    async def list_flags(self) -> list[FlagRecord]:
        """Every flag, ordered by key."""
        ...

    async def put_flag(
        self,
        key: str,
        flag: dict[str, Any],
        *,
        expected_version: int | None,
        actor: str,
        action: str,
        reason: str,
        model: str,
        evidence: dict[str, Any] | None = None,
    ) -> FlagRecord:
        """Write `flag` under `key` at the next version, with its audit entry, in one transaction.

        `expected_version`: None writes whatever is stored; 0 requires that the key does not exist;
        n requires that it is at version n. Otherwise raise `VersionConflict` and write nothing.
        A flag equal to the stored one writes nothing (no version, no audit) and returns the
        stored record.
        """
        ...

    async def audit(self, *, model: str | None = None, limit: int = 50) -> list[AuditEntry]:
        """The newest `limit` audit entries (for `model` when given), newest first."""
        ...

    async def append_audit(
        self,
        *,
        actor: str,
        action: str,
        key: str,
        model: str,
        reason: str,
        diff: list[dict[str, Any]] | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """Record an event that wrote no flag (a rejected change, a guard decision)."""
        ...

    async def change_counter(self) -> int:
        """A number that grows on every flag write, in any process sharing the store."""
        ...

    async def close(self) -> None:
        """Release the store's resources; calling it twice is harmless."""
        ...
