"""The dashboard in a real browser (Playwright driving Debian's headless Chromium) against one
real gateway under generated traffic: login, live pages, a disagreement, a release manager's
change, a viewer refused, and an accessibility check of every page at two screen sizes.

Screenshots of each page land in var/ui-screenshots/ (git-ignored)."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import MANAGER, MANAGER_TOKEN, VIEWER_TOKEN
from tests.server import RunningServer
from tests.ui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    Traffic,
    demo_gateway,
    generated_traffic,
    request,
)

pytestmark = pytest.mark.e2e
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# axe-core's WCAG 2.0/2.1 A and AA rules (labels, contrast, roles, names, structure) and its
# best practices (landmarks, headings, regions).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


@pytest.fixture(scope="module")
def gateway(demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with demo_gateway(demo_models, tmp_path_factory.mktemp("ui")) as server:
        yield server


@pytest.fixture(scope="module")
def traffic(gateway: RunningServer) -> Iterator[Traffic]:
    with generated_traffic(gateway) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Fresh browser contexts (their own cookies), closed after the test."""
    made: list[BrowserContext] = []

    def make(viewport: dict[str, int] = DESKTOP) -> BrowserContext:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(20_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def login(context: BrowserContext, server: RunningServer, token: str) -> Page:
    page = context.new_page()
    page.goto(f"{server.url}/ui/")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/ui/")
    return page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def refreshed(page: Page) -> None:
    expect(page.locator("#refresh-status")).to_contain_text("Updated at")


def test_login_keeps_the_token_in_a_secure_http_only_cookie(
    gateway: RunningServer, new_context: Callable[..., BrowserContext]
) -> None:
    """A visitor is sent to the login form; a wrong token is refused on the form; the right
    one opens the overview with the token in an HttpOnly, Secure, SameSite=Strict cookie that
    Chromium keeps over http://127.0.0.1, never in a URL and out of scripts' reach."""
    context = new_context()
    page = context.new_page()
    page.goto(f"{gateway.url}/ui/releases/digits")
    assert "/ui/login" in page.url
    shot(page, "login")
    page.get_by_label("Admin token").fill("wrong-token-0123456789")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    assert context.cookies() == []
    page.get_by_label("Admin token").fill(MANAGER_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{gateway.url}/ui/releases/digits")
    [cookie] = context.cookies()
    assert cookie["name"] == "gateway_session"
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (
        True,
        True,
        "Strict",
        "/",
    )
    assert MANAGER_TOKEN not in page.url
    assert "gateway_session" not in page.evaluate("document.cookie")
    expect(page.get_by_text("ada (release-manager)")).to_be_visible()


def test_overview_shows_the_split_and_updates_without_reloading(
    gateway: RunningServer, traffic: Traffic, new_context: Callable[..., BrowserContext]
) -> None:
    """The overview shows the demo's 90/10 split as a bar, the guard's last decision and the
    ramp; under traffic its figures change, and a change of split made through the API shows
    in the bar, while the page stays the same document."""
    page = login(new_context(), gateway, VIEWER_TOKEN)
    card = page.locator("#model-digits")
    bar = card.get_by_role("img", name=re.compile("Traffic split"))
    expect(bar).to_have_attribute(
        "aria-label", re.compile(r"baseline \(v1\): 90 %.*candidate \(v2\): 10 %")
    )
    expect(bar.locator('[data-variant="candidate"]')).to_have_attribute("data-share", "10")
    expect(card.locator(".last-decision .badge")).to_be_visible()
    expect(card).to_contain_text("No ramp.")
    page.evaluate("window.__sameDocument = true")
    requests = card.get_by_role("region", name="Versions of digits").locator("tbody tr").first
    first = requests.locator("td").nth(3).inner_text()
    deadline = time.monotonic() + 20
    while requests.locator("td").nth(3).inner_text() == first and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert requests.locator("td").nth(3).inner_text() != first, "the request count never moved"
    refreshed(page)
    shot(page, "overview")
    # A change made elsewhere (the CLI, another user) shows in the bar by itself.
    for percent in (20, 10):
        status, _, _ = request(
            gateway,
            "POST",
            "/admin/releases/digits/rollout",
            {"version": "2", "percent": percent, "reason": "seen from the overview"},
            MANAGER,
        )
        assert status == 200
        expect(bar.locator('[data-variant="candidate"]')).to_have_attribute(
            "data-share", str(percent)
        )
    assert page.evaluate("window.__sameDocument") is True


def _points(page: Page, chart: str) -> int:
    value = page.locator(f"#{chart} [data-points]").first.get_attribute("data-points")
    return int(value or 0)


def test_release_page_charts_grow_and_decisions_say_why(
    gateway: RunningServer, traffic: Traffic, new_context: Callable[..., BrowserContext]
) -> None:
    """The release page draws requests/s, error rate, p50/p99 and live accuracy per version
    and the guard's statistic against its threshold; the charts gain points as the history is
    sampled; each decision reads as a sentence with the figures it was taken on."""
    page = login(new_context(), gateway, VIEWER_TOKEN)
    page.goto(f"{gateway.url}/ui/releases/digits")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#chart-rps svg.plot-svg")).to_be_visible()
    before = _points(page, "chart-rps")
    deadline = time.monotonic() + 20
    while _points(page, "chart-rps") < before + 2 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert _points(page, "chart-rps") >= before + 2, "the charts never grew"
    assert page.evaluate("window.__sameDocument") is True
    for chart in ("chart-errors", "chart-p50", "chart-p99", "chart-accuracy", "chart-statistic"):
        expect(page.locator(f"#{chart} svg[role=img]")).to_have_attribute(
            "aria-label", re.compile("latest")
        )
    expect(page.locator("#chart-rps .legend")).to_contain_text("v1")
    expect(page.locator("#chart-accuracy svg polyline").first).to_be_attached()
    _, release, _ = request(gateway, "GET", "/admin/releases/digits", headers=MANAGER)
    threshold = release["guard"]["window"]["error_test"]["threshold"]
    expect(page.locator(".statistic")).to_contain_text(f"threshold {threshold:.2f}")
    decision = page.locator("#decisions li.decision").first
    expect(decision).to_contain_text("the guard")
    expect(decision).to_contain_text(f"against a threshold of {threshold:.2f}")
    expect(decision).to_contain_text(re.compile(r"Candidate \(version 2\): \d+ requests"))
    expect(page.locator("#audit")).to_contain_text("keep inputs for the review")
    expect(page.locator('#audit li[data-action="rollout"]').first).to_contain_text("by ada")
    refreshed(page)
    shot(page, "release")


def test_shadow_review_opens_a_disagreement_with_its_input(
    gateway: RunningServer, traffic: Traffic, new_context: Callable[..., BrowserContext]
) -> None:
    """The shadow review shows pair 1→3 with its agreement interval and difference
    distribution; opening a disagreement shows both outputs and the 8x8 input as an image."""
    page = login(new_context(), gateway, VIEWER_TOKEN)
    page.goto(f"{gateway.url}/ui/shadow/digits")
    pair = page.locator('[data-pair="1-3"]')
    expect(pair).to_contain_text("agree (95 % interval")
    expect(
        pair.get_by_role("img", name=re.compile("Agreement of v1 shadowed by v3"))
    ).to_be_visible()
    expect(
        pair.get_by_role("img", name=re.compile("largest absolute output difference"))
    ).to_be_visible()
    first = page.locator("#disagreements tbody tr[data-request]").first
    expect(first).to_be_visible()
    request_id = first.get_attribute("data-request")
    first.get_by_role("button", name=re.compile("Open")).click()
    detail = page.locator("#disagreement-detail")
    expect(detail).to_be_visible()
    expect(detail.get_by_role("heading")).to_contain_text(str(request_id))
    image = detail.get_by_role("img", name=re.compile("drawn as an image"))
    expect(image).to_be_visible()
    assert image.locator("rect").count() == 64
    expect(detail).to_contain_text(re.compile(r"v1 answered \d"))
    expect(detail).to_contain_text(re.compile(r"v3 answered \d"))
    expect(detail.get_by_role("img", name=re.compile("Probabilities per class"))).to_be_visible()
    refreshed(page)
    shot(page, "shadow")


def test_release_manager_changes_the_percentage(
    gateway: RunningServer, traffic: Traffic, new_context: Callable[..., BrowserContext]
) -> None:
    """A release manager sets the candidate to 25 %: the form asks for a reason and says what
    will change, the change is in force for the next requests (about a quarter go to 2), and
    the audit timeline shows it with the reason and the user."""
    page = login(new_context(), gateway, MANAGER_TOKEN)
    page.goto(f"{gateway.url}/ui/releases/digits")
    form = page.locator('form[data-action="rollout"]')
    form.get_by_label("Candidate version").select_option("2")
    form.get_by_label("Percent of traffic").fill("25")
    form.get_by_label("Reason").fill("browser says 25")
    form.get_by_role("button", name="Review rollout").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("from 10 % to 25 %")
    expect(dialog).to_contain_text('Reason: "browser says 25"')
    shot(page, "release-confirm")
    dialog.get_by_role("button", name="Apply").click()
    expect(page.locator("#action-result")).to_contain_text("in force")
    _, release, _ = request(gateway, "GET", "/admin/releases/digits", headers=MANAGER)
    assert release["split"] == {"baseline": 75.0, "candidate": 25.0}
    served = Counter(
        request(
            gateway,
            "POST",
            "/v2/models/digits/infer",
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}
                ]
            },
            {"x-targeting-key": f"check-{i}"},
        )[2]["x-model-version"]
        for i in range(300)
    )
    assert 45 <= served["2"] <= 105, served  # 25 % of 300 is 75
    entry = page.locator('#audit li[data-action="rollout"]').first
    expect(entry).to_contain_text("by ada")
    expect(entry).to_contain_text("browser says 25")
    entry.get_by_text("What changed").click()
    page.wait_for_timeout(2500)  # a refresh or two: what the reader opened stays open
    expect(entry.locator("ul.diff")).to_be_visible()
    expect(entry.locator("ul.diff")).to_contain_text("25")
    expect(
        page.locator("#release-summary").get_by_role("img", name=re.compile("Traffic split"))
    ).to_have_attribute("aria-label", re.compile("candidate \\(v2\\): 25 %"))
    shot(page, "release-after-change")


