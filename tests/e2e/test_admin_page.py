"""The admin page in a real browser: headless Chromium driven by Selenium, the daemon as a process.

The sandbox runs inside the test; the daemon runs as `mailbox-worker serve` configured only by
MAILBOX_WORKER_* variables, with an account and an API key made by the CLI. The browser signs
in, connects mailboxes through the sandbox's consent page (accepting, withholding a scope,
cancelling), and disconnects one through its confirmation step, reading every outcome off the
page; on the way it checks the layout's essentials (a badge per mailbox, the buttons its state
allows, the stylesheet applied) and that the page loads nothing from anywhere; last, it grants
support access for a week and ends it.

The screenshot it takes (the mailboxes, one disconnect confirmation open) is kept in the test's
directory; with ADMIN_PAGE_SCREENSHOT set to a path (docs/admin-page.png, the one the docs
show) it is written there too.

Chromium and chromedriver come from Debian (`scripts/ensure-chromium` installs them); Selenium
is pointed at them and never downloads a browser or a driver. Without them the test is
skipped, saying why.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tools import REQUIRE_TOOLS

from .conftest import ADDRESS, Daemon, start

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def browser_paths() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        reason = (
            f"headless Chromium is not installed ({', '.join(missing)} missing): "
            "run scripts/ensure-chromium (as root, with apt-get) to run this test"
        )
        if REQUIRE_TOOLS:  # .ci/run installs it: its absence there is a failure, not a skip
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
async def running_daemon(daemon: Daemon) -> AsyncIterator[Daemon]:
    """The shared e2e daemon (see conftest.py), serving for the duration of the test."""
    await start(daemon)
    try:
        yield daemon
    finally:
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        try:
            daemon.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def chromium(browser_paths: None, tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium from Debian's packages, in a profile of its own."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (it is in requirements/dev.txt)"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        # Only in this test: the sandbox's certificate comes from a CA it generated moments
        # ago, which this throw-away profile does not trust.
        "--ignore-certificate-errors",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


# -- what the admin does in the browser (blocking: run in a thread) ------------------------------


class AdminInBrowser:
    def __init__(self, driver: Any, base_url: str) -> None:
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
        )
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.base_url = base_url
        self.by = By
        self.until = expected_conditions
        # A page being replaced while a wait reads it is a reason to read it again.
        self.wait = WebDriverWait(
            driver,
            WAIT_SECONDS,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )

    def wait_for(self, css: str) -> None:
        """Wait until ``css`` matches; on a time-out, fail showing the page."""
        from selenium.common.exceptions import TimeoutException

        try:
            self.wait.until(self.until.presence_of_element_located((self.by.CSS_SELECTOR, css)))
        except TimeoutException:
            page = self.driver.find_element(self.by.TAG_NAME, "body").text
            pytest.fail(f"{css} did not appear on {self.driver.current_url}:\n{page}")

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def click_and_wait_for(self, css: str, url_part: str) -> None:
        self.find(css).click()
        self.wait.until(self.until.url_contains(url_part))
        self.wait.until(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )

    def sign_in(self, api_key: str) -> None:
        self.driver.get(f"{self.base_url}/admin")
        self.find("#api_key").send_keys(api_key)
        self.find("#sign-in").click()
        self.wait_for("#sign-out")

    def start_connect(self, capabilities: tuple[str, ...]) -> None:
        for capability in capabilities:
            self.find(f"#capability-{capability}").click()
        self.click_and_wait_for("#connect-mailbox", "/authorize")

    def consent(self, *, action: str = "accept", untick: str | None = None) -> str:
        """On the sandbox's consent page; back on /admin, the notice's outcome code."""
        if untick is not None:
            for box in self.driver.find_elements(self.by.NAME, "granted_scope"):
                if box.get_attribute("value").endswith(untick) and box.is_selected():
                    box.click()
        login = self.find("#login")
        login.clear()
        login.send_keys(ADDRESS)
        self.find(f'button[name="action"][value="{action}"]').click()
        self.wait_for("code.outcome")
        self.wait_for("#sign-out")
        return str(self.find("code.outcome").text)

    def states(self) -> dict[str, str]:
        cards = self.driver.find_elements(self.by.CSS_SELECTOR, "#mailboxes li.mailbox")
        return {
            card.get_attribute("data-mailbox-id"): card.get_attribute("data-state")
            for card in cards
        }

    def check_layout(self) -> None:
        """Each card has its state's badge, styled by the page's stylesheet, and the buttons
        its state allows; disconnecting is behind a closed confirmation step."""
        for mailbox_id, state in self.states().items():
            card = f'li[data-mailbox-id="{mailbox_id}"]'
            badge = self.find(f"{card} .badge.state-{state}")
            assert badge.is_displayed() and badge.text
            assert badge.value_of_css_property("border-radius") != "0px"  # the style applies
            buttons = [
                b.text for b in self.driver.find_elements(self.by.CSS_SELECTOR, card + " button")
            ]
            if state == "disconnected":
                assert buttons == [] or all(not text for text in buttons)
                continue
            assert self.find(f"#disconnect-{mailbox_id}").is_displayed()
            assert not self.find(f"{card} button.disconnect").is_displayed()
            if state == "pending_consent":
                assert self.find(f"{card} button.reconnect").text == "Connect"
        assert self.find("#connect-mailbox").is_displayed()

    def resources_elsewhere(self) -> list[str]:
        """What the page loaded, or would post to, from anywhere but its own origin."""
        loaded: list[str] = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".concat([...document.querySelectorAll('[src], link[href]')]"
            ".map(e => e.src || e.href))"
            ".concat([...document.forms].map(f => f.action))"
        )
        return [url for url in loaded if not url.startswith(self.base_url + "/")]

    def open_disconnect_step(self, mailbox_id: str) -> None:
        """Open the mailbox's disconnect confirmation (a ``<details>``), unless it is open."""
        step = self.find(f'li[data-mailbox-id="{mailbox_id}"] details.disconnect-step')
        if step.get_attribute("open") is None:
            self.find(f"#disconnect-{mailbox_id}").click()
        self.wait.until(
            lambda _: self.find(
                f'li[data-mailbox-id="{mailbox_id}"] button.disconnect'
            ).is_displayed()
        )

    def screenshot(self, path: Path) -> None:
        """The whole page, at a desktop width."""
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1100, min(int(height), 4000))
        assert self.driver.get_screenshot_as_file(str(path))

    def notice(self) -> str:
        return str(self.find("#notice").text)

    def support_status(self) -> str:
        return str(self.find("#support-status").text)

    def grant_support(self, reason: str, hours_label: str) -> None:
        """Fill in and send the support-access form; back on the page's section."""
        from selenium.webdriver.support.ui import Select

        self.find("#support-reason").send_keys(reason)
        Select(self.find("#support-hours")).select_by_visible_text(hours_label)
        self.find("#grant-support-access").click()
        self.wait.until(lambda _: "is on" in self.support_status())

    def end_support(self) -> None:
        self.find("#revoke-support-access").click()
        self.wait.until(lambda _: "is off" in self.support_status())

    def disconnect(self, mailbox_id: str) -> None:
        """Through the confirmation step: the button that posts shows only once it is open."""
        self.open_disconnect_step(mailbox_id)
        self.find(f'li[data-mailbox-id="{mailbox_id}"] button.disconnect').click()
        self.wait.until(lambda driver: self.states().get(mailbox_id) == "disconnected")


