"""The composition root: `create_app(settings)` builds and wires every part of the gateway."""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

import structlog
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from gateway.control import ReleaseControl
from gateway.control.gate import OfflineGate, registry_manifests
from gateway.control.guarding import GuardService
from gateway.dataplane import DataPlane
from gateway.execution.budget import CpuBudget
from gateway.execution.pool import Executors
from gateway.flags.diff import json_diff
from gateway.flags.router import RouteError, Router
from gateway.flags.versions import registry_versions
from gateway.http.admin import ReleasesController
from gateway.http.allow import fix_allow_headers
from gateway.http.errors import EXCEPTION_HANDLERS
from gateway.http.fast_path import InferenceFastPath
from gateway.http.feedback import FeedbackController
from gateway.http.flags_api import AuditController, FlagsController
from gateway.http.inference import InferenceController
from gateway.http.metadata import HealthController, MetadataController
from gateway.http.ofrep import OfrepController
from gateway.http.ramp import RampController
from gateway.http.schemas import BEARER
from gateway.http.shadow import ShadowController
from gateway.interpreter import InterpreterTuning
from gateway.lifecycle import AccessLogFlusher, Lifecycle, Tuned
from gateway.observability.access import AccessLog
from gateway.observability.metrics import GatewayMetrics
from gateway.observability.worker_metrics import WorkerMetrics
from gateway.repository import ModelRegistry, VersionState
from gateway.runtimes import RuntimeOptions
from gateway.security import load_token_table
from gateway.serving import Serving
from gateway.settings import Settings
from gateway.shadow.service import ShadowService
from gateway.state import Store
from gateway.state.factory import open_store
from gateway.ui.dashboard import Dashboard

_log = structlog.get_logger("gateway")


def _constant(value: Any) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def _json_logs(settings: Settings) -> bool:
    return settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stdout.isatty()
    )


def _stdout_bytes() -> BinaryIO:
    return sys.stdout.buffer


def create_app(
    settings: Settings,
    *,
    registry: ModelRegistry | None = None,
    metrics: GatewayMetrics | None = None,
    store: Store | None = None,
) -> Litestar:
    """Load the model repository, open the store, and build the ASGI app around them."""
    from gateway import __version__

    metrics = metrics or GatewayMetrics()
    if registry is None:
        registry = ModelRegistry.load(
            settings.models_dir,
            RuntimeOptions(intra_op_threads=settings.intra_op_threads),
            settings.execution,
        )
    for entry in registry:
        for loaded in entry.versions.values():
            metrics.set_version_ready(
                entry.name, loaded.version, loaded.state is VersionState.READY
            )
    tokens = load_token_table(settings.admin_tokens, settings.admin_tokens_file)
    known_versions = registry_versions(registry)

    def on_route_error(error: RouteError) -> None:
        metrics.count_flag_error(error.model)
        _log.error(
            "flag_evaluation_failed",
            model=error.model,
            flag=error.flag_key,
            error_code=error.error_code,
            error=error.message,
        )

    router = Router(
        known_versions,
        lambda model: registry.model(model).default_version,
        on_error=on_route_error,
    )
    store = store or open_store(settings, diff=json_diff)
    control = ReleaseControl(
        store,
        router,
        known_versions,
        metrics,
        OfflineGate(registry_manifests(registry)),
        flags_dir=settings.flags_dir,
        poll_interval_s=settings.flag_poll_interval_s,
    )
    executors = Executors(registry, metrics.execution, CpuBudget(settings.shadow_cpu_share))
    dataplane = DataPlane(registry, executors, settings.limits, metrics)
    access_log = AccessLog(
        settings.access_log_sample, sink=_stdout_bytes if _json_logs(settings) else None
    )
    guard = GuardService(
        control,
        metrics,
        interval_s=settings.guard_interval_s,
        webhook_url=settings.guard_webhook_url,
        webhook_timeout_s=settings.guard_webhook_timeout_s,
        feedback_ttl_s=settings.feedback_ttl_s,
        feedback_max_entries=settings.feedback_max_entries,
        shared=store if settings.shared_state else None,
    )
    shadow = ShadowService(
        registry,
        executors,
        metrics,
        store,
        settings.shadow,
        on_outcomes=guard.on_shadow_outcomes,
        live_accuracy=guard.pair_accuracy,
    )
    serving = Serving(dataplane, router, shadow, guard, access_log, metrics)
    dashboard = Dashboard(settings, guard, registry)
    workers = (
        WorkerMetrics(metrics.registry, settings.metrics_dir)
        if settings.workers > 1 and settings.metrics_dir is not None
        else None
    )
    if workers is not None:
        metrics.merge_workers(workers)
    interpreter = InterpreterTuning(
        gc_freeze=settings.gc_freeze,
        gc_gen0_threshold=settings.gc_gen0_threshold,
        switch_interval_s=settings.switch_interval_ms / 1000.0,
    )

    def started() -> None:
        _log.info(
            "gateway_started",
            models={entry.name: entry.sorted_versions() for entry in registry},
            releases=sorted(router.releases),
            ready=registry.is_ready(),
            admin_tokens=len(tokens),
        )

    # Each part stops before what it needs: the executors (no more shadow answers) before
    # shadow mode writes its last records, shadow mode before the store closes.
    lifecycle = Lifecycle(
        [
            control,
            shadow,
            executors,
            guard,
            dashboard,
            workers,
            AccessLogFlusher(access_log),
            Tuned(interpreter, started),
        ]
    )

    async def on_shutdown() -> None:
        await lifecycle.stop()
        registry.unload()

    app = Litestar(
        route_handlers=[
            InferenceController,
            MetadataController,
            HealthController,
            FlagsController,
            ReleasesController,
            AuditController,
            OfrepController,
            ShadowController,
            RampController,
            FeedbackController,
            *dashboard.route_handlers,
        ],
        # The inference handlers take the one `serving` dependency: with two or more,
        # Litestar resolves them in a task group, which costs more than the model itself.
        dependencies={
            "serving": _constant(serving),
            "registry": _constant(registry),
            "metrics": _constant(metrics),
            "router": _constant(router),
            "control": _constant(control),
            "shadow_service": _constant(shadow),
            "guard": _constant(guard),
            "executors": _constant(executors),
            "dashboard": _constant(dashboard),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.max_body_bytes,
        state=State(
            {"metrics": metrics, "max_body_bytes": settings.max_body_bytes, "tokens": tokens}
        ),
        template_config=dashboard.template_config,
        on_startup=[lifecycle.start],
        on_shutdown=[on_shutdown],
        openapi_config=OpenAPIConfig(
            title="Release Gateway",
            version=__version__,
            path="/schema",
            components=Components(
                security_schemes={
                    BEARER: SecurityScheme(
                        type="http",
                        scheme="bearer",
                        description="An admin token (GATEWAY_ADMIN_TOKENS): viewer or "
                        "release-manager",
                    )
                }
            ),
        ),
        debug=False,
    )
    fix_allow_headers(app)
    if settings.inference_fast_path:
        app.asgi_handler = InferenceFastPath(
            app.asgi_handler, serving, metrics, settings.max_body_bytes
        )
    return app
