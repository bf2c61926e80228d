"""Held-out accuracy of a loaded version, measured by running its real runtime."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.repository import LoadedVersion


@dataclass(frozen=True, slots=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    samples: int
    error: str | None = None


def evaluate_version(loaded: LoadedVersion) -> Evaluation:
    """Accuracy and macro-F1 of `loaded` on the demo's held-out digits."""
    from sklearn.metrics import accuracy_score, f1_score

    from gateway.demo.digits import held_out_digits

    features, labels = held_out_digits()
    manifest, runtime = loaded.ready_runtime()
    try:
        outputs = runtime.predict({manifest.inputs[0].name: features})
    except Exception as exc:
        return Evaluation(0.0, 0.0, len(labels), f"{type(exc).__name__}: {exc}")
    predicted = np.asarray(outputs["label"]).astype(np.int64)
    return Evaluation(
        accuracy=float(accuracy_score(labels, predicted)),
        macro_f1=float(f1_score(labels, predicted, average="macro")),
        samples=len(labels),
    )
