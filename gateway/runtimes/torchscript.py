"""TorchScript artifacts run by torch (imported only here, when such a version loads).

`torch.jit.load` reads TorchScript archives with torch's own restricted loader: it
rebuilds tensors and scripted code, never arbitrary pickled Python objects.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gateway.repository.manifest import Manifest
from gateway.runtimes.base import RuntimeOptions, Tensor


class TorchScriptRuntime:
    """Runs `model.pt`; inputs are passed positionally in manifest order."""

    def __init__(self, artifact: Path, manifest: Manifest, options: RuntimeOptions) -> None:
        self._artifact = artifact
        self._manifest = manifest
        self._options = options
        self._module: Any = None
        self._input_names = [spec.name for spec in manifest.inputs]
        self._output_names = [spec.name for spec in manifest.outputs]

    def load(self) -> None:
        torch.set_num_threads(self._options.intra_op_threads)
        with warnings.catch_warnings():
            # torch deprecates TorchScript in favour of torch.export, yet still loads it;
            # the warning would repeat on every load and tells an operator nothing to do.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch")
            module = torch.jit.load(str(self._artifact), map_location="cpu")  # type: ignore[no-untyped-call]
        module.eval()
        self._module = module

    def predict(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self._module is None:
            raise RuntimeError("predict before load")
        arguments = [
            torch.from_numpy(np.require(inputs[name], requirements=["C", "W"]))
            for name in self._input_names
        ]
        with torch.inference_mode():
            result = self._module(*arguments)
        tensors = list(result) if isinstance(result, tuple | list) else [result]
        if len(tensors) != len(self._output_names):
            raise ValueError(
                f"module returned {len(tensors)} outputs, "
                f"manifest declares {len(self._output_names)}"
            )
        return {
            name: tensor.detach().cpu().numpy()
            for name, tensor in zip(self._output_names, tensors, strict=True)
        }

    def unload(self) -> None:
        self._module = None