def _apply(page: Page, action: str, fields: dict[str, str], says: str, button: str) -> None:
    """Fill an action's form, review it, check what the dialog says will change, apply it,
    and wait until the page reports this action in force."""
    form = page.locator(f'form[data-action="{action}"]')
    for label, value in fields.items():
        control = form.get_by_label(label, exact=False).first
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    form.get_by_role("button", name=button).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(says)
    result = page.locator("#action-result")
    before = result.inner_text()  # the previous action's "in force" must not pass for this one
    dialog.get_by_role("button", name="Apply").click()
    expect(dialog).to_be_hidden()
    expect(result).not_to_have_text(before)
    expect(result).to_contain_text(f"Done: {action} is in force")


def _release(gateway: RunningServer) -> dict[str, Any]:
    status, release, _ = request(gateway, "GET", "/admin/releases/digits", headers=MANAGER)
    assert status == 200
    return dict(release)


def test_release_manager_actions_reach_the_api(
    gateway: RunningServer, traffic: Traffic, new_context: Callable[..., BrowserContext]
) -> None:
    """The other forms send what they say: a cancelled review changes nothing; a cohort is
    added (and routes its users) and removed; shadows are changed; a ramp starts, pauses and
    is aborted, each audited with its reason."""
    page = login(new_context(), gateway, MANAGER_TOKEN)
    page.goto(f"{gateway.url}/ui/releases/digits")
    refreshed(page)
    version = _release(gateway)["flag_version"]
    form = page.locator('form[data-action="rollout"]')
    form.get_by_label("Percent of traffic").fill("90")
    form.get_by_label("Reason").fill("not really")
    form.get_by_role("button", name="Review rollout").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.locator("#action-result")).to_have_text("Nothing changed.")
    assert _release(gateway)["flag_version"] == version

    _apply(
        page,
        "cohort",
        {
            "Name": "qa",
            "Context attribute": "team",
            "Values": "qa, ops",
            "Serve version": "2",
            "Reason": "qa tries 2",
        },
        "whose team is one of qa, ops",
        "Review cohort",
    )
    cohorts = {c["name"]: c for c in _release(gateway)["cohorts"]}
    assert cohorts["qa"]["rule"] == {"in": [{"var": "team"}, ["qa", "ops"]]}
    served = request(
        gateway,
        "POST",
        "/v2/models/digits/infer",
        {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]},
        {"x-targeting-key": "someone", "x-ctx-team": "ops"},
    )[2]
    assert served["x-model-version"] == "2"
    _apply(
        page,
        "uncohort",
        {"Cohort": "qa", "Reason": "qa done"},
        'rule "qa" is removed',
        "Review removal",
    )
    assert "qa" not in {c["name"] for c in _release(gateway)["cohorts"]}

    shadows = page.locator('form[data-action="shadow"]')
    shadows.get_by_label("v2").check()
    _apply(
        page,
        "shadow",
        {"Percent of the baseline": "100", "Reason": "and 2 too"},
        "After: v2, v3",
        "Review shadow",
    )
    assert {s["version"] for s in _release(gateway)["shadows"]} == {"2", "3"}

    _apply(
        page,
        "ramp",
        {"Version": "2", "Steps": "5,50,100", "Bake time": "600", "Reason": "slow ramp"},
        "5 → 50 → 100 %",
        "Review ramp",
    )
    ramp = _release(gateway)["guard"]["ramp"]
    assert (ramp["state"], ramp["percent"], ramp["steps"]) == ("running", 5, [5, 50, 100])
    control = page.locator('form[data-action="control"]')
    control.get_by_label("Reason").fill("hold it")
    control.get_by_role("button", name="Pause ramp").click()
    page.get_by_role("dialog").get_by_role("button", name="Apply").click()
    expect(page.locator("#action-result")).to_contain_text("pause is in force")
    assert _release(gateway)["guard"]["ramp"]["state"] == "paused"
    control.get_by_label("Reason").fill("enough")
    control.get_by_role("button", name="Abort ramp").click()
    expect(page.get_by_role("dialog")).to_contain_text("all traffic goes back to the baseline")
    page.get_by_role("dialog").get_by_role("button", name="Apply").click()
    expect(page.locator("#action-result")).to_contain_text("abort is in force")
    assert _release(gateway)["guard"]["ramp"] is None
    status, audit, _ = request(gateway, "GET", "/admin/audit?model=digits&limit=7", headers=MANAGER)
    assert status == 200
    assert [(e["action"], e["reason"], e["actor"]) for e in audit["entries"][:6]] == [
        ("ramp_abort", "enough", "ada"),
        ("ramp_pause", "hold it", "ada"),
        ("ramp_start", "slow ramp", "ada"),
        ("shadow", "and 2 too", "ada"),
        ("cohort_remove", "qa done", "ada"),
        ("cohort_add", "qa tries 2", "ada"),
    ]


