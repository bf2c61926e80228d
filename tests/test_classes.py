"""The one rule for a version's predicted class (`gateway.dataplane.classes`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway.dataplane.classes import predicted_classes
from gateway.repository.manifest import TensorSpec

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
