"""Health, readiness and metadata of the server and its models (V2), and `/metrics`."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.dataplane.codec import encode_json
from gateway.dataplane.v2 import ModelMetadata, ServerMetadata
from gateway.errors import ModelNotReady
from gateway.http.schemas import (
    BAD_REQUEST,
    NOT_FOUND,
    Live,
    ModelMetadataBody,
    Ready,
    ServerMetadataBody,
    VersionReadiness,
    error,
    ok,
)
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import LoadedVersion, ModelEntry, ModelRegistry, VersionState

SERVER_NAME = "release-gateway"
EXTENSIONS = ["model_repository", "binary_tensor_data", "kserve_v1_predict"]


def _json(value: Any, status: int = 200) -> Response[bytes]:
    return Response(encode_json(value), status_code=status, media_type="application/json")


_METADATA = {
    200: ok(ModelMetadataBody),
    **BAD_REQUEST,
    **NOT_FOUND,
    503: error("The version has no readable manifest"),
}
_READINESS = {
    200: ok(VersionReadiness),
    503: ok(VersionReadiness, "The version cannot answer; `reason` says why"),
    **BAD_REQUEST,
    **NOT_FOUND,
}


class HealthController(Controller):
    """Liveness and readiness as V2 defines them, and the Prometheus exposition."""

    tags = ["health"]

    @get("/v2/health/live", summary="The process is up", responses={200: ok(Live)})
    async def live(self) -> Response[bytes]:
        return _json({"live": True})

    @get(
        "/v2/health/ready",
        summary="Every model's serving version is loaded",
        responses={200: ok(Ready), 503: ok(Ready, "Some serving version is not loaded")},
    )
    async def ready(self, registry: NamedDependency[ModelRegistry]) -> Response[bytes]:
        ready = registry.is_ready()
        return _json({"ready": ready}, 200 if ready else 503)

    @get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(self, metrics: NamedDependency[GatewayMetrics]) -> Response[bytes]:
        # Merging several workers' snapshots reads files: off the event loop.
        return Response(await asyncio.to_thread(metrics.exposition), media_type=CONTENT_TYPE_LATEST)


class MetadataController(Controller):
    """Server and model metadata; a broken version says why it is not ready."""

    tags = ["metadata"]

    @get("/v2", summary="Server metadata", responses={200: ok(ServerMetadataBody)})
    async def server(self) -> Response[bytes]:
        from gateway import __version__

        return _json(ServerMetadata(SERVER_NAME, __version__, EXTENSIONS))

    @get(
        "/v2/models/{model:str}",
        summary="Metadata of the model's serving version",
        responses=_METADATA,
    )
    async def model(
        self, model: FromPath[str], registry: NamedDependency[ModelRegistry]
    ) -> Response[bytes]:
        entry = registry.model(model)
        return _json(_metadata(entry, registry.version(model)))

    @get(
        "/v2/models/{model:str}/versions/{version:str}",
        summary="Metadata of one version",
        responses=_METADATA,
    )
    async def version(
        self, model: FromPath[str], version: FromPath[str], registry: NamedDependency[ModelRegistry]
    ) -> Response[bytes]:
        entry = registry.model(model)
        return _json(_metadata(entry, registry.version(model, version)))

    @get(
        "/v2/models/{model:str}/ready",
        summary="The serving version can answer",
        responses=_READINESS,
    )
    async def model_ready(
        self, model: FromPath[str], registry: NamedDependency[ModelRegistry]
    ) -> Response[bytes]:
        return _ready(registry.version(model))

    @get(
        "/v2/models/{model:str}/versions/{version:str}/ready",
        summary="The version can answer",
        responses=_READINESS,
    )
    async def version_ready(
        self, model: FromPath[str], version: FromPath[str], registry: NamedDependency[ModelRegistry]
    ) -> Response[bytes]:
        return _ready(registry.version(model, version))


def _ready(loaded: LoadedVersion) -> Response[bytes]:
    ready = loaded.state is VersionState.READY
    body: dict[str, Any] = {"name": loaded.model, "version": loaded.version, "ready": ready}
    if not ready:
        body["reason"] = loaded.reason
    return _json(body, 200 if ready else 503)


def _metadata(entry: ModelEntry, loaded: LoadedVersion) -> ModelMetadata:
    manifest = loaded.manifest
    if manifest is None:
        raise ModelNotReady(
            f"model {loaded.model!r} version {loaded.version!r} "
            f"has no readable manifest: {loaded.reason}"
        )
    parameters: dict[str, Any] = {
        "version": loaded.version,
        "default_version": entry.default_version,
        "state": loaded.state.value,
        "runtime": manifest.runtime,
        "description": manifest.description,
        "created": manifest.created,
    }
    if loaded.reason:
        parameters["reason"] = loaded.reason
    if manifest.labels is not None:
        parameters["labels"] = manifest.labels
    if manifest.metrics is not None:
        parameters["offline_metrics"] = manifest.metrics
    return ModelMetadata(
        name=entry.name,
        versions=entry.sorted_versions(),
        platform=manifest.platform or manifest.runtime,
        inputs=manifest.inputs,
        outputs=manifest.outputs,
        parameters=parameters,
    )
