"""Which versions a flag may name: the ones the repository has and loaded."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from gateway.errors import ModelNotFound
from gateway.repository.registry import VersionState

if TYPE_CHECKING:
    from gateway.repository.registry import ModelRegistry


class VersionStatus(enum.Enum):
    READY = "ready"
    NOT_LOADED = "not loaded"
    UNKNOWN_VERSION = "unknown version"
    UNKNOWN_MODEL = "unknown model"


VersionLookup = Callable[[str, str], VersionStatus]
"""`lookup(model, version)` says whether a flag may route to that version."""

KnownVersions = Mapping[str, Collection[str]] | VersionLookup
"""Either model -> its loaded versions, or a VersionLookup (which can also say 'not loaded')."""


def version_lookup(known: KnownVersions) -> VersionLookup:
    """A VersionLookup over either form of KnownVersions."""
    if callable(known):
        return known

    def lookup(model: str, version: str) -> VersionStatus:
        versions = known.get(model)
        if versions is None:
            return VersionStatus.UNKNOWN_MODEL
        return VersionStatus.READY if version in versions else VersionStatus.UNKNOWN_VERSION

    return lookup


def registry_versions(registry: ModelRegistry) -> VersionLookup:
    """A VersionLookup over the model registry: a FAILED version exists but is not loaded."""

    def lookup(model: str, version: str) -> VersionStatus:
        try:
            entry = registry.model(model)
        except ModelNotFound:
            return VersionStatus.UNKNOWN_MODEL
        loaded = entry.versions.get(version)
        if loaded is None:
            return VersionStatus.UNKNOWN_VERSION
        if loaded.state is VersionState.READY:
            return VersionStatus.READY
        return VersionStatus.NOT_LOADED

    return lookup
