"""The composition root: `create_app(settings)` builds and wires every part of the gateway."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from gateway.dataplane import DataPlane
from gateway.http.errors import EXCEPTION_HANDLERS
from gateway.http.inference import InferenceController
from gateway.http.metadata import HealthController, MetadataController
from gateway.observability.access import AccessLog
from gateway.observability.metrics import GatewayMetrics
from gateway.repository import ModelRegistry, VersionState
from gateway.runtimes import RuntimeOptions
from gateway.settings import Settings


def _constant(value: Any) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def create_app(
    settings: Settings,
    *,
    registry: ModelRegistry | None = None,
    metrics: GatewayMetrics | None = None,
) -> Litestar:
    """Load the model repository and build the ASGI app around it."""
    from gateway import __version__

    metrics = metrics or GatewayMetrics()
    if registry is None:
        registry = ModelRegistry.load(
            settings.models_dir, RuntimeOptions(intra_op_threads=settings.intra_op_threads)
        )
    for entry in registry:
        for loaded in entry.versions.values():
            metrics.set_version_ready(
                entry.name, loaded.version, loaded.state is VersionState.READY
            )
    dataplane = DataPlane(registry, settings.limits, metrics)
    access_log = AccessLog(settings.access_log_sample)

    def on_startup() -> None:
        structlog.get_logger("gateway").info(
            "gateway_started",
            models={entry.name: entry.sorted_versions() for entry in registry},
            ready=registry.is_ready(),
        )

    return Litestar(
        route_handlers=[InferenceController, MetadataController, HealthController],
        dependencies={
            "dataplane": _constant(dataplane),
            "registry": _constant(registry),
            "metrics": _constant(metrics),
            "access_log": _constant(access_log),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_body_bytes,
        state=State({"metrics": metrics, "max_body_bytes": settings.max_body_bytes}),
        on_startup=[on_startup],
        on_shutdown=[registry.unload],
        openapi_config=OpenAPIConfig(title="Release Gateway", version=__version__, path="/schema"),
        debug=False,
    )
