"""ONNX artifacts run by onnxruntime (imported only here)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import onnxruntime as ort

from gateway.repository.manifest import Manifest
from gateway.runtimes.base import RuntimeOptions, Tensor


class OnnxRuntime:
    """Runs `model.onnx` on the CPU execution provider."""

    def __init__(self, artifact: Path, manifest: Manifest, options: RuntimeOptions) -> None:
        self._artifact = artifact
        self._manifest = manifest
        self._options = options
        self._session: ort.InferenceSession | None = None
        self._output_names = [spec.name for spec in manifest.outputs]

    def load(self) -> None:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self._options.intra_op_threads
        session_options.inter_op_num_threads = 1
        session_options.log_severity_level = 4  # failures are logged by the gateway itself
        session = ort.InferenceSession(
            str(self._artifact), session_options, providers=["CPUExecutionProvider"]
        )
        declared = {spec.name for spec in self._manifest.inputs}
        actual = {node.name for node in session.get_inputs()}
        if declared != actual:
            raise ValueError(
                f"manifest inputs {sorted(declared)} differ from the graph's {sorted(actual)}"
            )
        self._session = session

    def predict(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self._session is None:
            raise RuntimeError("predict before load")
        results = self._session.run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, results, strict=True))

    def unload(self) -> None:
        self._session = None
