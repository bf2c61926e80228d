"""The offline gate on every write path: a version that starts to serve a non-baseline variant
must not be worse offline than the baseline (its manifest's metrics), unless forced.

A rollout, a ramp, a whole-flag PUT, a flag file and a seed all reach it through
`ReleaseControl`, so the gate cannot be side-stepped. It judges only versions a write brings
into a non-baseline variant: a later step of the same candidate, a cohort, a shadow, a
rollback or a promotion leave it alone. `force` (the API's) or the release's
`guard.offlineOverride` naming the version (what a flag file can say) let a refused version
through; the comparison then goes into the audit entry as the override's evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.errors import GatewayError
from gateway.flags.document import Release
from gateway.guard.offline_gate import check_offline
from gateway.repository import ModelRegistry
from gateway.repository.manifest import Manifest

ManifestLookup = Callable[[str, str], Manifest | None]
"""(model, version) -> its manifest (None when there is none to judge by)."""


def registry_manifests(registry: ModelRegistry) -> ManifestLookup:
    def lookup(model: str, version: str) -> Manifest | None:
        try:
            return registry.version(model, version).manifest
        except GatewayError:
            return None  # an unknown version: flag validation refuses it with its own words

    return lookup


class OfflineGate:
    """Judges the versions a release write brings in (see the module docstring)."""

    def __init__(self, manifests: ManifestLookup) -> None:
        self._manifests = manifests

    def check(
        self, before: Release | None, after: Release, *, force: bool
    ) -> dict[str, Any] | None:
        """Raise OfflineGateRefused for a version `after` brings into a non-baseline variant
        that is worse offline than its baseline; the evidence of each forced override, for
        the audit entry (None when nothing was forced)."""
        baseline = after.baseline_route.serve
        served_before = _non_baseline(before) if before is not None else set()
        forced: list[dict[str, Any]] = []
        for version in sorted(_non_baseline(after) - served_before - {baseline}):
            base = self._manifests(after.model, baseline)
            cand = self._manifests(after.model, version)
            if base is None or cand is None:
                continue
            policy = after.policy.guard
            comparison = check_offline(
                base,
                cand,
                policy,
                force=force or version in policy.offline_override,
                baseline_version=baseline,
                candidate_version=version,
            )
            if comparison.forced:
                forced.append(comparison.evidence())
        if not forced:
            return None
        return {"offline_gate": forced[0] if len(forced) == 1 else forced}


def _non_baseline(release: Release) -> set[str]:
    """The versions the release's variants other than its baseline serve."""
    return {route.serve for name, route in release.routes.items() if name != release.baseline}
