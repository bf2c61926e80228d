"""Release Gateway: serve ML model versions and release new ones gradually and safely."""

from gateway.app import create_app
from gateway.settings import Settings

__all__ = ["Settings", "create_app"]
__version__ = "0.1.0"
