"""Ground truth for earlier predictions: a bounded log of what was predicted, joined to labels.

The request path records each prediction (O(1)): the request id, the model, the version and
variant that served, the predicted labels (one per row of the request), and later the
labels of the versions that shadowed it. Feedback (`POST /v2/models/{model}/feedback`) joins
true labels to those records and adds to each version's live accuracy through a
`FeedbackSink` (`live.GuardStats`). The log holds at most `max_entries` predictions for at
most `ttl_s` seconds; ids it no longer holds are reported as expired (as long as it still
remembers them: up to `max_entries` more) and ids it never saw as unknown. Each prediction
takes feedback once; a second label for it is reported as a duplicate.

Labels compare by their text, so 3 and "3" are the same label. A request id is scoped to its
model; a client that reuses an id replaces the older prediction.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

import msgspec

Label = str | int
_NO_SHADOWS: Mapping[str, tuple[str, ...]] = MappingProxyType({})


class FeedbackItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of a feedback request: a prediction's id and its true label (a list, one per
    row, for a request of several rows)."""

    id: str
    label: Label | list[Label]


class VersionFeedback(msgspec.Struct):
    """Labels joined for one version by one feedback call."""

    version: str
    served: bool
    """True for the version that answered, False for one that shadowed it."""
    correct: int = 0
    total: int = 0


class InvalidFeedback(msgspec.Struct, frozen=True):
    id: str
    reason: str


class FeedbackResult(msgspec.Struct):
    """What a feedback call did: how many ids joined, per version, and every id that did not."""

    accepted: int = 0
    versions: dict[str, VersionFeedback] = msgspec.field(default_factory=dict)
    """Keyed by version, with shadows as '<version>:shadow'."""
    unknown: list[str] = msgspec.field(default_factory=list)
    expired: list[str] = msgspec.field(default_factory=list)
    duplicate: list[str] = msgspec.field(default_factory=list)
    invalid: list[InvalidFeedback] = msgspec.field(default_factory=list)


def score(
    sink: FeedbackSink | None,
    result: FeedbackResult,
    model: str,
    item: FeedbackItem,
    version: str,
    variant: str | None,
    labels: tuple[str, ...],
    shadows: Mapping[str, tuple[str, ...]],
) -> bool:
    """Join `item`'s true labels to what `version` (through `variant`) predicted, `labels`,
    and what each shadow did: counted into `result` and `sink`. False (and `result.invalid`
    says why) when the labels do not match the prediction's rows."""
    truth = tuple(map(str, item.label)) if isinstance(item.label, list) else (str(item.label),)
    if len(truth) != len(labels):
        result.invalid.append(
            InvalidFeedback(
                item.id, f"{len(truth)} label(s) for a prediction of {len(labels)} row(s)"
            )
        )
        return False
    result.accepted += 1
    served = _count(sink, result, model, version, labels, truth, served=True, variant=variant)
    for shadow, shadow_labels in shadows.items():
        if len(shadow_labels) == len(truth):
            right = _count(sink, result, model, shadow, shadow_labels, truth, served=False)
            if sink is not None:
                sink.record_pair_feedback(model, version, shadow, served, right, len(truth))
    return True


def _count(
    sink: FeedbackSink | None,
    result: FeedbackResult,
    model: str,
    version: str,
    predicted: tuple[str, ...],
    truth: tuple[str, ...],
    *,
    served: bool,
    variant: str | None = None,
) -> int:
    """Count `predicted` against `truth` for `version`; how many were right."""
    name = version if served else f"{version}:shadow"
    summary = result.versions.get(name)
    if summary is None:
        summary = result.versions[name] = VersionFeedback(version, served)
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    summary.correct += correct
    summary.total += len(truth)
    if sink is not None:
        sink.record_feedback(model, version, correct, len(truth), served=served, variant=variant)
    return correct


class FeedbackSink(Protocol):
    """Where joined labels go (`live.GuardStats` is one)."""

    def record_feedback(
        self,
        model: str,
        version: str,
        correct: int,
        total: int,
        *,
        served: bool,
        variant: str | None = None,
    ) -> None: ...

    def record_pair_feedback(
        self,
        model: str,
        primary: str,
        shadow: str,
        primary_correct: int,
        shadow_correct: int,
        total: int,
    ) -> None: ...


