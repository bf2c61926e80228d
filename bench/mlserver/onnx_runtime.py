"""An MLServer runtime for an ONNX file, set up the way the gateway runs one.

MLServer 1.7 ships no ONNX runtime, so bench/batch_bench.py serves the demo's model.onnx
through this `mlserver.MLModel`: onnxruntime's CPU provider with one intra-op and one
inter-op thread, as gateway/runtimes/onnx.py opens it. Every input is decoded by name with
MLServer's NumPy codec (datatype and shape as the request declares them); the outputs are
the graph's, encoded the same way. MLServer's adaptive batcher (model-settings.json's
`max_batch_size`, `max_batch_time`) merges single-row requests along the first axis before
`predict` sees them and splits the answers again. To show that it does, the runtime prints
how many rows and calls it has run, at most every few seconds, on its stdout
(`BATCH_STATS {"rows": ..., "calls": ...}`); batch_bench.py reads the last such line.

This file runs only inside the benchmark's MLServer venv (bench/mlserver/setup.sh), never in
the project's: mlserver is not a project dependency, so mypy cannot resolve its imports
there, and the inline setting below tells mypy not to check this file.
"""

# mypy: ignore-errors

from __future__ import annotations

import json
import time

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

STATS_MARKER = "BATCH_STATS "
STATS_INTERVAL_S = 2.0


class OnnxRuntime(MLModel):
    """model.onnx (the `uri` parameter) on the CPU provider, one thread."""

    _rows = 0
    _calls = 0
    _stats_at = 0.0

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 4
        self._session = ort.InferenceSession(
            await get_model_uri(self._settings), options, providers=["CPUExecutionProvider"]
        )
        self._input_types = {node.name: node.type for node in self._session.get_inputs()}
        self._output_names = [node.name for node in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {}
        for request_input in payload.inputs:
            if request_input.name not in self._input_types:
                raise InferenceError(f"unknown input {request_input.name!r}")
            inputs[request_input.name] = NumpyCodec.decode_input(request_input)
        missing = sorted(set(self._input_types) - set(inputs))
        if missing:
            raise InferenceError(f"missing inputs {missing}")
        try:
            results = self._session.run(self._output_names, inputs)
        except Exception as exc:  # onnxruntime's own error types for bad shapes and dtypes
            raise InferenceError(f"inference failed: {exc}") from exc
        self._count(len(results[0]))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output(name, np.asarray(value))
                for name, value in zip(self._output_names, results, strict=True)
            ],
        )

    def _count(self, rows: int) -> None:
        self._rows += rows
        self._calls += 1
        now = time.monotonic()
        if now - self._stats_at >= STATS_INTERVAL_S:
            self._stats_at = now
            stats = {"rows": self._rows, "calls": self._calls}
            print(STATS_MARKER + json.dumps(stats), flush=True)
