"""The dashboard's pages and its login: thin handlers over the session, the templates and the
history. Every figure on a page comes from the admin API, which the page's script calls."""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from gateway.dataplane.codec import encode_json
from gateway.errors import ModelNotFound
from gateway.http.auth import viewer_guard
from gateway.security import Role, TokenTable
from gateway.ui.dashboard import Dashboard
from gateway.ui.session import SESSION_COOKIE, Session, open_session, session_cookie_value

LOGIN_PATH = "/ui/login"
HOME_PATH = "/ui/"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
# Pages load their code and styles from /ui/static only; nothing inline, nothing remote.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}


def _session(request: Request[Any, Any, Any]) -> Session | None:
    value = request.cookies.get(SESSION_COOKIE)
    table: TokenTable = request.app.state.tokens
    return open_session(value, table, time.time()) if value else None


def _cookie(value: str, max_age: int) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        path="/",
        max_age=max_age,
        httponly=True,
        secure=True,
        samesite="strict",
    )


def _page(name: str, context: dict[str, Any], status: int = 200) -> Template:
    return Template(template_name=name, context=context, status_code=status, headers=PAGE_HEADERS)


def _to_login(path: str) -> Redirect:
    return Redirect(path=LOGIN_PATH, query_params={"next": path}, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a dashboard path of this site: never another host (`//evil`, `/\\evil`)."""
    if target and target.startswith("/ui/") and "//" not in target and "\\" not in target:
        return target
    return HOME_PATH


def _login_context(
    request: Request[Any, Any, Any],
    target: str | None,
    *,
    error: str | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    # Browsers keep a Secure cookie only from HTTPS, or from localhost over HTTP.
    insecure = request.url.scheme == "http" and request.url.hostname not in LOCAL_HOSTS
    return {
        "page": "login",
        "next": _safe_next(target),
        "error": error,
        "notice": notice,
        "insecure": insecure,
    }


def _context(dashboard: Dashboard, session: Session, page: str, **extra: Any) -> dict[str, Any]:
    return {
        "page": page,
        "user": session.principal.name,
        "role": session.principal.role.value,
        "is_manager": session.principal.role is Role.RELEASE_MANAGER,
        "session_csrf": session.csrf_token,
        "refresh_ms": dashboard.refresh_ms,
        "models": dashboard.model_names(),
        **extra,
    }


class DashboardPages(Controller):
    """Login, logout and the three pages (overview, release, shadow review)."""

    path = "/ui"
    include_in_schema = False

    @get("/login")
    async def login_form(
        self,
        request: Request[Any, Any, Any],
        next_path: Annotated[str | None, QueryParameter(name="next")] = None,
        expired: FromQuery[bool] = False,
    ) -> Template | Redirect:
        if _session(request) is not None:
            return Redirect(path=_safe_next(next_path), status_code=303)
        notice = "Your session ended: log in again." if expired else None
        return _page("login.html", _login_context(request, next_path, notice=notice))

    @post("/login", status_code=303)
    async def login(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
    ) -> Template | Redirect:
        form = await request.form()
        target = _safe_next(str(form.get("next", "")))
        # A login another site's page submits is refused (login CSRF); a browser says where
        # a request comes from in Sec-Fetch-Site.
        if request.headers.get("sec-fetch-site", "same-origin") not in {"same-origin", "none"}:
            error = "Log in from the dashboard's own page."
            return _page("login.html", _login_context(request, target, error=error), 403)
        table: TokenTable = request.app.state.tokens
        if len(table) == 0:
            error = "The dashboard is disabled: no admin token is configured."
            return _page("login.html", _login_context(request, target, error=error), 401)
        token = str(form.get("token", "")).strip()
        principal = table.authenticate(token) if token else None
        if principal is None:
            error = "That token is not valid." if token else "Enter your admin token."
            return _page("login.html", _login_context(request, target, error=error), 401)
        ttl = int(dashboard.session_ttl_s)
        value = session_cookie_value(token, int(time.time()) + ttl)
        return Redirect(path=target, status_code=303, cookies=[_cookie(value, ttl)])

    @post("/logout", status_code=303)
    async def logout(self) -> Redirect:
        return Redirect(path=LOGIN_PATH, status_code=303, cookies=[_cookie("", 0)])

    @get("/")
    async def overview(
        self, request: Request[Any, Any, Any], dashboard: NamedDependency[Dashboard]
    ) -> Template | Redirect:
        session = _session(request)
        if session is None:
            return _to_login(HOME_PATH)
        return _page("overview.html", _context(dashboard, session, "overview"))

    @get("/releases/{model:str}")
    async def release(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        dashboard: NamedDependency[Dashboard],
    ) -> Template | Redirect:
        return self._model_page(request, dashboard, model, "release")

    @get("/shadow/{model:str}")
    async def shadow(
        self,
        request: Request[Any, Any, Any],
        model: FromPath[str],
        dashboard: NamedDependency[Dashboard],
    ) -> Template | Redirect:
        return self._model_page(request, dashboard, model, "shadow")

    def _model_page(
        self, request: Request[Any, Any, Any], dashboard: Dashboard, model: str, page: str
    ) -> Template | Redirect:
        session = _session(request)
        if session is None:
            return _to_login(request.url.path)
        context = _context(dashboard, session, page, model=model)
        if model not in context["models"]:
            return _page("missing.html", context | {"page": "missing"}, 404)
        return _page(f"{page}.html", context)

    @get("/api/history/{model:str}", guards=[viewer_guard])
    async def history(
        self,
        model: FromPath[str],
        dashboard: NamedDependency[Dashboard],
        since: FromQuery[float | None] = None,
    ) -> Response[bytes]:
        """The model's sampled figures per interval, oldest first (after `since`)."""
        if model not in dashboard.model_names():
            raise ModelNotFound(f"model {model!r} is not served here")
        return Response(
            encode_json(
                {
                    "model": model,
                    "interval_s": dashboard.history.interval_s,
                    "keep_s": dashboard.history.keep_s,
                    "samples": dashboard.history.samples(model, since),
                }
            ),
            media_type="application/json",
            headers={"cache-control": "no-store"},
        )
