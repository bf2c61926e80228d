"""The manifest beside each artifact, and the checks that make an artifact trustworthy."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import msgspec

from gateway.errors import IntegrityError, ManifestError

MANIFEST_FILE = "manifest.json"
MODEL_SPEC_FILE = "model.json"

Runtime = Literal["onnx", "torchscript"]
Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]


class TensorSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One input or output tensor: V2 name, datatype and shape (-1 marks a variable dimension)."""

    name: str
    datatype: Datatype
    shape: list[int]


class MetricsSummary(msgspec.Struct, frozen=True):
    """Offline evaluation on a held-out set, written by whoever built the artifact."""

    accuracy: float
    macro_f1: float
    dataset: str
    split: str
    samples: int


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a version is: its runtime, its artifact and digest, its signature and its record."""

    runtime: Runtime
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    created: str
    description: str = ""
    labels: list[str] | None = None
    metrics: MetricsSummary | None = None
    platform: str = ""
    execution: dict[str, Any] | None = None
    """How the version executes (`gateway.execution.config`), checked when it loads."""


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`models/<model>/model.json`: model-wide facts such as the version that serves by default."""

    default_version: str
    description: str = ""


def read_manifest(version_dir: Path) -> Manifest:
    """Parse `manifest.json` in `version_dir`, raising ManifestError with the reason."""
    path = version_dir / MANIFEST_FILE
    try:
        manifest = msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    if Path(manifest.file).name != manifest.file:
        raise ManifestError(f"{path}: artifact file {manifest.file!r} must be a bare file name")
    if not manifest.inputs or not manifest.outputs:
        raise ManifestError(f"{path}: a manifest declares at least one input and one output")
    return manifest


def read_model_spec(model_dir: Path) -> ModelSpec | None:
    """Parse `model.json` in `model_dir` when there is one."""
    path = model_dir / MODEL_SPEC_FILE
    if not path.exists():
        return None
    try:
        return msgspec.json.decode(path.read_bytes(), type=ModelSpec)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestError(f"{path}: {exc}") from exc


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large artifacts do not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_artifact(version_dir: Path, manifest: Manifest) -> Path:
    """Return the artifact path after checking it exists and matches the manifest's sha256."""
    artifact = version_dir / manifest.file
    if not artifact.is_file():
        raise ManifestError(f"{artifact}: artifact named by the manifest is missing")
    actual = sha256_of(artifact)
    if actual != manifest.sha256.lower():
        raise IntegrityError(
            f"{artifact}: sha256 {actual} does not match the manifest's {manifest.sha256}; "
            "refusing to load an artifact that is not the one described"
        )
    return artifact


def encode_manifest(manifest: Manifest) -> bytes:
    """The manifest as indented JSON, the way the demo recipe writes it."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"
