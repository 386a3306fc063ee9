"""The admin page in a real browser: headless Chromium driven by Selenium, the daemon as a process.

The sandbox runs inside the test; the daemon runs as `mailbox-worker serve` configured only by
MAILBOX_WORKER_* variables, with an account and an API key made by the CLI. The browser signs
in, connects mailboxes through the sandbox's consent page (accepting, withholding a scope,
cancelling), and disconnects one, reading every outcome off the page.

Chromium and chromedriver come from Debian (`scripts/ensure-chromium` installs them); Selenium
is pointed at them and never downloads a browser or a driver. Without them the test is
skipped, saying why.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

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
        pytest.skip(
            f"headless Chromium is not installed ({', '.join(missing)} missing): "
            "run scripts/ensure-chromium (as root, with apt-get) to run this test"
        )


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
        rows = self.driver.find_elements(self.by.CSS_SELECTOR, "#mailboxes tbody tr")
        return {
            row.get_attribute("data-mailbox-id"): row.find_element(
                self.by.CSS_SELECTOR, "td.state"
            ).text
            for row in rows
        }

    def notice(self) -> str:
        return str(self.find("#notice").text)

    def disconnect(self, mailbox_id: str) -> None:
        self.find(f'tr[data-mailbox-id="{mailbox_id}"] button.disconnect').click()
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

    # 4. Disconnect the connected one.
    admin.disconnect(connected)
    assert admin.states()[connected] == "disconnected"
    assert driver.save_screenshot(str(screenshot))


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
