"""The one rule for a version's predicted class, shared by feedback, shadow agreement and the
offline evaluation, so that all three judge a model by the same answer.

The class of each row is the argmax of the first floating-point output of shape
[rows, classes] (probabilities, scores or logits), else the value of the first integer output
of shape [rows] (a label). A class index reads as the manifest's label when the manifest
names them (and, for scores, names one per column); otherwise as the index itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.repository.manifest import TensorSpec
from gateway.runtimes.base import Tensor


def predicted_classes(
    outputs: Mapping[str, Tensor], specs: Sequence[TensorSpec], labels: Sequence[str] | None
) -> list[str] | None:
    """The predicted class of each row, by the rule above; None for a model without one."""
    for spec in specs:
        array = outputs.get(spec.name)
        if array is not None and array.ndim == 2 and array.dtype.kind == "f" and array.shape[1] > 1:
            return _names(array.argmax(axis=1), labels, array.shape[1])
    for spec in specs:
        array = outputs.get(spec.name)
        if array is not None and array.ndim == 1 and array.dtype.kind in "iu":
            return _names(array, labels, None)
    return None


def _names(values: Tensor, labels: Sequence[str] | None, width: int | None) -> list[str]:
    indices: list[int] = values.tolist()
    if labels and (width is None or width == len(labels)):
        count = len(labels)
        return [labels[i] if 0 <= i < count else str(i) for i in indices]
    return [str(i) for i in indices]
