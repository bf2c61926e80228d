"""The data plane: plain Python that turns V2 requests into predictions, with no HTTP in it."""

from gateway.dataplane.dataplane import DataPlane, Limits, Prediction, new_request_id
from gateway.dataplane.v2 import (
    InferenceRequest,
    InferenceResponse,
    RequestInput,
    RequestOutput,
    ResponseOutput,
)

__all__ = [
    "DataPlane",
    "InferenceRequest",
    "InferenceResponse",
    "Limits",
    "Prediction",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "new_request_id",
]
