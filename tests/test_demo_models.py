"""The `digits` demo recipe: what each built version is, measured by running its artifact.

The build itself happens once per session, in conftest's `demo_models` fixture.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from gateway.demo.digits import (
    LABELS,
    RecipeError,
    build_demo,
    held_out_digits,
    load_recipe,
    predict_artifact,
    training_digits,
)
from gateway.repository.manifest import (
    Manifest,
    read_manifest,
    read_model_spec,
    sha256_of,
    verified_artifact,
)
from gateway.runtimes import RuntimeOptions, create_runtime
from gateway.runtimes.base import Tensor

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ["1", "2", "3", "4", "5"]
HEALTHY = ["1", "2", "3", "5"]


def _manifest(models: Path, version: str) -> Manifest:
    return read_manifest(models / "digits" / version)


def _run(models: Path, version: str) -> dict[str, Tensor]:
    manifest = _manifest(models, version)
    pixels, _ = held_out_digits()
    return predict_artifact(models / "digits" / version / manifest.file, manifest, pixels)


def test_committed_recipe_and_model_spec_agree() -> None:
    """The committed recipe parses, lists versions 1-5 and holds model.json's default version."""
    recipe = load_recipe(REPO_ROOT / "models" / "digits" / "recipe.json")
    spec = read_model_spec(REPO_ROOT / "models" / "digits")
    assert list(recipe.versions) == VERSIONS
    assert spec is not None
    assert spec.default_version == "1"


def test_held_out_split_is_a_fixed_stratified_quarter() -> None:
    """The held-out split is 25 % of load_digits, raw 0..16 float32 pixels, every digit present."""
    test_x, test_y = held_out_digits()
    train_x, train_y = training_digits()
    assert test_x.dtype == np.float32
    assert test_y.dtype == np.int64
    assert test_x.shape == (450, 64)
    assert len(train_x) + len(test_x) == 1797
    assert test_x.min() == 0.0
    assert test_x.max() == 16.0
    per_digit = np.bincount(test_y, minlength=10)
    overall = per_digit + np.bincount(train_y, minlength=10)
    assert np.all(np.abs(per_digit - overall / 4) <= 1)
    again_x, again_y = held_out_digits()
    np.testing.assert_array_equal(again_x, test_x)
    np.testing.assert_array_equal(again_y, test_y)


def test_manifests_describe_their_artifacts(demo_models: Path) -> None:
    """Every manifest's sha256 matches its artifact, and it declares the digits signature."""
    for version in VERSIONS:
        version_dir = demo_models / "digits" / version
        manifest = read_manifest(version_dir)
        artifact = verified_artifact(version_dir, manifest)
        assert sha256_of(artifact) == manifest.sha256
        assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [
            ("pixels", "FP32", [-1, 64])
        ]
        assert [(s.name, s.datatype, s.shape) for s in manifest.outputs] == [
            ("probabilities", "FP32", [-1, 10]),
            ("label", "INT64", [-1]),
        ]
        assert manifest.labels == LABELS
        assert manifest.created.endswith("Z")
    expected = {"1": "onnx", "2": "onnx", "3": "torchscript", "4": "onnx", "5": "onnx"}
    for version, runtime in expected.items():
        manifest = _manifest(demo_models, version)
        assert manifest.runtime == runtime
        assert manifest.file == ("model.pt" if runtime == "torchscript" else "model.onnx")
        assert manifest.platform == (
            "pytorch_libtorch" if runtime == "torchscript" else "onnxruntime_onnx"
        )


def test_manifest_accuracy_is_what_the_artifact_scores(demo_models: Path) -> None:
    """The accuracy each manifest records equals a fresh run of its artifact on held-out data."""
    _, labels = held_out_digits()
    for version in HEALTHY:
        manifest = _manifest(demo_models, version)
        assert manifest.metrics is not None
        assert manifest.metrics.samples == len(labels)
        recomputed = float(accuracy_score(labels, _run(demo_models, version)["label"]))
        assert manifest.metrics.accuracy == recomputed


def test_healthy_versions_honour_the_signature(demo_models: Path) -> None:
    """Versions 1-3 and 5 take any batch size and return softmax rows and their argmax label."""
    pixels, _ = held_out_digits()
    for version in HEALTHY:
        manifest = _manifest(demo_models, version)
        artifact = demo_models / "digits" / version / manifest.file
        for batch in (1, 7):
            outputs = predict_artifact(artifact, manifest, pixels[:batch])
            probabilities, label = outputs["probabilities"], outputs["label"]
            assert probabilities.dtype == np.float32
            assert probabilities.shape == (batch, 10)
            assert label.dtype == np.int64
            assert label.shape == (batch,)
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
            np.testing.assert_array_equal(label, probabilities.argmax(axis=1))