def test_a_rollback_says_why(
    gateway: RunningServer, traffic: Traffic, new_context: Callable[..., BrowserContext]
) -> None:
    """When a failing candidate (version 4, forced past the offline gate) is rolled back by
    the guard, the release page says so in words: the breach, its figures, what the guard did,
    and the audit entry by `guard` with its reason and evidence."""
    page = login(new_context(), gateway, VIEWER_TOKEN)
    page.goto(f"{gateway.url}/ui/releases/digits")
    status, answer, _ = request(
        gateway,
        "POST",
        "/admin/releases/digits/rollout",
        {"version": "4", "percent": 50, "force": True, "reason": "a bad export"},
        MANAGER,
    )
    assert status == 200, answer
    breach = page.locator('#decisions li[data-kind="breach"]').first
    expect(breach).to_contain_text("the guard found a breach", timeout=60_000)
    expect(breach).to_contain_text("It rolled the release back")
    expect(breach).to_contain_text(
        re.compile(r"Candidate \(version 4\): \d+ requests, \d+ errors \(100\.00 %\)")
    )
    entry = page.locator('#audit li[data-action="guard_rollback"]').first
    expect(entry).to_contain_text("by guard")
    expect(entry).to_contain_text("candidate error rate 100.00%")
    entry.get_by_text("What changed").click()
    expect(entry.locator("dl.facts")).to_contain_text("statistic")
    assert _release(gateway)["split"] == {"baseline": 100.0, "candidate": 0.0}
    shot(page, "release-rollback")


