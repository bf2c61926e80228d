"""The baseline for `bench/serve_bench.py`: the smallest honest Litestar + onnxruntime V2 server.

One ONNX model behind `POST /v2/models/{model}/infer`: the raw body is decoded into a V2
request with msgspec, each input becomes a numpy array of the graph's dtype and the shape
the request declares, onnxruntime runs it (with the gateway's session options:
intra_op_num_threads=1, inter_op_num_threads=1, CPU provider), and a V2 JSON response is
encoded with msgspec. Inference runs inline on the event loop, as in the gateway. No
routing, metrics, logging or per-request checks beyond what the decode needs.

    MINIMAL_MODEL_PATH=models/digits/1/model.onnx \\
        python -m granian --interface asgi --loop uvloop --factory --workers 1 \\
        bench.minimal_app:create_app

`MINIMAL_MODEL_NAME` (default: the directory above the version's, e.g. `digits`) and
`MINIMAL_MODEL_VERSION` (default: the version directory's name, e.g. `1`) name the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnxruntime as ort
from litestar import Litestar, Request, Response, post

MODEL_PATH_ENV = "MINIMAL_MODEL_PATH"
MODEL_NAME_ENV = "MINIMAL_MODEL_NAME"
MODEL_VERSION_ENV = "MINIMAL_MODEL_VERSION"

# onnxruntime's type strings and the V2 datatype names for the tensors a model may exchange.
_ORT_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
}
_V2_TO_NUMPY: dict[str, type[Any]] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT64": np.int64,
    "INT32": np.int32,
    "BOOL": np.bool_,
}


class RequestInput(msgspec.Struct, frozen=True):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceRequest(msgspec.Struct, frozen=True):
    inputs: list[RequestInput]
    id: str | None = None


class ResponseOutput(msgspec.Struct, frozen=True):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(msgspec.Struct, frozen=True):
    model_name: str
    model_version: str
    id: str
    outputs: list[ResponseOutput]


class _Model:
    """One onnxruntime session and the V2 datatypes of its inputs and outputs."""

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = {node.name: _ORT_TO_V2[node.type] for node in self.session.get_inputs()}
        self.outputs = [(node.name, _ORT_TO_V2[node.type]) for node in self.session.get_outputs()]
        self.output_names = [name for name, _ in self.outputs]


_decoder = msgspec.json.Decoder(InferenceRequest)
_encoder = msgspec.json.Encoder()


def _error(status: int, message: str) -> Response[bytes]:
    return Response(
        _encoder.encode({"error": message}), status_code=status, media_type="application/json"
    )


def create_app() -> Litestar:
    """granian's factory target: load the model named by `MINIMAL_MODEL_PATH`, build the app."""
    path = Path(os.environ[MODEL_PATH_ENV]).resolve()
    served_name = os.environ.get(MODEL_NAME_ENV, path.parent.parent.name)
    served_version = os.environ.get(MODEL_VERSION_ENV, path.parent.name)
    model = _Model(path)

    @post("/v2/models/{model_name:str}/infer", status_code=200)
    async def infer(request: Request[Any, Any, Any], model_name: str) -> Response[bytes]:
        if model_name != served_name:
            return _error(404, f"no model {model_name!r}")
        try:
            v2 = _decoder.decode(await request.body())
            feeds = {}
            for given in v2.inputs:
                if model.inputs.get(given.name) != given.datatype:
                    return _error(400, f"unexpected input {given.name!r} {given.datatype}")
                dtype = _V2_TO_NUMPY[given.datatype]
                feeds[given.name] = np.asarray(given.data, dtype=dtype).reshape(given.shape)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            return _error(400, f"invalid inference request: {exc}")
        if feeds.keys() != model.inputs.keys():
            return _error(400, f"the model takes inputs {sorted(model.inputs)}")
        results = model.session.run(model.output_names, feeds)
        body = _encoder.encode(
            InferenceResponse(
                model_name=served_name,
                model_version=served_version,
                id=v2.id or os.urandom(12).hex(),
                outputs=[
                    ResponseOutput(
                        name=name,
                        shape=list(array.shape),
                        datatype=datatype,
                        data=array.ravel().tolist(),
                    )
                    for (name, datatype), array in zip(model.outputs, results, strict=True)
                ],
            )
        )
        return Response(body, media_type="application/json")

    return Litestar(route_handlers=[infer], debug=False)
