"""The `digits` demo model: scikit-learn's bundled 8x8 digits, five versions built from a recipe.

`build_demo` reads `models/digits/recipe.json`, trains each version with torch, writes the
artifact and its `manifest.json` under `models/digits/<version>/`, and scores the written
artifact through the gateway's own runtime, so the manifest's metrics describe exactly the
file that will serve. Only the CLI (`gateway models build-demo`) and tests import this module;
torch and scikit-learn are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from gateway.errors import GatewayError, ManifestError
from gateway.repository.manifest import (
    MANIFEST_FILE,
    Manifest,
    MetricsSummary,
    Runtime,
    TensorSpec,
    encode_manifest,
    read_manifest,
    read_model_spec,
    sha256_of,
    verified_artifact,
)
from gateway.repository.names import validate_name
from gateway.runtimes import RuntimeOptions, create_runtime
from gateway.runtimes.base import Tensor

MODEL = "digits"
RECIPE_FILE = "recipe.json"
DATASET = "sklearn.datasets.load_digits"
HELD_OUT_SHARE = 0.25
SPLIT_SEED = 0
SPLIT = f"held-out {HELD_OUT_SHARE:.0%} stratified, random_state={SPLIT_SEED}"
LABELS = [str(digit) for digit in range(10)]
INPUTS = [TensorSpec(name="pixels", datatype="FP32", shape=[-1, 64])]
OUTPUTS = [
    TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 10]),
    TensorSpec(name="label", datatype="INT64", shape=[-1]),
]
ARTIFACT_FILE: dict[Runtime, str] = {"onnx": "model.onnx", "torchscript": "model.pt"}
PLATFORM: dict[Runtime, str] = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch"}
# The broken export reads pixels with 1-based indices 1..64: index 64 is out of bounds.
_OFF_BY_ONE_PIXEL_ORDER = np.arange(1, 65, dtype=np.int64)

Kind = Literal["logistic", "mlp", "mlp-bad-gather", "transformer"]
Pixels = NDArray[np.float32]
Labels = NDArray[np.int64]


class RecipeError(GatewayError):
    """A demo recipe that cannot be read or does not describe a buildable version."""


class VersionRecipe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How one version is trained and exported."""

    kind: Kind
    runtime: Runtime
    seed: int
    epochs: int
    description: str
    hidden: int = 0
    label_corruption: float = 0.0
    # transformer only: model width, attention heads, encoder blocks, feed-forward width
    width: int = 0
    heads: int = 0
    layers: int = 0
    feed_forward: int = 0
    learning_rate: float = 0.0


