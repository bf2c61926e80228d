"""Held-out accuracy of a loaded version, measured by running its real runtime.

The predicted class is read by the rule every part of the gateway uses
(`gateway.dataplane.classes`): the offline figures judge the same answer as live feedback and
shadow agreement, named labels included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.dataplane.classes import predicted_classes
from gateway.repository import LoadedVersion
from gateway.repository.manifest import Manifest
from gateway.runtimes.base import Tensor


@dataclass(frozen=True, slots=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    samples: int
    error: str | None = None


def score(outputs: Mapping[str, Tensor], manifest: Manifest, truth: Sequence[int]) -> Evaluation:
    """Accuracy and macro-F1 of a version's `outputs` against the true class indices, each
    named as the manifest names its classes."""
    from sklearn.metrics import accuracy_score, f1_score

    predicted = predicted_classes(outputs, manifest.outputs, manifest.labels)
    if predicted is None:
        return Evaluation(0.0, 0.0, len(truth), "the version has no class output")
    names = manifest.labels
    expected = [names[i] if names and 0 <= i < len(names) else str(i) for i in truth]
    return Evaluation(
        accuracy=float(accuracy_score(expected, predicted)),
        macro_f1=float(f1_score(expected, predicted, average="macro")),
        samples=len(truth),
    )


def evaluate_version(loaded: LoadedVersion) -> Evaluation:
    """Accuracy and macro-F1 of `loaded` on the demo's held-out digits."""
    from gateway.demo.digits import held_out_digits

    features, labels = held_out_digits()
    manifest, runtime = loaded.ready_runtime()
    try:
        outputs = runtime.predict({manifest.inputs[0].name: features})
    except Exception as exc:
        return Evaluation(0.0, 0.0, len(labels), f"{type(exc).__name__}: {exc}")
    return score(outputs, manifest, labels.tolist())
