"""Headless Chromium for the page tests (Debian's package, driven by
Playwright; its own browser download is never used), and signing in to the
built-in page. The `chrome` fixture is in conftest.py."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page, expect

from tests.support.data import User
from tests.support.servers import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARGS += ["--disable-dev-shm-usage"]


class Chrome:
    """Headless Chromium; every uncaught script error of its pages is kept."""

    def __init__(self, browser: Browser):
        self.browser = browser
        self.errors: list[str] = []

    async def new_page(self, **context) -> Page:
        page = await (await self.browser.new_context(**context)).new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    async def open(self, server: RunningServer, user: User, **context) -> Page:
        """A tab of its own (own sessionStorage), signed in as `user`, socket live."""
        page = await self.new_page(**context)
        await sign_in(page, server, user)
        return page


async def sign_in(page: Page, server: RunningServer, user: User) -> None:
    """Sign in through the form; returns once the socket is live and the inbox shown."""
    await page.goto(server.http + "/")
    await page.get_by_label("Username").fill(user.username)
    await page.get_by_label("Password").fill(user.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator("#inbox-list")).to_have_attribute("aria-busy", "false")
