"""Release Gateway: serve ML model versions and release new ones gradually and safely.

`create_app` and `Settings` are imported on first use, so that the CLI's client commands
(`gateway release ...`) start without loading the server (Litestar, the runtimes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app
    from gateway.settings import Settings

__all__ = ["Settings", "create_app"]
__version__ = "0.1.0"

_PUBLIC = {"create_app": "gateway.app", "Settings": "gateway.settings"}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
