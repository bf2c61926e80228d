"""Loads every version under the models directory, isolating the ones that fail."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from gateway.errors import GatewayError, ModelNotFound, ModelNotReady, VersionNotFound
from gateway.execution.config import ExecutionConfig, execution_config
from gateway.repository.manifest import (
    Manifest,
    ModelSpec,
    read_manifest,
    read_model_spec,
    verified_artifact,
)
from gateway.repository.names import validate_name
from gateway.runtimes import ModelRuntime, RuntimeOptions, create_runtime

_log = structlog.get_logger("gateway.repository")


class VersionState(enum.StrEnum):
    READY = "READY"
    FAILED = "FAILED"


@dataclass(slots=True)
class LoadedVersion:
    """One version: ready with a runtime, or failed with the reason it did not load."""

    model: str
    version: str
    manifest: Manifest | None
    runtime: ModelRuntime | None
    state: VersionState
    reason: str = ""
    execution: ExecutionConfig | None = None
    """How it executes: its manifest's `execution` over the defaults (READY versions)."""

    def ready_runtime(self) -> tuple[Manifest, ModelRuntime]:
        if self.runtime is None or self.manifest is None:
            raise ModelNotReady(
                f"model {self.model!r} version {self.version!r} is not ready: {self.reason}"
            )
        return self.manifest, self.runtime


@dataclass(slots=True)
class ModelEntry:
    """A model directory: its spec and its versions, keyed by version name."""

    name: str
    spec: ModelSpec | None
    versions: dict[str, LoadedVersion] = field(default_factory=dict)

    @property
    def default_version(self) -> str:
        if self.spec is not None:
            return self.spec.default_version
        # Without a model.json the newest ready version serves, ordered naturally ("10" > "9").
        ready = [v for v, loaded in self.versions.items() if loaded.state is VersionState.READY]
        candidates = ready or list(self.versions)
        return max(candidates, key=_natural_key) if candidates else ""

    def sorted_versions(self) -> list[str]:
        return sorted(self.versions, key=_natural_key)


def _natural_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class ModelRegistry:
    """Every model and version the gateway serves. Lookups are plain dict reads."""

    def __init__(self, models: dict[str, ModelEntry]) -> None:
        self._models = models

    @classmethod
    def load(
        cls,
        models_dir: Path,
        options: RuntimeOptions,
        execution: ExecutionConfig | None = None,
    ) -> ModelRegistry:
        """Load each `models_dir/<model>/<version>/`; a broken version is kept as FAILED.
        `execution` holds the defaults a version's manifest may override."""
        defaults = execution or ExecutionConfig()
        models: dict[str, ModelEntry] = {}
        if not models_dir.is_dir():
            _log.warning("models_dir_missing", path=str(models_dir))
            return cls(models)
        for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir()):
            entry = _load_model(model_dir, options, defaults)
            if entry is not None:
                models[entry.name] = entry
        return cls(models)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self._models.values())

    def model(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None:
            raise ModelNotFound(f"unknown model {name!r}")
        return entry

    def version(self, model: str, version: str | None = None) -> LoadedVersion:
        entry = self.model(model)
        wanted = version if version is not None else entry.default_version
        loaded = entry.versions.get(wanted)
        if loaded is None:
            raise VersionNotFound(f"model {model!r} has no version {wanted!r}")
        return loaded

    def is_ready(self) -> bool:
        """Ready when every model's default version can serve."""
        return all(
            entry.versions.get(entry.default_version) is not None
            and entry.versions[entry.default_version].state is VersionState.READY
            for entry in self._models.values()
        )

    def unload(self) -> None:
        for entry in self._models.values():
            for loaded in entry.versions.values():
                if loaded.runtime is not None:
                    loaded.runtime.unload()


def _load_model(
    model_dir: Path, options: RuntimeOptions, defaults: ExecutionConfig
) -> ModelEntry | None:
    try:
        name = validate_name("model", model_dir.name)
        spec = read_model_spec(model_dir)
    except GatewayError as exc:
        _log.error("model_skipped", path=str(model_dir), error=str(exc))
        return None
    entry = ModelEntry(name=name, spec=spec)
    for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        try:
            version = validate_name("version", version_dir.name)
        except GatewayError as exc:
            _log.error("version_skipped", model=name, path=str(version_dir), error=str(exc))
            continue
        entry.versions[version] = _load_version(name, version, version_dir, options, defaults)
    return entry


def _load_version(
    model: str,
    version: str,
    version_dir: Path,
    options: RuntimeOptions,
    defaults: ExecutionConfig,
) -> LoadedVersion:
    manifest: Manifest | None = None
    try:
        manifest = read_manifest(version_dir)
        execution = execution_config(
            manifest.execution, defaults, where=f"model {model!r} version {version!r}"
        )
        artifact = verified_artifact(version_dir, manifest)
        runtime = create_runtime(artifact, manifest, options)
        runtime.load()
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        _log.error("version_load_failed", model=model, version=version, error=reason)
        return LoadedVersion(model, version, manifest, None, VersionState.FAILED, reason)
    _log.info("version_loaded", model=model, version=version, runtime=manifest.runtime)
    return LoadedVersion(model, version, manifest, runtime, VersionState.READY, "", execution)
