"""Demo version 5, the transformer: its ONNX export against torch, reproducible training, one
batch against single rows, serving over HTTP, and a rollout to it through the admin API.

The built version 5 comes from conftest's `demo_models` (the committed recipe, built once per
session); the export and determinism checks train small models of their own in about a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
import pytest
import torch

from gateway.demo.digits import held_out_digits, load_recipe, predict_artifact, training_digits
from gateway.demo.transformer import (
    DigitsTransformer,
    torch_outputs,
    train_transformer,
    transformer_onnx_bytes,
)
from gateway.guard.offline_gate import check_offline
from gateway.guard.policy import GuardPolicy
from gateway.repository.manifest import read_manifest
from gateway.runtimes import RuntimeOptions, create_runtime
from tests.conftest import MANAGER, REPO_ROOT, VIEWER, Client, v2_body

VERSION = "5"
TOLERANCE = 1e-5  # float32 rounding of the same ops in another order: about 1e-7 in practice


def _onnx_outputs(data: bytes, pixels: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    """What onnxruntime answers for `pixels`, opened as the gateway's ONNX runtime opens it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray[Any, Any]] = session.run(
        ["probabilities", "label"], {"pixels": pixels}
    )
    return outputs


def _scrambled(model: DigitsTransformer, seed: int) -> DigitsTransformer:
    """`model` with every parameter moved off its initial value (layer norms' ones and zeros
    too), so that an export mapping any weight to the wrong place shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


@pytest.mark.parametrize(
    ("width", "heads", "layers", "feed_forward"),
    [(16, 1, 1, 32), (32, 2, 2, 64), (24, 4, 3, 48)],
)
def test_export_matches_torch_for_several_shapes(
    width: int, heads: int, layers: int, feed_forward: int
) -> None:
    """The hand-written graph computes what the torch module does, for one head or several,
    one block or several, at batch 1, 7 and 450: same probabilities within 1e-5, same labels."""
    torch.manual_seed(0)
    model = _scrambled(
        DigitsTransformer(width=width, heads=heads, layers=layers, feed_forward=feed_forward),
        seed=width + heads + layers,
    )
    data = transformer_onnx_bytes(model)
    pixels, _ = held_out_digits()
    for batch in (1, 7, 450):
        probabilities, labels = _onnx_outputs(data, pixels[:batch])
        expected_probabilities, expected_labels = torch_outputs(model, pixels[:batch])
        assert probabilities.shape == (batch, 10)
        assert labels.dtype == np.int64
        np.testing.assert_allclose(probabilities, expected_probabilities, atol=TOLERANCE, rtol=0)
        np.testing.assert_array_equal(labels, expected_labels)


def test_trained_export_of_the_recipe_shape_matches_torch() -> None:
    """A model of version 5's shape, trained one epoch, answers the same in onnxruntime as in
    torch on every held-out digit."""
    spec = load_recipe(REPO_ROOT / "models" / "digits" / "recipe.json").versions[VERSION]
    pixels, labels = training_digits()
    model = train_transformer(
        pixels,
        labels,
        width=spec.width,
        heads=spec.heads,
        layers=spec.layers,
        feed_forward=spec.feed_forward,
        learning_rate=spec.learning_rate,
        epochs=1,
        seed=spec.seed,
    )
    test_x, _ = held_out_digits()
    probabilities, predicted = _onnx_outputs(transformer_onnx_bytes(model), test_x)
    expected_probabilities, expected_labels = torch_outputs(model, test_x)
    np.testing.assert_allclose(probabilities, expected_probabilities, atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(predicted, expected_labels)


def test_training_is_reproducible_and_depends_on_the_seed() -> None:
    """The same seed gives bit-identical weights and a byte-identical ONNX file; another seed
    gives other weights."""
    pixels, labels = training_digits()

    def train(seed: int) -> DigitsTransformer:
        return train_transformer(
            pixels,
            labels,
            width=16,
            heads=2,
            layers=2,
            feed_forward=32,
            learning_rate=0.003,
            epochs=2,
            seed=seed,
        )

    first, again, other = train(11), train(11), train(12)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert not all(
        torch.equal(tensor, other.state_dict()[name]) for name, tensor in first.state_dict().items()
    )
    assert transformer_onnx_bytes(first) == transformer_onnx_bytes(again)


def test_version_5_answers_a_batch_as_its_rows_one_by_one(demo_models: Path) -> None:
    """Version 5 through the gateway's runtime: one call of 64 rows gives each row the answer
    it gets alone."""
    version_dir = demo_models / "digits" / VERSION
    manifest = read_manifest(version_dir)
    runtime = create_runtime(version_dir / manifest.file, manifest, RuntimeOptions())
    runtime.load()
    pixels, _ = held_out_digits()
    rows = pixels[:64]
    try:
        batched = runtime.predict({"pixels": rows})
        singles = [runtime.predict({"pixels": rows[i : i + 1]}) for i in range(len(rows))]
    finally:
        runtime.unload()
    np.testing.assert_array_equal(
        batched["label"], np.concatenate([single["label"] for single in singles])
    )
    np.testing.assert_allclose(
        batched["probabilities"],
        np.concatenate([single["probabilities"] for single in singles]),
        atol=1e-6,
        rtol=1e-5,
    )


def test_version_5_beats_version_1_and_passes_the_offline_gate(demo_models: Path) -> None:
    """Version 5 scores better than the baseline on the held-out split, on accuracy and
    macro-F1, so the offline gate admits it as a candidate without force."""
    baseline = read_manifest(demo_models / "digits" / "1")
    candidate = read_manifest(demo_models / "digits" / VERSION)
    assert baseline.metrics is not None
    assert candidate.metrics is not None
    assert candidate.metrics.accuracy > baseline.metrics.accuracy
    assert candidate.metrics.macro_f1 > baseline.metrics.macro_f1
    comparison = check_offline(
        baseline, candidate, GuardPolicy(), baseline_version="1", candidate_version=VERSION
    )
    assert comparison.passed
    assert not comparison.forced


def test_version_5_serves_pinned_requests_over_http(client: Client, demo_models: Path) -> None:
    """`/v2/models/digits/versions/5/infer` answers a batch of rows in one request with the
    artifact's own answers; the version's metadata names its runtime and offline metrics."""
    pixels, _ = held_out_digits()
    rows = pixels[10:17]
    response = client.post(f"/v2/models/digits/versions/{VERSION}/infer", json=v2_body(rows))
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == VERSION
    answer = response.json()
    assert answer["model_version"] == VERSION
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert outputs["probabilities"]["shape"] == [7, 10]
    assert outputs["label"]["datatype"] == "INT64"
    manifest = read_manifest(demo_models / "digits" / VERSION)
    expected = predict_artifact(demo_models / "digits" / VERSION / manifest.file, manifest, rows)
    np.testing.assert_array_equal(outputs["label"]["data"], expected["label"])
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"]["data"], (7, 10)),
        expected["probabilities"],
        atol=1e-6,
    )
    metadata = client.get(f"/v2/models/digits/versions/{VERSION}").json()
    assert metadata["parameters"]["runtime"] == "onnx"
    assert manifest.metrics is not None
    assert metadata["parameters"]["offline_metrics"]["accuracy"] == manifest.metrics.accuracy


def test_rollout_to_version_5_is_admitted_and_routes_to_it(release_client: Client) -> None:
    """A rollout of 5 at 10 % in the demo release passes the offline gate (no force), makes 5
    the candidate, and sends the candidate's cohort (tier beta) to it while others get 1."""
    response = release_client.post(
        "/admin/releases/digits/rollout",
        json={"version": VERSION, "percent": 10, "reason": "transformer canary"},
        headers=MANAGER,
    )
    assert response.status_code == 200, response.text
    assert response.json()["split"] == {"baseline": 90.0, "candidate": 10.0}
    release = release_client.get("/admin/releases/digits", headers=VIEWER).json()
    assert release["candidate"] == {"variant": "candidate", "version": VERSION}
    entry = release_client.get("/admin/audit?model=digits&limit=1", headers=VIEWER).json()[
        "entries"
    ][0]
    assert entry["action"] == "rollout"
    assert "offline_gate" not in msgspec.json.encode(entry).decode()  # a forced start has it
    pixels, _ = held_out_digits()
    beta = release_client.post(
        "/v2/models/digits/infer",
        json=v2_body(pixels[:1]),
        headers={"x-targeting-key": "user-7", "x-ctx-tier": "beta"},
    )
    assert beta.status_code == 200, beta.text
    assert beta.headers["x-model-version"] == VERSION
    versions = {
        release_client.post(
            "/v2/models/digits/infer",
            json=v2_body(pixels[:1]),
            headers={"x-targeting-key": f"user-{i}"},
        ).headers["x-model-version"]
        for i in range(200)
    }
    assert versions == {"1", VERSION}
