"""The one rule for a version's predicted class (`gateway.dataplane.classes`), and every part
of the gateway reading it the same way."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from gateway import Settings, create_app
from gateway.dataplane.classes import predicted_classes
from gateway.demo.digits import held_out_digits
from gateway.demo.evaluation import evaluate_version
from gateway.repository import ModelRegistry
from gateway.repository.manifest import TensorSpec
from gateway.runtimes import RuntimeOptions
from tests.conftest import VIEWER, v2_body
from tests.shadow_support import release_flag, write_flags

PROBS = TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])
LABEL = TensorSpec(name="label", datatype="INT64", shape=[-1])


def probabilities(*rows: list[float]) -> np.ndarray[Any, Any]:
    return np.array(rows, dtype=np.float32)


def test_predicted_class_is_the_argmax_of_the_scores_named_by_labels() -> None:
    """The class comes from the first [rows, classes] float output (before any label output),
    named by the labels when their count fits, else by index."""
    outputs = {
        "label": np.array([9, 9], dtype=np.int64),
        "probabilities": probabilities([0.1, 0.7, 0.2], [0.5, 0.2, 0.3]),
    }

    assert predicted_classes(outputs, [LABEL, PROBS], ["cat", "dog", "eel"]) == ["dog", "cat"]
    assert predicted_classes(outputs, [LABEL, PROBS], None) == ["1", "0"]
    assert predicted_classes(outputs, [LABEL, PROBS], ["only", "two"]) == ["1", "0"]


def test_predicted_class_falls_back_to_an_integer_label_output() -> None:
    """Without a score output the first [rows] integer output is the class, named by the
    labels where it indexes them; with neither, there is no class (None)."""
    outputs = {"label": np.array([2, 0, 7], dtype=np.int64)}

    assert predicted_classes(outputs, [LABEL], ["a", "b", "c"]) == ["c", "a", "7"]
    assert predicted_classes({"value": np.array([0.5], dtype=np.float32)}, [LABEL], None) is None


NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def named_models(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo repository plus `2n` and `3n`: versions 2 and 3 whose manifests name their
    classes (the same artifacts)."""
    root = Path(shutil.copytree(demo_models, tmp_path_factory.mktemp("named") / "models"))
    for version in ("2", "3"):
        named = root / "digits" / f"{version}n"
        shutil.copytree(root / "digits" / version, named)
        manifest = json.loads((named / "manifest.json").read_text())
        manifest["labels"] = NAMES
        (named / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_feedback_shadow_agreement_and_offline_evaluation_share_one_class_rule(
    settings: Settings, named_models: Path, tmp_path: Path
) -> None:
    """For a model whose manifest names its classes, feedback joins by the class names, the
    shadow's predictions join as names too, and the offline evaluation scores the same names:
    one rule, so the three agree on what the model predicted."""
    flag = release_flag([("3n", 100)], serve="2n")
    app_settings = msgspec.structs.replace(
        settings,
        models_dir=named_models,
        flags_dir=write_flags(tmp_path / "flags", flag),
    )
    features, truth = held_out_digits()
    registry = ModelRegistry.load(named_models, RuntimeOptions())
    by_name = evaluate_version(registry.version("digits", "2n"))
    by_index = evaluate_version(registry.version("digits", "2"))
    expected_2 = registry.version("digits", "2").ready_runtime()[1].predict({"pixels": features})
    expected_3 = registry.version("digits", "3").ready_runtime()[1].predict({"pixels": features})
    registry.unload()
    assert by_name.accuracy == by_index.accuracy > 0.9

    with TestClient(app=create_app(app_settings)) as client:
        for index in range(20):
            answer = client.post(
                "/v2/models/digits/infer", json=v2_body(features[index], f"r{index}")
            )
            assert answer.headers["x-model-version"] == "2n"
        deadline = time.monotonic() + 10
        joined: dict[str, Any] = {}
        while time.monotonic() < deadline:  # the shadow's answers reach the log off the path
            items = [{"id": f"r{i}", "label": NAMES[int(truth[i])]} for i in range(20)]
            status = client.get("/admin/releases/digits", headers=VIEWER).json()
            if status["guard"]["shadow_versions"].get("3n", {}).get("requests", 0) == 20:
                joined = client.post("/v2/models/digits/feedback", json=items).json()
                break
            time.sleep(0.05)
    assert joined["accepted"] == 20
    right_2 = int((expected_2["label"][:20] == truth[:20]).sum())
    right_3 = int((expected_3["label"][:20] == truth[:20]).sum())
    assert joined["versions"]["2n"]["correct"] == right_2
    assert joined["versions"]["3n:shadow"]["correct"] == right_3
    assert right_3 < right_2  # version 3 learnt corrupted labels: the comparison means something
