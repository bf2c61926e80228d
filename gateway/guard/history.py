"""The guard's recent decisions per model, for the admin API and the dashboard."""

from __future__ import annotations

import collections
from typing import Any

import msgspec

from gateway.guard.decision import Decision, DecisionKind


class RecordedDecision(msgspec.Struct, frozen=True, kw_only=True):
    """A decision as the admin API shows it: when, under which flag version, what and why,
    what the monitor did about it, and how many consecutive looks agreed."""

    at: float
    flag_version: int
    kind: DecisionKind
    reason: str
    action: str | None
    looks: int
    evidence: dict[str, Any]


class DecisionHistory:
    """The last `size` decisions per model. Consecutive looks with the same kind, flag version
    and no action fold into one entry (the newest figures, `looks` counting them)."""

    def __init__(self, size: int = 50) -> None:
        self._size = size
        self._recent: dict[str, collections.deque[RecordedDecision]] = {}

    def record(
        self,
        model: str,
        flag_version: int,
        decision: Decision,
        action: str | None,
        now: float,
    ) -> bool:
        """Keep one look; True when its kind differs from the previous look's."""
        recent = self._recent.get(model)
        if recent is None:
            recent = self._recent[model] = collections.deque(maxlen=self._size)
        last = recent[-1] if recent else None
        fold = (
            last is not None
            and action is None
            and last.action is None
            and last.kind == decision.kind
            and last.flag_version == flag_version
        )
        entry = RecordedDecision(
            at=now,
            flag_version=flag_version,
            kind=decision.kind,
            reason=decision.reason,
            action=action,
            looks=last.looks + 1 if fold and last is not None else 1,
            evidence=decision.evidence,
        )
        if fold:
            recent[-1] = entry
        else:
            recent.append(entry)
        return last is None or last.kind != decision.kind

    def recent(self, model: str) -> list[RecordedDecision]:
        """Newest first."""
        return list(reversed(self._recent.get(model, ())))

    def last(self, model: str) -> RecordedDecision | None:
        recent = self._recent.get(model)
        return recent[-1] if recent else None
