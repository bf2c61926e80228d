"""The contract every runtime meets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec
import numpy.typing as npt

Tensor = npt.NDArray[Any]


class RuntimeOptions(msgspec.Struct, frozen=True):
    """Knobs shared by runtimes; threads=1 suits many small concurrent requests best."""

    intra_op_threads: int = 1


class ModelRuntime(Protocol):
    """One loaded artifact. `predict` takes and returns tensors keyed by signature name."""

    def load(self) -> None:
        """Read the artifact and make it ready; raise on any failure."""

    def predict(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Run one batch. Outputs are keyed by the manifest's output names."""

    def unload(self) -> None:
        """Release what `load` took."""
