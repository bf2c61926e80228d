"""Wires the dashboard: its routes (pages, history, static assets), its templates, and the
history sampler that the composition root starts and stops with the app."""

from __future__ import annotations

from pathlib import Path

from litestar.datastructures import CacheControlHeader
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from litestar.types import ControllerRouterHandler

from gateway.control.guarding import GuardService
from gateway.repository import ModelRegistry
from gateway.settings import Settings
from gateway.ui.history import ReleaseHistory
from gateway.ui.sampler import HistorySampler

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


class Dashboard:
    """The `/ui` pages of one process and the bounded history their charts read."""

    def __init__(self, settings: Settings, guard: GuardService, registry: ModelRegistry) -> None:
        self.session_ttl_s = settings.ui_session_ttl_s
        # Pages refresh as often as there is something new to draw, between 1 s and 5 s.
        self.refresh_ms = int(1000 * min(5.0, max(1.0, settings.ui_sample_interval_s)))
        self._registry = registry
        self.history = ReleaseHistory(settings.ui_history_s, settings.ui_sample_interval_s)
        self.sampler = HistorySampler(guard, self.model_names, self.history)
        self.template_config = TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine)

    def model_names(self) -> list[str]:
        return sorted(entry.name for entry in self._registry)

    @property
    def route_handlers(self) -> list[ControllerRouterHandler]:
        """The pages (which take this object as the `dashboard` dependency) and the assets."""
        from gateway.ui.pages import DashboardPages

        return [
            DashboardPages,
            create_static_files_router(
                path="/ui/static",
                directories=[STATIC],
                cache_control=CacheControlHeader(no_cache=True),
                include_in_schema=False,
            ),
        ]

    async def start(self) -> None:
        await self.sampler.start()

    async def stop(self) -> None:
        await self.sampler.stop()