class _Prediction(msgspec.Struct, gc=False):
    """One logged prediction. Untracked by the garbage collector: the log keeps up to
    `max_entries` of them for as long as a day, and as tracked objects they filled the
    collector's older generations, whose collections then held the event loop for tens of
    milliseconds (shadow mode's benchmark showed them in its p99). An entry refers only to
    strings, tuples of strings and a dict of those, so it is never part of a cycle."""

    version: str
    variant: str | None
    labels: tuple[str, ...]
    at: float
    shadows: dict[str, tuple[str, ...]] | None = None  # made by the first shadow's labels
    answered: bool = False


class PredictionLog:
    """Predictions by (model, request id), bounded in number and age."""

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        ttl_s: float = 24 * 3600.0,
        sink: FeedbackSink | None = None,
    ) -> None:
        if max_entries < 1 or not ttl_s > 0:
            raise ValueError("a prediction log needs max_entries >= 1 and ttl_s > 0")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        # A full log evicts down to this many at once (1 % below capacity), so that it
        # pays for an eviction once a slice of records rather than once a record.
        self._low_water = max_entries - max(1, max_entries // 100)
        self._sink = sink
        self._entries: OrderedDict[tuple[str, str], _Prediction] = OrderedDict()
        self._gone: OrderedDict[tuple[str, str], None] = OrderedDict()
        # When the oldest entry expires (-inf: not known, look at the next record).
        self._oldest_expires = -math.inf

    def __len__(self) -> int:
        return len(self._entries)

    def record(
        self,
        model: str,
        request_id: str,
        version: str,
        labels: Sequence[Label],
        *,
        now: float,
        variant: str | None = None,
    ) -> None:
        """The prediction `version` served (through `variant`) for `request_id`."""
        key = (model, request_id)
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        entries[key] = _Prediction(version, variant, tuple(map(str, labels)), now)
        if self._gone:
            self._gone.pop(key, None)
        if len(entries) > self.max_entries or now > self._oldest_expires:
            self._evict(now)

    def record_shadow(
        self, model: str, request_id: str, version: str, labels: Sequence[Label]
    ) -> None:
        """What `version` predicted for the same request as a shadow (dropped when the
        prediction is no longer held)."""
        entry = self._entries.get((model, request_id))
        if entry is not None:
            if entry.shadows is None:
                entry.shadows = {}
            entry.shadows[version] = tuple(map(str, labels))

    def join(self, model: str, items: Sequence[FeedbackItem], now: float) -> FeedbackResult:
        """Join true labels to the predictions of `model` they name; report every id that
        does not join, and why."""
        result = FeedbackResult()
        self._evict(now)
        for item in items:
            key = (model, item.id)
            entry = self._entries.get(key)
            if entry is None:
                (result.expired if key in self._gone else result.unknown).append(item.id)
                continue
            if now - entry.at > self.ttl_s:
                self._forget(key)
                result.expired.append(item.id)
                continue
            if entry.answered:
                result.duplicate.append(item.id)
                continue
            if score(
                self._sink,
                result,
                model,
                item,
                entry.version,
                entry.variant,
                entry.labels,
                entry.shadows or _NO_SHADOWS,
            ):
                entry.answered = True
        self._trim_gone()
        return result

    def _evict(self, now: float) -> None:
        """Drop the oldest predictions while they are too old, and while there are too many:
        beyond capacity, down to the low-water mark."""
        entries = self._entries
        keep = self.max_entries if len(entries) <= self.max_entries else self._low_water
        oldest_allowed = now - self.ttl_s
        self._oldest_expires = -math.inf
        while entries:
            key = next(iter(entries))
            at = entries[key].at
            if len(entries) <= keep and at >= oldest_allowed:
                # Until then no entry is too old (later ones are younger), so `record`
                # need not look.
                self._oldest_expires = at + self.ttl_s
                break
            self._forget(key)
        self._trim_gone()

    def _forget(self, key: tuple[str, str]) -> None:
        """Drop an entry and remember its id as gone (a held id is never in `_gone`:
        `record` takes it out), until `_trim_gone` forgets the oldest of those."""
        del self._entries[key]
        self._gone[key] = None

    def _trim_gone(self) -> None:
        gone = self._gone
        for _ in range(len(gone) - self.max_entries):
            gone.popitem(last=False)