def the_admin_session(driver: Any, base_url: str, api_key: str, screenshot: Path) -> None:
    admin = AdminInBrowser(driver, base_url)
    admin.sign_in(api_key)
    assert "Limited Use requirements" in admin.find("#limited-use").text

    # 1. Send + draft, consent accepted: connected.
    admin.start_connect(("send", "draft"))
    assert admin.consent() == "connected"
    assert "The mailbox is connected." in admin.notice()
    [connected] = [m for m, state in admin.states().items() if state == "connected"]

    # 2. Draft needs Mail.ReadWrite; withholding it leaves the mailbox unconnected.
    admin.start_connect(("send", "draft"))
    assert admin.consent(untick="Mail.ReadWrite") == "scope_missing"
    assert "did not grant every permission" in admin.notice()
    states = admin.states()
    assert sorted(states.values()) == ["connected", "pending_consent"]

    # 3. A cancelled consent.
    admin.start_connect(("send",))
    assert admin.consent(action="cancel") == "access_denied"
    assert "cancelled or refused" in admin.notice()
    assert sorted(admin.states().values()) == ["connected", "pending_consent", "pending_consent"]

    # The layout's essentials, nothing loaded from elsewhere, and the picture of it.
    admin.check_layout()
    assert admin.resources_elsewhere() == []
    assert "Microsoft 365" in admin.find(f'li[data-mailbox-id="{connected}"] .provider').text
    admin.open_disconnect_step(connected)
    admin.screenshot(screenshot)

    # 4. Disconnect the connected one.
    admin.disconnect(connected)
    assert admin.states()[connected] == "disconnected"
    admin.check_layout()

    # 5. Support access: off, granted for a week with a reason, then ended (PP-3, LU-5).
    assert admin.support_status() == "Support access is off."
    admin.grant_support("ticket 4711", "7 days")
    status = admin.support_status()
    assert "until" in status and "ticket 4711" in status and api_key not in status
    assert admin.find("#support-hours").get_attribute("value") == "24"  # the form resets
    assert admin.resources_elsewhere() == []
    admin.end_support()
    assert not admin.driver.find_elements(admin.by.CSS_SELECTOR, "#revoke-support-access")


async def test_an_admin_connects_and_disconnects_mailboxes_in_a_browser(
    running_daemon: Daemon, chromium: Any, tmp_path: Path
) -> None:
    daemon = running_daemon
    account = daemon.cli("accounts", "create", "Contoso Ltd")
    api_key = daemon.cli("keys", "create", "--account", account)
    screenshot = tmp_path / "admin-page.png"

    # Selenium blocks; the sandbox serves from this test's event loop, so drive from a thread.
    await asyncio.to_thread(the_admin_session, chromium, daemon.base_url, api_key, screenshot)

    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    kept = os.environ.get("ADMIN_PAGE_SCREENSHOT")
    if kept:
        Path(kept).write_bytes(screenshot.read_bytes())