def test_viewer_sees_no_actions_and_the_server_refuses_them(
    gateway: RunningServer, new_context: Callable[..., BrowserContext]
) -> None:
    """A viewer's release page has no action controls, and the admin API refuses a change
    sent with the viewer's cookie and CSRF token (403); a manager's cookie without the CSRF
    token is refused too."""
    page = login(new_context(), gateway, VIEWER_TOKEN)
    page.goto(f"{gateway.url}/ui/releases/digits")
    refreshed(page)
    assert page.locator("#actions").count() == 0
    assert page.locator("form.action, dialog").count() == 0
    post = """async ([withCsrf]) => {
      const csrf = document.querySelector('meta[name="csrf-token"]').content;
      const headers = {"content-type": "application/json"};
      if (withCsrf) headers["x-csrf-token"] = csrf;
      const r = await fetch("/admin/releases/digits/rollout", {method: "POST", headers,
        credentials: "same-origin", body: JSON.stringify({version: "2", percent: 90})});
      return [r.status, (await r.json()).error];
    }"""
    status, error = page.evaluate(post, [True])
    assert status == 403
    assert "release-manager" in error
    shot(page, "release-viewer")
    manager = login(new_context(), gateway, MANAGER_TOKEN)
    status, error = manager.evaluate(post, [False])
    assert status == 403
    assert "CSRF" in error
    _, release, _ = request(gateway, "GET", "/admin/releases/digits", headers=MANAGER)
    assert release["split"]["candidate"] != 90.0


