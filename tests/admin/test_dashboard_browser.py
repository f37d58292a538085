"""The dashboard in a real headless browser: Debian's chromium, driven by Playwright.

Why Playwright: its Python wheel carries its own driver, so the only system package
needed is ``chromium`` (launched through ``executable_path``; Playwright's own browser
download cannot work without internet), and its waits (``wait_for_selector``) follow the
page's live updates without sleeping. Selenium would also need ``chromium-driver`` at
exactly the browser's version.

The page loads, a target's card turns unhealthy when its backend's health endpoint
fails, the page says when the gateway is unreachable, and a screenshot is taken. With
``UPDATE_DASHBOARD_PNG=1`` the screenshot replaces ``docs/dashboard.png`` (the one the
docs show); otherwise it goes to a temporary folder, so test runs leave the tree clean.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from velithon.gateway import GatewayRoute
from velithon.testing import Fault

from support.admin import admin_gateway
from support.gateway import backends

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_PNG = Path(__file__).parents[2] / "docs" / "dashboard.png"
#: flags for a machine without network or display (no sandbox: CI runs as root)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None,
                       reason="Playwright is missing: pip install -e '.[test]'"),
    pytest.mark.skipif(CHROMIUM is None,
                       reason="no chromium on PATH: apt-get install chromium "
                              "(.ci/run installs it when it can)"),
]


def _drive(url: str, healthy_url: str, failing_url: str, fail_health: Any,
           screenshot: Path) -> dict[str, Any]:
    """The browser's side, in a worker thread (Playwright's sync API blocks)."""
    assert sync_playwright is not None and CHROMIUM is not None
    seen: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 400})
            page.goto(url + "/_velithon/?interval=250")  # four polls a second
            card = 'article.card[data-target="{}"][data-healthy="{}"]'
            page.wait_for_selector(card.format(failing_url, "true"), timeout=5000)
            seen["live"] = page.get_attribute("body", "data-state")
            seen["cards"] = page.locator("article.card").count()
            trio.from_thread.run_sync(fail_health)
            page.wait_for_selector(card.format(failing_url, "false"), timeout=5000)
            seen["other_still_healthy"] = page.locator(
                card.format(healthy_url, "true")).count()
            seen["badge"] = page.inner_text(
                f'article.card[data-target="{failing_url}"] .badge.bad')
            # three seconds of history, so the sparklines have a shape
            page.wait_for_function(
                "document.querySelectorAll('svg.spark polyline').length >= 6 && "
                "[...document.querySelectorAll('svg.spark polyline')].every("
                "p => p.getAttribute('points').split(' ').length >= 12)", timeout=8000)
            page.screenshot(path=str(screenshot), full_page=True)
            page.route("**/_velithon/status", lambda route: route.abort())
            page.wait_for_selector('body[data-state="unreachable"]', timeout=5000)
            seen["banner"] = page.inner_text("#banner")
        finally:
            browser.close()
    return seen


async def test_dashboard_shows_a_target_turning_unhealthy(tmp_path: Path) -> None:
    screenshot = DOCS_PNG if os.environ.get("UPDATE_DASHBOARD_PNG") == "1" \
        else tmp_path / "dashboard.png"
    async with backends("alpha", "beta", "gamma") as (alpha, beta, gamma):
        gamma.set_fault(Fault.delay(0.03))  # a slower target: its latency line stands out
        route = GatewayRoute("/api/{path:path}", [alpha.url, beta.url, gamma.url],
                             health_check_path="/health", health_check_interval=0.2)
        async with admin_gateway(route) as gw, trio.open_nursery() as nursery:
            async def traffic() -> None:
                for _ in range(3000):  # bounded: about a minute at most
                    await gw.client.get("/api/orders")
                    await trio.sleep(0.02)

            nursery.start_soon(traffic)
            with trio.fail_after(40):
                seen = await trio.to_thread.run_sync(
                    _drive, gw.url, alpha.url, beta.url, lambda: beta.set_health(503),
                    screenshot)
            nursery.cancel_scope.cancel()
    assert seen["live"] == "live"
    assert seen["cards"] == 3
    assert seen["badge"] == "unhealthy"
    assert seen["other_still_healthy"] == 1
    assert seen["banner"].startswith("Gateway unreachable")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
