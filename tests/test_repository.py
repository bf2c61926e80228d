"""The model repository: manifests, digests, names, and isolation of a broken version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.errors import IntegrityError, InvalidName, ManifestError, ModelNotReady
from gateway.repository import ModelRegistry, VersionState, validate_name
from gateway.repository.manifest import read_manifest, verified_artifact
from gateway.runtimes import RuntimeOptions


@pytest.fixture
def repository(demo_models: Path, tmp_path: Path) -> Path:
    """A private copy of the demo repository that a test may damage."""
    return Path(shutil.copytree(demo_models, tmp_path / "models"))


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", "", ".hidden", "x" * 64, "a..b", "a b"])
def test_unsafe_names_are_refused(name: str) -> None:
    """Names that could climb out of the repository or are malformed raise InvalidName."""
    with pytest.raises(InvalidName):
        validate_name("version", name)


@pytest.mark.parametrize("name", ["1", "digits", "v2.1", "fraud_model-3"])
def test_ordinary_names_pass(name: str) -> None:
    """Plain model and version names are accepted unchanged."""
    assert validate_name("model", name) == name


def test_sha_mismatch_is_refused_and_the_rest_still_load(repository: Path) -> None:
    """A tampered artifact is FAILED with a clear reason; every other version still serves."""
    artifact = repository / "digits" / "2" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    with pytest.raises(IntegrityError, match="does not match"):
        verified_artifact(artifact.parent, read_manifest(artifact.parent))
    registry = ModelRegistry.load(repository, RuntimeOptions())
    broken = registry.version("digits", "2")
    assert broken.state is VersionState.FAILED
    assert "sha256" in broken.reason
    with pytest.raises(ModelNotReady, match="sha256"):
        broken.ready_runtime()
    assert registry.version("digits", "1").state is VersionState.READY
    assert registry.version("digits", "3").state is VersionState.READY


def test_manifest_problems_are_reported_per_version(repository: Path) -> None:
    """Missing, malformed and ill-typed manifests each fail only their own version."""
    (repository / "digits" / "2" / "manifest.json").unlink()
    (repository / "digits" / "3" / "manifest.json").write_text("{not json")
    manifest = json.loads((repository / "digits" / "4" / "manifest.json").read_text())
    manifest["inputs"][0]["datatype"] = "FLOAT"
    (repository / "digits" / "4" / "manifest.json").write_text(json.dumps(manifest))
    registry = ModelRegistry.load(repository, RuntimeOptions())
    reasons = {v: registry.version("digits", v).reason for v in ("2", "3", "4")}
    assert "no manifest" in reasons["2"]
    assert "manifest.json" in reasons["3"]
    assert "FLOAT" in reasons["4"] or "datatype" in reasons["4"]
    assert registry.version("digits", "1").state is VersionState.READY
    assert registry.is_ready()


def test_artifact_path_in_manifest_cannot_escape(repository: Path) -> None:
    """A manifest naming a file outside its version directory is refused."""
    version_dir = repository / "digits" / "2"
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["file"] = "../1/model.onnx"
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="bare file name"):
        read_manifest(version_dir)


def test_artifact_that_fails_to_load_is_isolated(repository: Path) -> None:
    """An artifact whose digest matches but which the runtime cannot load is FAILED, not fatal."""
    version_dir = repository / "digits" / "2"
    garbage = b"this is not an onnx graph"
    (version_dir / "model.onnx").write_bytes(garbage)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["sha256"] = __import__("hashlib").sha256(garbage).hexdigest()
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    registry = ModelRegistry.load(repository, RuntimeOptions())
    assert registry.version("digits", "2").state is VersionState.FAILED
    assert registry.version("digits", "1").state is VersionState.READY


def test_unsafe_directory_names_are_skipped(repository: Path) -> None:
    """A version directory with an unsafe name is skipped; the model's other versions load."""
    (repository / "digits" / "bad name").mkdir()
    registry = ModelRegistry.load(repository, RuntimeOptions())
    assert "bad name" not in registry.model("digits").versions
    assert registry.model("digits").sorted_versions() == ["1", "2", "3", "4", "5"]


def test_default_version_without_model_spec_is_newest_ready(repository: Path) -> None:
    """Without model.json the newest READY version (natural order) serves by default."""
    (repository / "digits" / "model.json").unlink()
    registry = ModelRegistry.load(repository, RuntimeOptions())
    # 5, the transformer, is the newest version, and it loads and serves.
    assert registry.model("digits").default_version == "5"


def test_onnx_only_process_never_imports_torch(demo_models: Path) -> None:
    """Serving only ONNX versions does not import torch (it is imported by its runtime alone)."""
    import subprocess
    import sys

    script = (
        "import sys, shutil, pathlib, tempfile\n"
        "from gateway.repository import ModelRegistry\n"
        "from gateway.runtimes import RuntimeOptions\n"
        f"src = pathlib.Path({str(demo_models)!r})\n"
        "dst = pathlib.Path(tempfile.mkdtemp()) / 'm'\n"
        "shutil.copytree(src, dst)\n"
        "shutil.rmtree(dst / 'digits' / '3')\n"
        "registry = ModelRegistry.load(dst, RuntimeOptions())\n"
        "assert registry.version('digits', '1').runtime is not None\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