def test_ended_session_returns_to_login_and_logout_clears_it(
    gateway: RunningServer, new_context: Callable[..., BrowserContext]
) -> None:
    """When the API answers 401 (the cookie is gone) the page goes back to the login form,
    saying why; logging out clears the cookie."""
    context = new_context()
    page = login(context, gateway, VIEWER_TOKEN)
    page.goto(f"{gateway.url}/ui/shadow/digits")
    refreshed(page)
    context.clear_cookies()
    page.wait_for_url(re.compile(r"/ui/login\?expired=true&next=%2Fui%2Fshadow%2Fdigits"))
    expect(page.get_by_role("status")).to_contain_text("Your session ended")
    page.get_by_label("Admin token").fill(VIEWER_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{gateway.url}/ui/shadow/digits")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{gateway.url}/ui/login")
    assert context.cookies() == []
    page.goto(f"{gateway.url}/ui/")
    assert "/ui/login" in page.url


def _axe(page: Page, axe: Axe, where: str) -> None:
    results = axe.run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}})
    violations: list[dict[str, Any]] = results.response["violations"]
    described = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
    ]
    assert not violations, f"{where}: " + "; ".join(described)
    # The check ran for real: the structural rules were applied to this page.
    applied = {r["id"] for r in results.response["passes"]}
    for rule in ("color-contrast", "landmark-one-main", "region", "page-has-heading-one"):
        assert rule in applied, f"{where}: axe did not apply {rule}"
    if page.locator("input:not([type=hidden]), select").count():
        assert "label" in applied or "select-name" in applied, f"{where}: no label rule"


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_every_page_passes_axe_and_fits_the_screen(
    size: str,
    gateway: RunningServer,
    traffic: Traffic,
    new_context: Callable[..., BrowserContext],
) -> None:
    """At 1280x800 and at a phone's 390x844, every page (login, overview, release, shadow
    review with a disagreement open) has no axe-core violation of the WCAG 2.1 A/AA rules and
    best practices (labels, contrast, roles, names, landmarks), and no page is wider than the
    screen."""
    viewport = DESKTOP if size == "desktop" else PHONE
    axe = Axe()
    context = new_context(viewport)
    page = context.new_page()
    page.goto(f"{gateway.url}/ui/login")
    _axe(page, axe, f"login at {size}")
    shot(page, f"login-{size}")
    page.get_by_label("Admin token").fill(MANAGER_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{gateway.url}/ui/")
    for name, path in (
        ("overview", "/ui/"),
        ("release", "/ui/releases/digits"),
        ("shadow", "/ui/shadow/digits"),
    ):
        page.goto(f"{gateway.url}{path}")
        refreshed(page)
        if name == "shadow":
            page.locator("#disagreements tbody tr[data-request]").first.get_by_role(
                "button"
            ).click()
            expect(page.locator("#disagreement-detail svg.digit")).to_be_visible()
        if name == "release":
            expect(page.locator("#chart-rps svg.plot-svg")).to_be_visible()
        _axe(page, axe, f"{name} at {size}")
        wider = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wider <= 0, f"{name} at {size} is {wider} px wider than the screen"
        shot(page, f"{name}-{size}")
