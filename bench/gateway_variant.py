"""Experiments only: the real gateway app with one cost taken away, to size that cost.

A granian factory for `serve_bench.py --minimal-target bench.gateway_variant:create_app`: the
"minimal" column then is the gateway itself (same code, same settings from GATEWAY_* in the
environment) with these switches, each on when its variable is "1":

- `VARIANT_SEQUENTIAL_DI`: resolve Litestar dependencies one after another instead of in an
  anyio task group (Litestar starts one whenever a handler has 2+ dependencies at one level);
  this patches a private Litestar method and is not a fix, only a measurement of the cost.
- `VARIANT_INLINE`: every version's requests run inline on the event loop, one call each, as
  before the executors (no deadline, no batching): what the executor's hand-off costs.
- `VARIANT_GC_FREEZE`: `gc.collect(); gc.freeze()` after the app is built, so the objects
  loaded at startup (torch, onnxruntime, the registry) are not rescanned by full collections.
- `VARIANT_NO_PREDICTION_LOG`: predictions are not logged for feedback to join (feedback
  then finds none): what the prediction log costs the request path.

Give it the gateway's settings with `--minimal-env`, e.g. GATEWAY_MODELS_DIR (absolute),
GATEWAY_FLAGS_DIR (an empty directory) and GATEWAY_STATE_PATH (a scratch file).
"""

from __future__ import annotations

import gc
import os
from typing import Any

from litestar import Litestar


async def _resolve_sequentially(self: Any, connection: Any, kwargs: dict[str, Any]) -> Any:
    from litestar._kwargs.cleanup import DependencyCleanupGroup
    from litestar._kwargs.dependencies import resolve_dependency

    cleanup_group = DependencyCleanupGroup()
    for batch in self.dependency_batches:
        for dependency in batch:
            await resolve_dependency(dependency, connection, kwargs, cleanup_group)
    return cleanup_group


def _run_inline() -> None:
    from gateway.errors import InferenceFailed
    from gateway.execution import executor
    from gateway.execution.batch import predict

    async def infer(self: Any, inputs: Any, rows: int) -> Any:
        answer = predict(self._manifest, self._runtime, [inputs])[0]
        if answer.outputs is None:
            raise InferenceFailed(self.model, self.version, answer.error, kind=answer.kind)
        return answer

    executor.VersionExecutor.infer = infer  # type: ignore[method-assign]


def _skip_prediction_log() -> None:
    from gateway.control.guarding import GuardService

    def record_prediction(self: Any, prediction: Any, request_id: str, variant: Any) -> None:
        return None

    GuardService.record_prediction = record_prediction  # type: ignore[method-assign]


def create_app() -> Litestar:
    if os.environ.get("VARIANT_SEQUENTIAL_DI") == "1":
        from litestar._kwargs import kwargs_model

        kwargs_model.KwargsModel.resolve_dependencies = _resolve_sequentially  # type: ignore[method-assign]
    if os.environ.get("VARIANT_INLINE") == "1":
        _run_inline()
    if os.environ.get("VARIANT_NO_PREDICTION_LOG") == "1":
        _skip_prediction_log()
    from gateway.server import app_from_environment

    app = app_from_environment()
    if os.environ.get("VARIANT_GC_FREEZE") == "1":
        gc.collect()
        gc.freeze()
    return app
