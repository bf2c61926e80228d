"""Running the app under granian: the factory each worker process calls to build its app."""

from __future__ import annotations

import os
from collections.abc import Mapping

from litestar import Litestar

from gateway.app import create_app
from gateway.observability.logging import configure_logging
from gateway.settings import Settings


def app_from_environment() -> Litestar:
    """granian's factory target: settings come from the worker's environment when it starts."""
    settings = Settings.from_mapping(os.environ)
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


def serve(settings: Settings, environ: Mapping[str, str]) -> None:
    """Serve with granian; `environ` (carrying the settings) is what each worker reads."""
    from granian import Granian
    from granian.constants import Interfaces, Loops

    os.environ.update(environ)
    Granian(
        "gateway.server:app_from_environment",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        # uvloop's call_soon_threadsafe and transports cost the loop less per request than
        # asyncio's; every answer from an instance thread crosses back through the first.
        loop=Loops.uvloop,
        workers=settings.workers,
        factory=True,
        log_access=False,
        log_level=settings.log_level.lower(),  # type: ignore[arg-type]
    ).serve()