def test_version_2_beats_version_1_offline(demo_models: Path) -> None:
    """The MLP candidate (2) beats the logistic baseline (1) clearly on accuracy and macro-F1."""
    baseline = _manifest(demo_models, "1").metrics
    candidate = _manifest(demo_models, "2").metrics
    assert baseline is not None
    assert candidate is not None
    assert candidate.accuracy >= baseline.accuracy + 0.03
    assert candidate.macro_f1 >= baseline.macro_f1 + 0.03


def test_version_3_disagrees_with_version_1(demo_models: Path) -> None:
    """Version 3 (corrupted labels) predicts differently from 1 on a substantial share of inputs."""
    baseline = _run(demo_models, "1")["label"]
    corrupted = _run(demo_models, "3")["label"]
    disagreement = float(np.mean(baseline != corrupted))
    assert disagreement >= 0.25
    metrics = _manifest(demo_models, "3").metrics
    assert metrics is not None
    assert metrics.accuracy < 0.75


def test_version_4_loads_then_fails_every_prediction(demo_models: Path) -> None:
    """Version 4 loads in onnxruntime, has no metrics, and fails at inference for any batch."""
    manifest = _manifest(demo_models, "4")
    assert manifest.metrics is None
    runtime = create_runtime(
        demo_models / "digits" / "4" / manifest.file, manifest, RuntimeOptions()
    )
    runtime.load()
    pixels, _ = held_out_digits()
    try:
        for batch in (1, 450):
            with pytest.raises(Exception, match="out of data bounds"):
                runtime.predict({"pixels": pixels[:batch]})
    finally:
        runtime.unload()


def test_build_skips_what_is_up_to_date(demo_models: Path) -> None:
    """A second build of an up-to-date repository builds nothing and says so for each version."""
    lines: list[str] = []
    assert build_demo(demo_models, progress=lines.append) == []
    assert len(lines) == len(VERSIONS)
    assert all("up to date" in line for line in lines)


def test_build_rebuilds_stale_and_forced_versions_deterministically(
    demo_models: Path, tmp_path: Path
) -> None:
    """A tampered artifact is rebuilt alone; force rebuilds all, with identical predictions.

    The transformer (version 5) is left out of the copy's recipe: training it again takes
    most of a minute, and tests/test_demo_transformer.py shows its training reproducible."""
    copy = tmp_path / "models"
    shutil.copytree(demo_models, copy)
    recipe_path = copy / "digits" / "recipe.json"
    recipe = json.loads(recipe_path.read_text())
    del recipe["versions"]["5"]
    recipe_path.write_text(json.dumps(recipe))
    shutil.rmtree(copy / "digits" / "5")
    rebuilt = [version for version in VERSIONS if version != "5"]
    (copy / "digits" / "2" / "model.onnx").write_bytes(b"not a model")
    assert build_demo(copy, progress=lambda _line: None) == ["2"]
    assert build_demo(copy, force=True, progress=lambda _line: None) == rebuilt
    for version in HEALTHY:
        if version not in rebuilt:
            continue
        before, after = _run(demo_models, version), _run(copy, version)
        np.testing.assert_array_equal(after["label"], before["label"])
        np.testing.assert_array_equal(after["probabilities"], before["probabilities"])
    for version in ("1", "2", "4"):  # ONNX is byte-for-byte reproducible; TorchScript not
        assert _manifest(copy, version).sha256 == _manifest(demo_models, version).sha256


def test_build_rejects_a_recipe_with_unknown_fields(tmp_path: Path) -> None:
    """A recipe with a misspelt field is refused before anything is trained."""
    (tmp_path / "digits").mkdir()
    recipe = json.loads((REPO_ROOT / "models" / "digits" / "recipe.json").read_text())
    recipe["versions"]["1"]["epoch"] = 3
    (tmp_path / "digits" / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(RecipeError, match="unknown field"):
        build_demo(tmp_path, progress=lambda _line: None)
    assert not (tmp_path / "digits" / "1").exists()


@pytest.mark.parametrize(
    ("version", "change", "words"),
    [
        ("5", {"heads": 3}, "multiple of heads"),
        ("5", {"runtime": "torchscript"}, "ONNX export"),
        ("5", {"learning_rate": 0.0}, "learning_rate > 0"),
        ("2", {"layers": 4}, "for transformers only"),
    ],
)
def test_build_rejects_a_transformer_recipe_that_cannot_be_built(
    tmp_path: Path, version: str, change: dict[str, object], words: str
) -> None:
    """A transformer whose width does not split into its heads, that is not ONNX, or has no
    learning rate, and an MLP with transformer fields, are refused before anything is trained."""
    (tmp_path / "digits").mkdir()
    recipe = json.loads((REPO_ROOT / "models" / "digits" / "recipe.json").read_text())
    recipe["versions"][version].update(change)
    (tmp_path / "digits" / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(RecipeError, match=words):
        build_demo(tmp_path, progress=lambda _line: None)
    assert not (tmp_path / "digits" / "1").exists()
