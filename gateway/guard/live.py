"""The request path's entry point: live stats per model version, and each release's window.

One object per process (built by the composition root). The request path calls `observe`
(and `observe_shadow` for shadow runs); applying flags calls `sync_release` for every release
so that each release has a window for its current flag version; the monitor reads the
windows; feedback joins call `record_feedback`. Every call is O(1) and lock-free (one event
loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.guard.stats import ErrorKind, PairAccuracy, VersionStats
from gateway.guard.window import Arm, ReleaseWindow


class GuardStats:
    """Counters per (model, version) since the process started, served and shadow apart, and
    the current window of each release."""

    def __init__(self) -> None:
        self._served: dict[tuple[str, str], VersionStats] = {}
        self._shadow: dict[tuple[str, str], VersionStats] = {}
        self._windows: dict[str, ReleaseWindow] = {}
        self._pairs: dict[tuple[str, str, str], PairAccuracy] = {}

    # -- flags -------------------------------------------------------------------------------

    def sync_release(
        self,
        model: str,
        flag_version: int,
        *,
        baseline: tuple[str, str],
        candidate: tuple[str, str],
        now: float,
        accuracy_margin: float = 0.0,
    ) -> ReleaseWindow:
        """The release's window for this flag version: the current one, or a new one from
        `now` when the flag version or an arm's (variant, version) changed."""
        window = self._windows.get(model)
        if (
            window is None
            or window.flag_version != flag_version
            or (window.baseline.variant, window.baseline.version) != baseline
            or (window.candidate.variant, window.candidate.version) != candidate
        ):
            window = ReleaseWindow(
                model,
                flag_version,
                now,
                baseline=baseline,
                candidate=candidate,
                accuracy_margin=accuracy_margin,
            )
            self._windows[model] = window
        return window

    def drop_release(self, model: str) -> None:
        """Forget the window of a model that no longer has a release flag."""
        self._windows.pop(model, None)

    # -- request path --------------------------------------------------------------------------

    def observe(
        self,
        model: str,
        version: str,
        variant: str | None,
        latency_s: float | None = None,
        error: ErrorKind | None = None,
        *,
        fallback: bool = False,
    ) -> None:
        """One served request (or one a failing candidate left to the baseline, with
        `fallback=True`): counted for the version, and in the release's window when the
        variant is one of its arms and still serves this version."""
        stats = self._served.get((model, version))
        if stats is None:
            stats = self._served[(model, version)] = VersionStats(version)
        stats.record(latency_s, error, fallback=fallback)
        window = self._windows.get(model)
        if window is not None:
            arm = window.arm_of(variant)
            if arm is not None and window.stats(arm).version == version:
                window.record(arm, latency_s, error, fallback=fallback)

    def observe_shadow(
        self,
        model: str,
        version: str,
        latency_s: float | None = None,
        error: ErrorKind | None = None,
    ) -> None:
        """One shadow run: counted for the version as shadow, never in a window."""
        stats = self._shadow.get((model, version))
        if stats is None:
            stats = self._shadow[(model, version)] = VersionStats(version)
        stats.record(latency_s, error)

    # -- feedback ------------------------------------------------------------------------------

    def record_feedback(
        self,
        model: str,
        version: str,
        correct: int,
        total: int,
        *,
        served: bool,
        variant: str | None = None,
    ) -> None:
        """Labelled predictions of `version` (a `feedback.FeedbackSink`): counted for the
        version, and, when served, in the window's arm of that variant if it still serves
        this version (without a variant, the arm serving the version)."""
        table = self._served if served else self._shadow
        stats = table.get((model, version))
        if stats is None:
            stats = table[(model, version)] = VersionStats(version)
        stats.accuracy.add(correct, total)
        window = self._windows.get(model)
        if not served or window is None:
            return
        arm = window.arm_of(variant) if variant is not None else None
        arms = [arm] if arm is not None else [Arm.CANDIDATE, Arm.BASELINE]
        for candidate_arm in arms:
            if window.stats(candidate_arm).version == version:
                window.record_labels(candidate_arm, correct, total)
                return

    def record_pair_feedback(
        self,
        model: str,
        primary: str,
        shadow: str,
        primary_correct: int,
        shadow_correct: int,
        total: int,
    ) -> None:
        """Labelled rows of one shadowed request: how many the serving version and the shadow
        each got right (a `feedback.FeedbackSink`)."""
        key = (model, primary, shadow)
        self._pairs[key] = self._pairs.get(key, PairAccuracy(0, 0, 0)).added(
            primary_correct, shadow_correct, total
        )

    # -- reads ---------------------------------------------------------------------------------

    def pair_accuracy(self, model: str) -> dict[tuple[str, str], PairAccuracy]:
        """(primary, shadow) -> both sides' accuracy over the same labelled rows."""
        return {(p, s): acc for (m, p, s), acc in self._pairs.items() if m == model}

    def window(self, model: str) -> ReleaseWindow | None:
        return self._windows.get(model)

    def windows(self) -> Mapping[str, ReleaseWindow]:
        return MappingProxyType(self._windows)

    def served(self, model: str) -> dict[str, VersionStats]:
        """Version -> its served counters since the process started."""
        return {v: s for (m, v), s in self._served.items() if m == model}

    def shadowed(self, model: str) -> dict[str, VersionStats]:
        """Version -> its shadow-run counters since the process started."""
        return {v: s for (m, v), s in self._shadow.items() if m == model}