class DigitsRecipe(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`recipe.json`: the versions to build, in build order."""

    versions: dict[str, VersionRecipe]


def load_recipe(path: Path) -> DigitsRecipe:
    """Parse and check a recipe, raising RecipeError with the reason."""
    try:
        recipe = msgspec.json.decode(path.read_bytes(), type=DigitsRecipe)
    except FileNotFoundError as exc:
        raise RecipeError(f"{path}: no recipe") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RecipeError(f"{path}: {exc}") from exc
    for version, spec in recipe.versions.items():
        validate_name("version", version)
        problem = _recipe_problem(spec)
        if problem is not None:
            raise RecipeError(f"{path}: version {version}: {problem}")
    return recipe


def _recipe_problem(spec: VersionRecipe) -> str | None:
    if spec.epochs < 1 or not 0.0 <= spec.label_corruption < 1.0:
        return "need epochs >= 1, corruption in [0, 1)"
    if spec.kind == "transformer":
        return _transformer_problem(spec)
    if any((spec.width, spec.heads, spec.layers, spec.feed_forward, spec.learning_rate)):
        return "width, heads, layers, feed_forward and learning_rate are for transformers only"
    if (spec.kind == "logistic") != (spec.hidden == 0):
        return "hidden must be 0 exactly for logistic"
    if spec.kind == "mlp-bad-gather" and spec.runtime != "onnx":
        return "mlp-bad-gather is an ONNX export"
    return None


def _transformer_problem(spec: VersionRecipe) -> str | None:
    if spec.runtime != "onnx" or spec.hidden != 0:
        return "a transformer is an ONNX export, without hidden"
    if min(spec.width, spec.heads, spec.layers, spec.feed_forward) < 1 or spec.width % spec.heads:
        return (
            "a transformer needs width, heads, layers, feed_forward >= 1, width a multiple of heads"
        )
    if spec.learning_rate <= 0.0:
        return "a transformer needs a learning_rate > 0"
    return None


@functools.cache
def _split() -> tuple[Pixels, Labels, Pixels, Labels]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.asarray(digits.data, dtype=np.float32)
    labels = np.asarray(digits.target, dtype=np.int64)
    parts = train_test_split(
        pixels, labels, test_size=HELD_OUT_SHARE, stratify=labels, random_state=SPLIT_SEED
    )
    train_x, test_x, train_y, test_y = (np.ascontiguousarray(part) for part in parts)
    return train_x, train_y, test_x, test_y


def training_digits() -> tuple[Pixels, Labels]:
    """The 75 % of `load_digits()` the versions train on: pixels (n, 64) 0..16 and labels."""
    train_x, train_y, _, _ = _split()
    return train_x.copy(), train_y.copy()


def held_out_digits() -> tuple[Pixels, Labels]:
    """The 25 % stratified held-out split: raw pixels (n, 64) float32 0..16, int64 labels."""
    _, _, test_x, test_y = _split()
    return test_x.copy(), test_y.copy()


def build_demo(
    models_dir: Path, *, force: bool = False, progress: Callable[[str], None] = print
) -> list[str]:
    """Build every version in `models_dir/digits/recipe.json` that is missing or stale.

    A version is up to date when its manifest parses, names the recipe's runtime and
    description, and its artifact matches the manifest's sha256; `force` rebuilds anyway.
    Returns the versions built, in recipe order.
    """
    import torch

    model_dir = models_dir / MODEL
    recipe = load_recipe(model_dir / RECIPE_FILE)
    spec = read_model_spec(model_dir)
    if spec is not None and spec.default_version not in recipe.versions:
        raise RecipeError(
            f"{model_dir}: default version {spec.default_version!r} is not in the recipe"
        )
    threads = torch.get_num_threads()  # the TorchScript runtime sets it on load
    built: list[str] = []
    try:
        for version, version_recipe in recipe.versions.items():
            version_dir = model_dir / version
            if not force and _up_to_date(version_dir, version_recipe):
                progress(f"{MODEL}/{version}: up to date, skipped")
                continue
            started = time.perf_counter()
            outcome = _build_version(version_dir, version_recipe)
            elapsed = time.perf_counter() - started
            progress(f"{MODEL}/{version}: built {version_recipe.kind} in {elapsed:.1f}s; {outcome}")
            built.append(version)
    finally:
        torch.set_num_threads(threads)
    return built


def _up_to_date(version_dir: Path, recipe: VersionRecipe) -> bool:
    try:
        manifest = read_manifest(version_dir)
        verified_artifact(version_dir, manifest)
    except ManifestError:
        return False
    return (
        manifest.runtime == recipe.runtime
        and manifest.file == ARTIFACT_FILE[recipe.runtime]
        and manifest.description == recipe.description
    )


def _build_version(version_dir: Path, recipe: VersionRecipe) -> str:
    """Train, export, score and describe one version; returns a one-line outcome."""
    data = _trained_artifact(recipe)

    version_dir.mkdir(parents=True, exist_ok=True)
    # No manifest while the artifact changes: a half-built version reads as missing, not corrupt.
    (version_dir / MANIFEST_FILE).unlink(missing_ok=True)
    artifact = version_dir / ARTIFACT_FILE[recipe.runtime]
    _write_atomic(artifact, data)
    manifest = Manifest(
        runtime=recipe.runtime,
        file=artifact.name,
        sha256=sha256_of(artifact),
        inputs=INPUTS,
        outputs=OUTPUTS,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        description=recipe.description,
        labels=LABELS,
        metrics=None,
        platform=PLATFORM[recipe.runtime],
    )
    test_x, test_y = held_out_digits()
    if recipe.kind == "mlp-bad-gather":
        error = _confirm_fails(artifact, manifest, test_x)
        outcome = f"loads, then fails at inference as intended ({error})"
    else:
        metrics = _evaluate(artifact, manifest, test_x, test_y)
        manifest = msgspec.structs.replace(manifest, metrics=metrics)
        outcome = f"accuracy {metrics.accuracy:.4f}, macro-F1 {metrics.macro_f1:.4f}"
    _write_atomic(version_dir / MANIFEST_FILE, encode_manifest(manifest))
    return outcome


def _trained_artifact(recipe: VersionRecipe) -> bytes:
    """Train the version the recipe describes and return its artifact's bytes."""
    from gateway.demo import networks

    pixels, labels = training_digits()
    labels = networks.corrupt_labels(labels, recipe.label_corruption, recipe.seed)
    if recipe.kind == "transformer":
        from gateway.demo import transformer

        model = transformer.train_transformer(
            pixels,
            labels,
            width=recipe.width,
            heads=recipe.heads,
            layers=recipe.layers,
            feed_forward=recipe.feed_forward,
            epochs=recipe.epochs,
            learning_rate=recipe.learning_rate,
            seed=recipe.seed,
        )
        return transformer.transformer_onnx_bytes(model)
    body = networks.train_network(
        pixels, labels, hidden=recipe.hidden, epochs=recipe.epochs, seed=recipe.seed
    )
    if recipe.runtime == "torchscript":
        return networks.torchscript_bytes(body)
    order = _OFF_BY_ONE_PIXEL_ORDER if recipe.kind == "mlp-bad-gather" else None
    return networks.onnx_bytes(body, pixel_order=order)


def predict_artifact(artifact: Path, manifest: Manifest, pixels: Pixels) -> dict[str, Tensor]:
    """Run `pixels` through the written artifact with the gateway's runtime for its manifest."""
    runtime = create_runtime(artifact, manifest, RuntimeOptions())
    runtime.load()
    try:
        return runtime.predict({INPUTS[0].name: pixels})
    finally:
        runtime.unload()


def _evaluate(artifact: Path, manifest: Manifest, pixels: Pixels, labels: Labels) -> MetricsSummary:
    from gateway.demo.evaluation import score

    outputs = predict_artifact(artifact, manifest, pixels)
    probabilities, predicted = outputs["probabilities"], outputs["label"]
    if probabilities.dtype != np.float32 or probabilities.shape != (len(pixels), len(LABELS)):
        raise RecipeError(f"{artifact}: probabilities {probabilities.dtype} {probabilities.shape}")
    if predicted.dtype != np.int64 or predicted.shape != (len(pixels),):
        raise RecipeError(f"{artifact}: label {predicted.dtype} {predicted.shape}")
    scored = score(outputs, manifest, labels.tolist())
    return MetricsSummary(
        accuracy=scored.accuracy,
        macro_f1=scored.macro_f1,
        dataset=DATASET,
        split=SPLIT,
        samples=len(labels),
    )


def _confirm_fails(artifact: Path, manifest: Manifest, pixels: Pixels) -> str:
    """Check the artifact loads, then fails to predict; return the runtime's error, shortened."""
    runtime = create_runtime(artifact, manifest, RuntimeOptions())
    runtime.load()  # a load failure is a build failure: this version must load and then fail
    try:
        runtime.predict({INPUTS[0].name: pixels[:1]})
    except Exception as exc:  # the runtime's own error type, e.g. onnxruntime's InvalidArgument
        message = str(exc) or type(exc).__name__
        return message[max(message.find("Status Message:"), 0) :][:120]
    finally:
        runtime.unload()
    raise RecipeError(f"{artifact}: meant to fail at inference, but it predicted")


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
