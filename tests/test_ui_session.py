"""The dashboard's login and session cookie, and the admin API accepting that cookie (with its
CSRF token for changes) beside bearer tokens."""

from __future__ import annotations

import re
import time

from gateway.security import Role, TokenTable
from gateway.ui.session import (
    SESSION_COOKIE,
    csrf_matches,
    csrf_token,
    open_session,
    session_cookie_value,
)
from tests.conftest import MANAGER, MANAGER_TOKEN, VIEWER_TOKEN, Client

TABLE = TokenTable(
    [("ada", Role.RELEASE_MANAGER, MANAGER_TOKEN), ("vic", Role.VIEWER, VIEWER_TOKEN)]
)


def _login(client: Client, token: str) -> str:
    """Log in through the form; the session cookie's value."""
    response = client.post(
        "/ui/login", data={"token": token, "next": "/ui/"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    match = re.search(rf"{SESSION_COOKIE}=([^;]+)", response.headers["set-cookie"])
    assert match is not None
    return match.group(1)


def _cookie(value: str) -> dict[str, str]:
    return {"cookie": f"{SESSION_COOKIE}={value}"}


def _csrf_of_page(client: Client, cookie: str) -> str:
    page = client.get("/ui/releases/digits", headers=_cookie(cookie))
    assert page.status_code == 200, page.text
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text)
    assert match is not None
    return match.group(1)


def test_session_opens_only_for_a_configured_unexpired_token() -> None:
    """A cookie opens a session for its token's holder until it expires; an expired, malformed
    or forged cookie, or one whose token is no longer configured, opens none."""
    now = 1_000_000.0
    value = session_cookie_value(MANAGER_TOKEN, int(now) + 60)
    session = open_session(value, TABLE, now)
    assert session is not None
    assert session.principal.name == "ada"
    assert session.principal.role is Role.RELEASE_MANAGER
    assert MANAGER_TOKEN not in value  # encoded, so any token's characters fit a cookie
    assert open_session(value, TABLE, now + 61) is None
    assert (
        open_session(session_cookie_value("not-a-token-at-all-0000", int(now) + 60), TABLE, now)
        is None
    )
    assert open_session(value, TokenTable([("vic", Role.VIEWER, VIEWER_TOKEN)]), now) is None
    for broken in ("", "v1", "v1.abc.def", "v2." + value[3:], value + ".x", "v1.99999999999.%%%"):
        assert open_session(broken, TABLE, now) is None, broken


def test_csrf_token_is_bound_to_the_session() -> None:
    """The CSRF token differs between tokens and between logins, and only the exact one
    matches."""
    session = open_session(session_cookie_value(MANAGER_TOKEN, 2_000_000), TABLE, 1_000_000.0)
    assert session is not None
    assert session.csrf_token == csrf_token(MANAGER_TOKEN, 2_000_000)
    assert session.csrf_token != csrf_token(MANAGER_TOKEN, 2_000_001)
    assert session.csrf_token != csrf_token(VIEWER_TOKEN, 2_000_000)
    assert csrf_matches(session, session.csrf_token)
    assert not csrf_matches(session, None)
    assert not csrf_matches(session, "")
    assert not csrf_matches(
        session,
        session.csrf_token[:-1] + "0"
        if session.csrf_token[-1] != "0"
        else session.csrf_token[:-1] + "1",
    )


def test_login_sets_a_secure_http_only_strict_cookie(release_client: Client) -> None:
    """A valid token logs in: a 303 to the page asked for, and a cookie that scripts cannot
    read, that travels over HTTPS (or to localhost) only and never from another site; the
    token appears in no URL."""
    response = release_client.post(
        "/ui/login",
        data={"token": MANAGER_TOKEN, "next": "/ui/shadow/digits"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/shadow/digits"
    cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), (attribute, cookie)
    assert MANAGER_TOKEN not in response.headers["location"]


def test_login_refuses_a_bad_token_or_another_site(release_client: Client) -> None:
    """A wrong or empty token gets the form again (401) with the reason and no cookie; a login
    posted from another site's page is refused (403); `next` never leaves the dashboard."""
    for token, words in (("wrong-token-0123456789", "not valid"), ("", "Enter your admin token")):
        response = release_client.post("/ui/login", data={"token": token})
        assert response.status_code == 401
        assert words in response.text
        assert "set-cookie" not in response.headers
        assert 'role="alert"' in response.text
    response = release_client.post(
        "/ui/login", data={"token": MANAGER_TOKEN}, headers={"sec-fetch-site": "cross-site"}
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    for target in ("//evil.example/ui/", "https://evil.example/", "/ui/\\evil", "/admin/flags"):
        response = release_client.post(
            "/ui/login", data={"token": MANAGER_TOKEN, "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == "/ui/", target


def test_pages_send_a_visitor_without_session_to_login(release_client: Client) -> None:
    """Without a valid session every page redirects to the login form, which comes back to
    it; a logged-in visitor of the login form goes straight on."""
    for path in ("/ui/", "/ui/releases/digits", "/ui/shadow/digits"):
        response = release_client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next=")
    expired = session_cookie_value(MANAGER_TOKEN, int(time.time()) - 1)
    response = release_client.get("/ui/", headers=_cookie(expired), follow_redirects=False)
    assert response.status_code == 303
    cookie = _login(release_client, VIEWER_TOKEN)
    response = release_client.get(
        "/ui/login?next=/ui/shadow/digits", headers=_cookie(cookie), follow_redirects=False
    )
    assert response.headers["location"] == "/ui/shadow/digits"
    assert release_client.get("/ui/login?expired=true").text.count("Your session ended") == 1


def test_pages_carry_a_strict_content_security_policy_and_no_token(
    release_client: Client,
) -> None:
    """A page loads scripts and styles from the dashboard only, names the user and role, holds
    the CSRF token, and never the admin token; an unknown model is a 404 page."""
    cookie = _login(release_client, MANAGER_TOKEN)
    page = release_client.get("/ui/releases/digits", headers=_cookie(cookie))
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["cache-control"] == "no-store"
    assert MANAGER_TOKEN not in page.text
    assert "ada" in page.text
    assert 'id="actions"' in page.text
    assert "<script>" not in page.text  # nothing inline: the policy would block it
    missing = release_client.get("/ui/releases/nope", headers=_cookie(cookie))
    assert missing.status_code == 404
    assert "No model nope" in missing.text
    for asset in ("common.js", "charts.js", "release.js", "actions.js", "style.css"):
        assert release_client.get(f"/ui/static/{asset}").status_code == 200, asset


def test_viewer_pages_render_no_action_controls(release_client: Client) -> None:
    """A viewer's release page has no action section at all."""
    cookie = _login(release_client, VIEWER_TOKEN)
    page = release_client.get("/ui/releases/digits", headers=_cookie(cookie))
    assert page.status_code == 200
    assert 'id="actions"' not in page.text
    assert "vic" in page.text


def test_cookie_reads_the_admin_api_but_changes_need_the_csrf_token(
    release_client: Client,
) -> None:
    """With the session cookie the admin API reads; a change without the CSRF header, or with
    a wrong one, is refused (403) and changes nothing; with it the change is in force and
    audited under the user's name and reason, through the same If-Match check."""
    cookie = _login(release_client, MANAGER_TOKEN)
    before = release_client.get("/admin/releases/digits", headers=_cookie(cookie))
    assert before.status_code == 200
    body = {"version": "2", "percent": 30, "reason": "from the dashboard"}
    for headers in ({}, {"x-csrf-token": "0" * 64}):
        refused = release_client.post(
            "/admin/releases/digits/rollout", json=body, headers=_cookie(cookie) | headers
        )
        assert refused.status_code == 403
        assert "CSRF" in refused.json()["error"]
    assert release_client.get("/admin/releases/digits", headers=MANAGER).json()["split"] == {
        "baseline": 90.0,
        "candidate": 10.0,
    }
    csrf = {"x-csrf-token": _csrf_of_page(release_client, cookie)}
    stale = release_client.post(
        "/admin/releases/digits/rollout",
        json=body,
        headers=_cookie(cookie) | csrf | {"if-match": '"999"'},
    )
    assert stale.status_code == 412
    done = release_client.post(
        "/admin/releases/digits/rollout",
        json=body,
        headers=_cookie(cookie) | csrf | {"if-match": before.headers["etag"]},
    )
    assert done.status_code == 200, done.text
    assert done.json()["split"] == {"baseline": 70.0, "candidate": 30.0}
    entry = release_client.get("/admin/audit?model=digits&limit=1", headers=MANAGER).json()[
        "entries"
    ][0]
    assert (entry["actor"], entry["action"], entry["reason"]) == (
        "ada",
        "rollout",
        "from the dashboard",
    )


def test_viewer_cookie_cannot_change_even_with_its_csrf_token(release_client: Client) -> None:
    """The server refuses a viewer's change (403) whatever the page shows."""
    cookie = _login(release_client, VIEWER_TOKEN)
    csrf = {"x-csrf-token": _csrf_of_page(release_client, cookie)}
    for path, body in (
        ("/admin/releases/digits/rollout", {"version": "2", "percent": 50}),
        ("/admin/releases/digits/rollback", {"reason": "no"}),
        ("/admin/releases/digits/ramp", {"version": "2"}),
    ):
        response = release_client.post(path, json=body, headers=_cookie(cookie) | csrf)
        assert response.status_code == 403, path
        assert "release-manager" in response.json()["error"]


def test_bearer_token_wins_over_the_cookie_and_needs_no_csrf(release_client: Client) -> None:
    """A bearer token is judged on its own (no CSRF: no browser sends it by itself), even
    beside a session cookie; an invalid bearer is 401 whatever cookie comes with it."""
    viewer_cookie = _login(release_client, VIEWER_TOKEN)
    response = release_client.post(
        "/admin/releases/digits/rollout",
        json={"version": "2", "percent": 20},
        headers=MANAGER | _cookie(viewer_cookie),
    )
    assert response.status_code == 200
    manager_cookie = _login(release_client, MANAGER_TOKEN)
    response = release_client.get(
        "/admin/flags",
        headers={"authorization": "Bearer wrong-token-0123456789"} | _cookie(manager_cookie),
    )
    assert response.status_code == 401


def test_forged_or_expired_cookie_gets_401(release_client: Client) -> None:
    """The API answers 401 (the page's cue to show the login form) to a cookie that is not a
    valid session."""
    for value in (
        "garbage",
        session_cookie_value("forged-token-0123456789", int(time.time()) + 60),
        session_cookie_value(MANAGER_TOKEN, int(time.time()) - 5),
    ):
        response = release_client.get("/admin/releases/digits", headers=_cookie(value))
        assert response.status_code == 401
        assert "log in again" in response.json()["error"]


def test_logout_clears_the_cookie(release_client: Client) -> None:
    """Logging out answers with the session cookie emptied and expired, and the login form."""
    response = release_client.post("/ui/logout", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    cookie = response.headers["set-cookie"].lower()
    assert f'{SESSION_COOKIE}="";' in cookie or f"{SESSION_COOKIE}=;" in cookie
    assert "max-age=0" in cookie
