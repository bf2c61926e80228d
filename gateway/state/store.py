"""Flag records, audit entries, shadow comparisons, and the one `Store` protocol.

The same contract suite (`tests/test_store_contract.py`) runs over every implementation: the
embedded SQLite store today, Redis when several machines share one release.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, Protocol

import msgspec

from gateway.state.shared import Claim, ShadowLabels, StoredPrediction, WindowTally

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


ComparisonOutcome = Literal["compared", "shadow_error", "timeout", "primary_error"]
"""How a shadow run ended: both sides answered and were compared; the shadow raised or broke
its output signature; the shadow outlived its timeout; the primary failed (the shadow ran)."""


# Comparison records are plain data that never refer back to themselves: gc=False keeps the
# garbage collector from tracking (and scanning) the thousands shadow mode holds between flushes.
class TensorData(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A tensor as kept in a record: shape, V2 datatype and row-major data.

    `data` is None when the tensor was larger than the bound on what a record keeps.
    """

    shape: list[int]
    datatype: str
    data: list[Any] | None = None


class OutputRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One side's answer: its top class per row (None for a model without a class output)
    and its output tensors (their data dropped when over the bound)."""

    classes: list[str] | None = None
    tensors: dict[str, TensorData] = {}


class ComparisonRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One shadowed request: the primary's answer beside one shadow version's.

    `agreed_rows` and `agree` are None when the two could not be compared (an error on either
    side, or no class output). `at` is when the primary answered (seconds since the epoch).
    `inputs` are kept only when the release says so and they fit its bound; `inputs_dropped`
    says they were asked for but were too large. The payload fields (`primary_output`,
    `shadow_output`, `inputs`) are None in reads that ask for no payload.
    """

    request_id: str
    at: float
    model: str
    primary_version: str
    shadow_version: str
    outcome: ComparisonOutcome
    variant: str = ""
    cohort: str = ""
    context: dict[str, str | int | float | bool] = {}
    rows: int = 0
    agreed_rows: int | None = None
    agree: bool | None = None
    max_abs_diff: float | None = None
    primary_latency_ms: float | None = None
    shadow_latency_ms: float | None = None
    primary_error: str = ""
    shadow_error: str = ""
    primary_output: OutputRecord | None = None
    shadow_output: OutputRecord | None = None
    inputs: dict[str, TensorData] | None = None
    inputs_dropped: bool = False


def whole_value_diff(before: Any, after: Any) -> list[dict[str, Any]]:
    """The coarsest diff: nothing when equal, else one operation carrying both whole values.

    The default of the stores; the composition root injects a finer one.
    """
    if before == after:
        return []
    op = "add" if before is None else "replace"
    return [{"op": op, "path": "", "before": before, "after": after}]


class Store(Protocol):
    """Flags with versions, the audit log, shadow comparisons, and what the processes of one
    gateway share (`gateway.state.shared`): predictions waiting for feedback, guard windows.

    Every write of a flag is one atomic transaction; comparisons, predictions and window
    figures are written in batches, off the request path.
    """

    async def epoch(self) -> str:
        """An id of the store's data: the same while it keeps its data, a new one when it
        comes back empty (a Redis restarted without persistence)."""
        ...

    def change_feed(self) -> AsyncIterator[None] | None:
        """A stream that yields once per flag write made anywhere (pub/sub), or None when
        the store has none (then callers poll `change_counter`). It may miss a notification
        (a dropped connection): polling stays the fallback."""
        ...

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
        at: float | None = None,
    ) -> AuditEntry:
        """Record an event that wrote no flag (a rejected change, a guard decision); `at`
        when it happened (now by default: an event that waited for the store keeps its
        time)."""
        ...

    async def change_counter(self) -> int:
        """A number that grows on every flag write, in any process sharing the store."""
        ...

    async def add_comparisons(self, records: Sequence[ComparisonRecord]) -> None:
        """Append a batch of comparison records, all or none."""
        ...

    async def comparisons(
        self,
        model: str,
        *,
        since: float | None = None,
        until: float | None = None,
        primary: str | None = None,
        shadow: str | None = None,
        disagreements_only: bool = False,
        payload: bool = True,
        limit: int | None = None,
    ) -> list[ComparisonRecord]:
        """The model's records with `since <= at < until`, newest first (by `at`).

        `primary`/`shadow` keep one version on that side; `disagreements_only` keeps records
        whose top classes differ (`agree` is False); `payload=False` leaves `primary_output`,
        `shadow_output` and `inputs` None (summaries need none of them); `limit` None: all.
        """
        ...

    async def prune_comparisons(
        self, *, older_than: float | None = None, keep_newest: int | None = None
    ) -> int:
        """Delete records with `at < older_than`, then all but the `keep_newest` most recently
        written; return how many were deleted."""
        ...

    async def add_predictions(
        self,
        model: str,
        predictions: Sequence[StoredPrediction],
        *,
        keep_s: float,
        max_entries: int,
    ) -> None:
        """Keep predictions for feedback to claim: each for `keep_s` seconds after its `at`,
        and the `max_entries` most recent of a model at most; a request id stored again
        replaces the older prediction."""
        ...

    async def add_shadow_labels(self, model: str, labels: Sequence[ShadowLabels]) -> None:
        """Add shadows' predictions to stored predictions (ignored for one not stored)."""
        ...

    async def claim_predictions(self, model: str, request_ids: Sequence[str]) -> dict[str, Claim]:
        """Claim each prediction for feedback, atomically: the first claim of a request id
        gets its prediction, every later one (from any process) "duplicate"; an id never
        stored, or no longer, is "unknown"."""
        ...

    async def put_window_tally(
        self, model: str, flag_version: int, process: str, tally: WindowTally
    ) -> None:
        """Replace `process`'s figures of the release window (model, flag version)."""
        ...

    async def window_tallies(self, model: str, flag_version: int) -> list[WindowTally]:
        """Every process's latest figures of the window (empty when there are none)."""
        ...

    async def close(self) -> None:
        """Release the store's resources; calling it twice is harmless."""
        ...
