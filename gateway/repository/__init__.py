"""The model repository: `models/<model>/<version>/` with an artifact and its manifest."""

from gateway.repository.manifest import Manifest, MetricsSummary, ModelSpec, TensorSpec
from gateway.repository.names import validate_name
from gateway.repository.registry import LoadedVersion, ModelEntry, ModelRegistry, VersionState

__all__ = [
    "LoadedVersion",
    "Manifest",
    "MetricsSummary",
    "ModelEntry",
    "ModelRegistry",
    "ModelSpec",
    "TensorSpec",
    "VersionState",
    "validate_name",
]
