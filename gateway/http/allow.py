"""`Allow` on the automatic OPTIONS answers lists every method of the path."""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute


def fix_allow_headers(app: Litestar) -> None:
    """Point each automatic OPTIONS handler at its path's final route.

    Litestar builds a path's route again for each handler registered on it, and the OPTIONS
    handler it made first keeps reading the methods of that first, partial route: `OPTIONS
    /admin/flags/{key}` answered `Allow: GET, OPTIONS` without PUT.
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            fn = handler.fn
            code = getattr(fn, "__code__", None)
            closure = getattr(fn, "__closure__", None)
            if (
                getattr(fn, "__name__", "") == "options_handler"
                and code is not None
                and closure
                and code.co_freevars == ("self",)
                and isinstance(closure[0].cell_contents, HTTPRoute)
            ):
                closure[0].cell_contents = route
