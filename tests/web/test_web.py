"""The web inbox at `/`, driven in headless Chromium (Playwright, Debian's browser).

Each test runs a real uvicorn on its own database and signs in through the
page. Conditions are awaited with Playwright's `expect` (it retries until the
page shows them), never with fixed sleeps.

`CITELINK_UPDATE_SCREENSHOT=1 pytest tests/web/test_web.py -k screenshot` rewrites
docs/screenshot.png (the web page's picture in the docs); otherwise it goes to a temporary
folder, so a test run leaves the work tree clean.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, expect

from citelink.identity import tokens
from citelink.settings import Settings
from tests.support import ROOT
from tests.support.attack import LINK_ATTACKS
from tests.support.browser import CHROMIUM, sign_in
from tests.support.data import SECRET_KEY, User, subscribe
from tests.support.servers import RunningServer, start_server

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install -y chromium"
)
# A reconnect waits for the backoff; everything else shows within a second.
expect.set_options(timeout=10_000)

SCREENSHOT = ROOT / "docs" / "screenshot.png"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
SIZES = pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
XSS = "<img src=x onerror=alert(1)>"
# The `exp` claim of the page's stored access token.
TOKEN_EXPIRY = (
    "JSON.parse(atob(JSON.parse(sessionStorage.getItem('citelink.tokens')).access"
    ".split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).exp"
)


@pytest.fixture
async def people(make_user, conn: asyncpg.Connection) -> dict:
    """Staff "admin", users "alice" and "bob"; both users subscribed to "news"."""
    staff = await make_user("admin", staff=True)
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "news")
    return {"staff": staff, "alice": alice, "bob": bob, "news": news}


async def publish(server: RunningServer, staff: User, tag: int, message: str, **data) -> dict:
    """Publish through the REST API, as a publisher would."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        answer = await http.post(
            "/api/notifications/",
            json={"tag": tag, "message": message, "data": data},
            headers=staff.headers,
        )
    assert answer.status_code == 201, answer.text
    return answer.json()


def items(page):
    return page.locator("#inbox-list > li")


def item(page, text: str):
    return items(page).filter(has_text=text)


async def show(page: Page, view: str) -> None:
    """Pick Inbox, Unread or Archived; its first page is then on screen."""
    await page.get_by_role("group", name="Show").get_by_role("button", name=view).click()
    await expect(page.locator("#inbox-list")).to_have_attribute("aria-busy", "false")


async def pick_tags(page: Page, *names: str) -> None:
    """Tick (or untick) tags in the inbox's tag filter."""
    picker = page.locator("#tag-filter")
    if await picker.get_attribute("open") is None:
        await picker.locator("summary").click()
    for name in names:
        await picker.get_by_role("checkbox", name=name, exact=True).click()
    await expect(page.locator("#inbox-list")).to_have_attribute("aria-busy", "false")


async def states(conn: asyncpg.Connection, user: User) -> dict[str, tuple]:
    """Each of a user's inbox items, by message: (seen, read, archived, deleted)."""
    rows = await conn.fetch(
        "SELECT n.message, i.is_seen, i.is_read, i.is_archived, i.is_deleted "
        "FROM user_notification i JOIN notification n ON n.id = i.notification_id "
        "WHERE i.user_id = $1",
        user.id,
    )
    return {r[0]: tuple(r[1:]) for r in rows}


def tab(page: Page, name: str):
    return page.get_by_role("navigation").get_by_role("button", name=name, exact=True)


async def open_section(page: Page, tab_name: str, heading: str):
    """Click a tab; the section (a region named by its heading) it shows."""
    await tab(page, tab_name).click()
    region = page.get_by_role("region", name=heading, exact=True)
    await expect(region).to_be_visible()
    return region


async def restart(old: RunningServer, settings: Settings) -> RunningServer:
    """Stop the server and start a new one on the same port and database."""
    await old.stop()
    return await start_server(settings, port=old.port)


# Tests ---------------------------------------------------------------------------


async def test_page_is_self_contained(server: RunningServer):
    async with httpx.AsyncClient(base_url=server.http) as http:
        page = await http.get("/")
        script = await http.get("/static/app.js")
        style = await http.get("/static/app.css")
        hidden = await http.get("/static/__init__.py")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    assert hidden.status_code == 404
    # Works offline: nothing is loaded from another origin.
    for body in (page.text, script.text, style.text):
        assert "http://" not in body.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in body


async def test_sign_in_live_notification_and_badge(chrome, server, people):
    page = await chrome.new_page()
    await page.goto(server.http + "/")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("wrong")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    # Keyboard only: Enter in the password field signs in.
    await page.get_by_label("Password").fill(people["alice"].password)
    await page.get_by_label("Password").press("Enter")
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator("#whoami")).to_have_text("alice")
    await expect(page.locator("#inbox-empty")).to_be_visible()

    await publish(server, people["staff"], people["news"], "Deploy finished", build=812)
    await expect(item(page, "Deploy finished")).to_be_visible()
    await expect(item(page, "Deploy finished").locator(".tag")).to_have_text("news")
    await expect(page.locator("#badge")).to_have_text("1")
    await expect(page).to_have_title("(1) citelink")

    await publish(server, people["staff"], people["news"], "Second one")
    await expect(items(page)).to_have_count(2)
    await expect(items(page).first).to_contain_text("Second one")  # newest first
    await expect(page.locator("#badge")).to_have_text("2")
    await expect(page).to_have_title("(2) citelink")

    # A reload keeps the session (sessionStorage) and shows the history.
    await page.reload()
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(items(page)).to_have_count(2)

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("Username")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0
    await expect(page).to_have_title("citelink")


async def test_two_tabs_stay_in_sync(chrome, server, people):
    alice = people["alice"]
    first = await chrome.open(server, alice)
    second = await chrome.open(server, alice)
    for text in ("one", "two", "three"):
        await publish(server, people["staff"], people["news"], f"message {text}")
    for tab in (first, second):
        await expect(items(tab)).to_have_count(3)
        await expect(tab.locator("#badge")).to_have_text("3")

    # Mark read in one tab: the other follows, through its own socket.
    await item(first, "message two").get_by_role("button", name="Mark read").click()
    for tab in (first, second):
        await expect(item(tab, "message two").locator(".status")).to_have_text("Read")
        await expect(tab.locator("#badge")).to_have_text("2")
    # Unread again, but not new again: the bell counts unseen items.
    await item(second, "message two").get_by_role("button", name="Mark unread").click()
    await expect(item(first, "message two").locator(".status")).to_have_text("Unread")
    await expect(item(first, "message two").locator(".new")).to_be_hidden()
    await expect(item(first, "message three").locator(".new")).to_be_visible()
    await expect(first.locator("#badge")).to_have_text("2")

    # Delete in the second tab: gone from both.
    await item(second, "message one").get_by_role("button", name="Delete").click()
    for tab in (first, second):
        await expect(item(tab, "message one")).to_have_count(0)
        await expect(items(tab)).to_have_count(2)
        await expect(tab.locator("#badge")).to_have_text("1")

    # Mark all read from the first tab.
    await first.get_by_role("button", name="Mark all read").click()
    await expect(second.locator("#badge")).to_have_text("0")
    await expect(second.locator("#inbox-list .status")).to_have_text(["Read", "Read"])
    await expect(second).to_have_title("citelink")

    # The "Unread" view shows only unread items, and follows changes live.
    await show(second, "Unread")
    await expect(items(second)).to_have_count(0)
    await item(first, "message three").get_by_role("button", name="Mark unread").click()
    await expect(items(second)).to_have_count(1)
    await expect(items(second)).to_contain_text("message three")


async def test_markup_in_a_message_is_shown_as_text(chrome, server, people):
    page = await chrome.open(server, people["alice"])
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await publish(
        server,
        people["staff"],
        people["news"],
        XSS,
        html="<b>bold</b>",
        actions=[{"id": "x", "label": XSS, "url": "/<b>path</b>"}],
    )
    row = item(page, XSS)
    await expect(row.locator(".message")).to_have_text(XSS)
    await expect(row.get_by_role("link", name=XSS)).to_be_visible()
    await expect(row.locator("img")).to_have_count(0)
    await row.get_by_text("Data").click()
    await expect(row.locator("pre")).to_contain_text('"html": "<b>bold</b>"')
    await expect(row.locator("b")).to_have_count(0)
    # The same after a reload, when the item comes from the REST history.
    await page.reload()
    await expect(item(page, XSS).locator(".message")).to_have_text(XSS)
    await expect(page.locator("#inbox-list img")).to_have_count(0)
    assert dialogs == []


@SIZES
async def test_notifications_to_listed_users_have_no_tag_chip(
    chrome, server, people, conn, viewport
):
    alice = people["alice"]
    page = await chrome.open(server, alice, viewport=viewport)
    async with httpx.AsyncClient(base_url=server.http) as http:
        answer = await http.post(
            "/api/notifications/",
            json={"users": [alice.id], "message": "just for you"},
            headers=people["staff"].headers,
        )
    assert answer.status_code == 201, answer.text
    await conn.execute(
        "INSERT INTO notification (users, message) VALUES ($1, 'direct by SQL')", [alice.id]
    )
    await publish(server, people["staff"], people["news"], "on a tag")
    for attempt in ("live", "after a reload"):
        await expect(items(page), attempt).to_have_count(3)
        for text in ("just for you", "direct by SQL"):
            await expect(item(page, text).locator(".tag"), attempt).to_have_count(0)
        await expect(item(page, "on a tag").locator(".tag"), attempt).to_have_text("news")
        await expect(page.locator("#inbox-list"), attempt).not_to_contain_text("null")
        if attempt == "live":
            await page.reload()
            await expect(page.locator("#conn")).to_have_text("Live")


async def test_reconnects_after_a_server_restart_and_catches_up(
    chrome, server, settings, people, conn: asyncpg.Connection
):
    page = await chrome.open(server, people["alice"])
    await publish(server, people["staff"], people["news"], "before the restart")
    await expect(items(page)).to_have_count(1)
    seen = int(await items(page).first.get_attribute("data-id"))
    sent: list[dict] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(json.loads(f))))

    await server.stop()
    await expect(page.locator("#conn")).not_to_have_text("Live")
    # Published while the page had no server: by plain SQL, like a cron job.
    await conn.execute(
        "INSERT INTO notification (tag_id, message) VALUES ($1, 'while you were away')",
        people["news"],
    )
    restarted = await restart(server, settings)
    try:
        await expect(page.locator("#conn")).to_have_text("Live")
        await expect(items(page).first).to_contain_text("while you were away")
        await expect(items(page)).to_have_count(2)
        await expect(page.locator("#badge")).to_have_text("2")
        assert {"type": "resume", "after": seen} in sent
        # And it is live again.
        await publish(restarted, people["staff"], people["news"], "after the restart")
        await expect(items(page).first).to_contain_text("after the restart")
        await expect(items(page)).to_have_count(3)
    finally:
        await restarted.stop()


async def test_staff_publishes_from_the_form_to_a_users_tab(chrome, server, people):
    bob = await chrome.open(server, people["bob"])
    staff = await chrome.open(server, people["staff"])
    # Users do not see the staff sections.
    await expect(tab(bob, "Publish")).to_be_hidden()

    form = await open_section(staff, "Publish", "Publish a notification")
    await form.get_by_label("Tag").select_option(label="news")
    await form.get_by_label("Message").fill("Maintenance tonight at 22:00")
    await form.get_by_label("Data").fill('{"window": "22:00-23:00"}')
    await form.get_by_role("button", name="Publish").click()
    await expect(staff.locator("#toast")).to_have_text("Published to 2 subscribers.")

    row = item(bob, "Maintenance tonight at 22:00")
    await expect(row).to_be_visible()
    await expect(bob.locator("#badge")).to_have_text("1")
    await row.get_by_text("Data").click()
    await expect(row.locator("pre")).to_contain_text('"window": "22:00-23:00"')

    # Data that is not a JSON object is caught before anything is sent.
    await form.get_by_label("Message").fill("never sent")
    await form.get_by_label("Data").fill("[1, 2]")
    await form.get_by_role("button", name="Publish").click()
    await expect(staff.locator("#toast")).to_contain_text("Data must be a JSON object")
    await expect(items(bob)).to_have_count(1)


async def test_staff_manages_tags_subscriptions_and_reads_the_audit_log(chrome, server, people):
    staff = await chrome.open(server, people["staff"])
    tags = await open_section(staff, "Tags", "Tags")
    await tags.get_by_label("New tag").fill("releases")
    await tags.get_by_role("button", name="Create").click()
    await expect(tags.get_by_role("list")).to_contain_text("releases")

    # Subscribe bob to the new tag on his behalf.
    subs = await open_section(staff, "Subscriptions", "Subscriptions")
    await subs.get_by_label("User").select_option(label="bob")
    await expect(subs.locator("li .name")).to_have_text(["news"])
    await subs.get_by_label("Tag").select_option(label="releases")
    await subs.get_by_role("button", name="Subscribe", exact=True).click()
    await expect(subs.locator("li .name")).to_have_text(["news", "releases"])

    # A tag with subscribers but no notifications may be deleted.
    tags = await open_section(staff, "Tags", "Tags")
    await tags.get_by_role("button", name="Delete tag releases").click()
    await expect(tags.get_by_role("list")).not_to_contain_text("releases")

    # Every form control has a label (staff see them all).
    unlabelled = await staff.evaluate(
        """[...document.querySelectorAll("input, select, textarea")]
             .filter((c) => c.labels.length === 0 && !c.getAttribute("aria-label"))
             .map((c) => c.id)"""
    )
    assert unlabelled == []

    audit = await open_section(staff, "Audit log", "Audit log")
    rows = audit.locator("tbody tr")
    await expect(rows.first).to_contain_text("tag")
    await expect(rows.first).to_contain_text("delete")
    await expect(rows.filter(has_text="subscription")).not_to_have_count(0)
    await audit.get_by_label("Resource").select_option("tag")
    await expect(rows).to_have_count(3)  # news: create; releases: create, delete


async def test_history_pages_and_filters(chrome, server, people, conn: asyncpg.Connection):
    alice = people["alice"]
    other = await subscribe(conn, alice.id, "other")
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'old news ' || n FROM generate_series(1, 25) AS n",
        people["news"],
    )
    await conn.execute("INSERT INTO notification (tag_id, message) VALUES ($1, 'other')", other)
    page = await chrome.open(server, alice)
    await expect(items(page)).to_have_count(20)
    await page.get_by_role("button", name="Load older").click()
    await expect(items(page)).to_have_count(26)
    await expect(page.get_by_role("button", name="Load older")).to_be_hidden()
    await expect(items(page).last).to_contain_text("old news 1")

    await pick_tags(page, "other")
    await expect(items(page)).to_have_text([re.compile("other")])
    await pick_tags(page, "other")
    await expect(items(page)).to_have_count(20)
    await show(page, "Unread")
    await expect(items(page)).to_have_count(20)
    await show(page, "Archived")
    await expect(page.locator("#inbox-empty")).to_have_text(re.compile("Nothing archived"))
    await expect(items(page)).to_have_count(0)


async def test_the_bell_counts_unseen_items_and_opening_the_inbox_sees_them(
    chrome, server, people, conn: asyncpg.Connection
):
    alice = people["alice"]
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'waiting ' || n FROM generate_series(1, 3) AS n",
        people["news"],
    )
    first = await chrome.open(server, alice)
    # Opening the inbox saw all three, and read none of them.
    await expect(first.locator("#badge")).to_have_text("0")
    await expect(first).to_have_title("citelink")
    await expect(first.locator("#inbox-list .status")).to_have_text(["Unread"] * 3)
    await expect(first.locator("#inbox-list .new")).to_have_count(3)
    await expect(first.locator("#inbox-list .new:visible")).to_have_count(0)
    assert set((await states(conn, alice)).values()) == {(True, False, False, False)}
    assert set((await states(conn, people["bob"])).values()) == {(False, False, False, False)}

    # What arrives while the inbox is open is new until it is opened again,
    # in a second tab as well, even one on another section.
    second = await chrome.open(server, alice)
    await open_section(second, "Subscriptions", "Subscriptions")
    await publish(server, people["staff"], people["news"], "fresh")
    for page in (first, second):
        await expect(page.locator("#badge")).to_have_text("1")
        await expect(page).to_have_title("(1) citelink")
    await expect(item(first, "fresh").locator(".new")).to_be_visible()
    await first.get_by_role("button", name="Open the inbox: 1 new").click()
    for page in (first, second):
        await expect(page.locator("#badge")).to_have_text("0")
    await expect(item(first, "fresh").locator(".new")).to_be_hidden()
    await expect(item(first, "fresh").locator(".status")).to_have_text("Unread")

    # The bell of the other tab opens its inbox.
    await publish(server, people["staff"], people["news"], "fresher")
    await expect(second.locator("#badge")).to_have_text("1")
    await second.get_by_role("button", name="Open the inbox").click()
    await expect(second.get_by_role("region", name="Inbox")).to_be_visible()
    await expect(items(second)).to_have_count(5)
    await expect(first.locator("#badge")).to_have_text("0")
    assert (await states(conn, alice))["fresher"] == (True, False, False, False)


async def test_archive_and_unarchive_in_two_tabs(chrome, server, people, conn):
    alice = people["alice"]
    inbox = await chrome.open(server, alice)
    archive = await chrome.open(server, alice)
    await show(archive, "Archived")
    await expect(archive.locator("#inbox-empty")).to_be_visible()
    for text in ("keep me", "put away"):
        await publish(server, people["staff"], people["news"], text)
    await expect(items(inbox)).to_have_text([re.compile("put away"), re.compile("keep me")])
    await expect(inbox.locator("#badge")).to_have_text("2")
    await expect(items(archive)).to_have_count(0)  # new items are not archived

    # Archived in one tab: it leaves that inbox and its count, and shows up
    # in the other tab's archive.
    await item(inbox, "put away").get_by_role("button", name="Archive").click()
    await expect(items(inbox)).to_have_text([re.compile("keep me")])
    await expect(items(archive)).to_have_text([re.compile("put away")])
    for page in (inbox, archive):
        await expect(page.locator("#badge")).to_have_text("1")
    assert (await states(conn, alice))["put away"] == (False, False, True, False)

    # Unarchived from the archive: back in the inbox, in its place.
    await item(archive, "put away").get_by_role("button", name="Unarchive").click()
    await expect(items(archive)).to_have_count(0)
    await expect(items(inbox)).to_have_text([re.compile("put away"), re.compile("keep me")])
    await expect(inbox.locator("#badge")).to_have_text("2")

    # Plain SQL archives the same way.
    await conn.execute(
        "UPDATE user_notification SET is_archived = true "
        "WHERE user_id = $1 AND notification_id = (SELECT id FROM notification WHERE message = $2)",
        alice.id,
        "keep me",
    )
    await expect(items(inbox)).to_have_text([re.compile("put away")])
    await expect(items(archive)).to_have_text([re.compile("keep me")])
    await expect(item(archive, "keep me").get_by_role("button")).to_have_text(
        ["Mark read", "Unarchive", "Delete"]
    )


async def test_an_action_is_recorded_and_its_link_opened_without_an_opener(
    chrome, server, people, conn
):
    alice = people["alice"]
    first = await chrome.open(server, alice)
    second = await chrome.open(server, alice)
    actions = [
        {"id": "approve", "label": "Approve", "url": f"{server.http}/healthz?approved"},
        {"id": "later", "label": "Later"},
    ]
    sent = await publish(
        server, people["staff"], people["news"], "Review #7", url="/healthz?item", actions=actions
    )
    row = item(first, "Review #7")
    await expect(row.get_by_role("link", name="/healthz?item")).to_have_attribute(
        "href", f"{server.http}/healthz?item"
    )
    await expect(row.get_by_role("button", name="Later")).to_be_visible()
    approve = row.get_by_role("link", name="Approve")
    await expect(approve).to_have_attribute("href", f"{server.http}/healthz?approved")
    await expect(approve).to_have_attribute("target", "_blank")
    await expect(approve).to_have_attribute("rel", "noopener noreferrer")

    async with first.context.expect_page() as opened:
        await approve.click()
    popup = await opened.value
    await popup.wait_for_load_state()
    assert popup.url == f"{server.http}/healthz?approved"
    assert await popup.evaluate("[window.opener, document.referrer]") == [None, ""]

    # Recorded (it reads the item), and every tab of the user is told.
    for page in (first, second):
        await expect(item(page, "Review #7").locator(".status")).to_have_text("Read · Approve")
        await expect(item(page, "Review #7").get_by_role("link", name="Approve")).to_have_class(
            re.compile("chosen")
        )
    recorded = await conn.fetchrow(
        "SELECT id, action, interacted_at IS NOT NULL AS interacted, is_read "
        "FROM user_notification WHERE user_id = $1 AND notification_id = $2",
        alice.id,
        sent["id"],
    )
    assert (recorded["action"], recorded["interacted"], recorded["is_read"]) == (
        "approve",
        True,
        True,
    )
    actor = await conn.fetchval(
        "SELECT actor_id FROM audit_log WHERE resource = 'user_notification' "
        "AND object_id = $1 AND changes ? 'action'",
        recorded["id"],
    )
    assert actor == alice.id


async def test_links_inserted_by_sql_that_are_not_http_or_this_site_are_not_links(
    chrome, server, people, conn
):
    page = await chrome.open(server, people["alice"])
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    opened: list[Page] = []
    page.context.on("page", lambda popup: opened.append(popup))
    data = {
        "url": "javascript:alert(1)",
        "actions": [
            {"id": "pay", "label": "Pay", "url": "javascript:alert(2)"},
            {"id": "away", "label": "Away", "url": "//elsewhere.example/x"},
            {"id": "back", "label": "Back", "url": "/\\elsewhere.example/x"},
        ],
    }
    # Plain SQL: the API's check of links is not on this path.
    await conn.execute(
        "INSERT INTO notification (tag_id, message, data) VALUES ($1, 'unsafe', $2)",
        people["news"],
        data,
    )
    for attempt in ("live", "after a reload"):
        row = item(page, "unsafe")
        await expect(row.get_by_role("button", name="Pay"), attempt).to_be_visible()
        await expect(row.get_by_role("button"), attempt).to_have_text(
            ["Pay", "Away", "Back", "Mark read", "Archive", "Delete"]
        )
        await expect(row.locator("a"), attempt).to_have_count(0)
        await expect(row.locator(".link"), attempt).to_have_count(0)
        if attempt == "live":
            await page.reload()
            await expect(page.locator("#conn")).to_have_text("Live")

    # The buttons still record the choice, and open nothing.
    await item(page, "unsafe").get_by_role("button", name="Pay").click()
    await expect(item(page, "unsafe").locator(".status")).to_have_text("Read · Pay")
    assert opened == [] and dialogs == []
    assert page.url == server.http + "/"


async def test_links_that_could_open_another_site_are_not_opened(chrome, server, people, conn):
    """The API's rule, for what plain SQL wrote: `/\\host`, `/<tab>/host` and
    the like are no links, and their action buttons open nothing."""
    page = await chrome.open(server, people["alice"])
    opened: list[Page] = []
    page.context.on("page", lambda popup: opened.append(popup))
    for n, link in enumerate(LINK_ATTACKS):
        data = {"url": link, "actions": [{"id": "go", "label": f"Go {n}", "url": link}]}
        await conn.execute(
            "INSERT INTO notification (tag_id, message, data) VALUES ($1, $2, $3)",
            people["news"],
            f"attack {n}",
            data,
        )
    await conn.execute(
        "INSERT INTO notification (tag_id, message, data) VALUES ($1, 'a safe one', $2)",
        people["news"],
        {"url": "/healthz?safe", "actions": [{"id": "go", "label": "Go", "url": "/healthz"}]},
    )
    await expect(item(page, "a safe one").locator("a")).to_have_count(2)
    await expect(items(page)).to_have_count(len(LINK_ATTACKS) + 1)
    # The safe item's two links, and nothing else in the list.
    await expect(page.locator("#inbox-list a")).to_have_count(2)
    for n in range(len(LINK_ATTACKS)):
        await expect(page.get_by_role("button", name=f"Go {n}", exact=True)).to_have_count(1)
    await page.get_by_role("button", name="Go 0", exact=True).click()
    await expect(item(page, "attack 0").locator(".status")).to_have_text("Read · Go 0")
    assert opened == [] and page.url == server.http + "/"


async def test_filter_by_several_tags(chrome, server, people, conn):
    alice, staff = people["alice"], people["staff"]
    tags = {name: await subscribe(conn, alice.id, name) for name in ("deploys", "reviews")}
    tags["news"] = people["news"]
    for name in ("news", "deploys", "reviews"):
        await publish(server, staff, tags[name], f"old {name}")
    page = await chrome.open(server, alice)
    await expect(items(page)).to_have_count(3)

    await pick_tags(page, "deploys", "reviews")
    await expect(page.locator("#tag-filter summary")).to_have_text("Tags: deploys, reviews")
    await expect(items(page)).to_have_text([re.compile("old reviews"), re.compile("old deploys")])
    # Live items follow the filter: the news one comes first and is left out.
    await publish(server, staff, tags["news"], "new news")
    await publish(server, staff, tags["deploys"], "new deploys")
    await expect(items(page)).to_have_text(
        [re.compile(text) for text in ("new deploys", "old reviews", "old deploys")]
    )

    # Escape puts the list of tags away; so does a click elsewhere.
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("checkbox", name="news")).to_be_hidden()
    await pick_tags(page, "deploys")
    await expect(items(page)).to_have_text([re.compile("old reviews")])
    await page.get_by_role("heading", name="Inbox").click()
    await expect(page.get_by_role("checkbox", name="news")).to_be_hidden()
    await pick_tags(page, "reviews")
    await expect(page.locator("#tag-filter summary")).to_have_text("Tags: any")
    await expect(items(page)).to_have_count(5)


async def test_bulk_actions_on_the_filtered_view(chrome, server, people, conn):
    alice = people["alice"]
    deploys = await subscribe(conn, alice.id, "deploys")
    for n, (tag, text) in enumerate([(people["news"], "news"), (deploys, "deploys")] * 2):
        await publish(server, people["staff"], tag, f"{text} item {n}")
    first = await chrome.open(server, alice)
    second = await chrome.open(server, alice)

    # Archive every deploys item, older pages included, from the first tab.
    await pick_tags(first, "deploys")
    await expect(items(first)).to_have_count(2)
    await first.get_by_role("button", name="Archive all").click()
    await expect(first.locator("#toast")).to_have_text("2 notifications archived.")
    await expect(items(first)).to_have_count(0)
    await expect(items(second)).to_have_text([re.compile("news item")] * 2)
    archived = {text: state[2] for text, state in (await states(conn, alice)).items()}
    assert archived == {
        "news item 0": False,
        "deploys item 1": True,
        "news item 2": False,
        "deploys item 3": True,
    }

    # Delete asks first; cancelled, nothing changes.
    await show(first, "Archived")
    await expect(items(first)).to_have_count(2)
    await first.get_by_role("button", name="Delete all…").click()
    dialog = first.get_by_role("dialog")
    await expect(dialog).to_contain_text("Delete all 2 notifications in this view?")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    await expect(items(first)).to_have_count(2)
    assert not any(deleted for *_, deleted in (await states(conn, alice)).values())

    await first.get_by_role("button", name="Delete all…").click()
    await dialog.get_by_role("button", name="Delete").click()
    await expect(first.locator("#toast")).to_have_text("2 notifications deleted.")
    await expect(items(first)).to_have_count(0)
    rows = await conn.fetch(
        "SELECT t.name, i.is_deleted FROM user_notification i "
        "JOIN notification n ON n.id = i.notification_id JOIN tag t ON t.id = n.tag_id "
        "WHERE i.user_id = $1",
        alice.id,
    )
    assert sorted(tuple(r) for r in rows) == [("deploys", True)] * 2 + [("news", False)] * 2
    await expect(first.get_by_role("button", name="Delete all…")).to_be_disabled()

    # Mark all read in the second tab's view (everything left): the first follows.
    await show(first, "Inbox")
    await pick_tags(first, "deploys")
    await expect(first.locator("#tag-filter summary")).to_have_text("Tags: any")
    await second.get_by_role("button", name="Mark all read").click()
    await expect(second.locator("#toast")).to_have_text("2 notifications marked read.")
    await expect(first.locator("#inbox-list .status")).to_have_text(["Read", "Read"])


async def test_a_refresh_after_a_big_change_reloads_the_view(chrome, server, people, conn):
    """Over 1,000 items in one statement are told as one `refresh` frame."""
    alice = people["alice"]
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'batch ' || n FROM generate_series(1, 1001) AS n",
        people["news"],
    )
    watched = await chrome.new_page()
    received: list[dict] = []
    watched.on(
        "websocket", lambda ws: ws.on("framereceived", lambda f: received.append(json.loads(f)))
    )
    await sign_in(watched, server, alice)
    await show(watched, "Unread")
    await expect(items(watched)).to_have_count(20)
    await expect(watched.get_by_role("button", name="Load older")).to_be_visible()

    # Another tab reads them all at once: the first cannot be told item by
    # item, and reloads its view, which is now empty.
    other = await chrome.open(server, alice)
    await other.get_by_role("button", name="Mark all read").click()
    await expect(other.locator("#toast")).to_have_text("1001 notifications marked read.")
    await expect(watched.locator("#inbox-empty")).to_have_text("Nothing unread.")
    await expect(watched.locator("#inbox-empty")).to_be_visible()
    await expect(items(watched)).to_have_count(0)
    await expect(watched.get_by_role("button", name="Load older")).to_be_hidden()
    assert {"type": "refresh", "items": 1001} in received
    assert not any(frame["type"] == "read" for frame in received)


async def test_an_expired_access_token_is_refreshed(chrome, server, people):
    alice = people["alice"]
    async with httpx.AsyncClient(base_url=server.http) as http:
        pair = (
            await http.post(
                "/api/token/", json={"username": alice.username, "password": alice.password}
            )
        ).json()
    expired = tokens.issue(SECRET_KEY, alice.id, "access", -1)
    page = await chrome.new_page()
    await page.goto(server.http + "/")
    await page.evaluate(
        "tokens => sessionStorage.setItem('citelink.tokens', JSON.stringify(tokens))",
        {"access": expired, "refresh": pair["refresh"]},
    )
    await page.reload()
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator("#whoami")).to_have_text("alice")
    stored = await page.evaluate("JSON.parse(sessionStorage.getItem('citelink.tokens'))")
    assert stored["access"] != expired


async def test_signing_out_revokes_the_refresh_token(chrome, server, people):
    alice = people["alice"]
    page = await chrome.new_page()
    await page.goto(server.http + "/")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(alice.password)
    await page.get_by_label("Password").press("Enter")
    await expect(page.locator("#conn")).to_have_text("Live")
    stored = await page.evaluate("JSON.parse(sessionStorage.getItem('citelink.tokens'))")
    async with page.expect_response("**/api/token/blacklist/") as revoked:
        await page.get_by_role("button", name="Sign out").click()
    assert (await revoked.value).status == 200
    await expect(page.get_by_label("Username")).to_be_visible()
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.post("/api/token/refresh/", json={"refresh": stored["refresh"]})
    assert (r.status_code, r.json()) == (401, {"detail": "token has been revoked"})


async def test_short_lived_tokens_are_refreshed_and_the_socket_stays_open(chrome, settings, people):
    server = await start_server(replace(settings, access_token_minutes=0.05))  # 2-3 s
    try:
        sockets = []
        page = await chrome.new_page()
        page.on("websocket", lambda ws: sockets.append(ws.url))
        await page.goto(server.http + "/")
        await page.get_by_label("Username").fill("alice")
        await page.get_by_label("Password").fill(people["alice"].password)
        await page.get_by_label("Password").press("Enter")
        await expect(page.locator("#conn")).to_have_text("Live")
        first = await page.evaluate(TOKEN_EXPIRY)
        # Past the first token's expiry, the socket was kept open by an `auth` frame.
        await page.wait_for_function("exp => Date.now() / 1000 > exp + 0.5", arg=first)
        assert await page.evaluate(TOKEN_EXPIRY) > first
        await publish(server, people["staff"], people["news"], "still connected")
        await expect(item(page, "still connected")).to_be_visible()
        await expect(page.locator("#conn")).to_have_text("Live")
        assert len(sockets) == 1
    finally:
        await server.stop()


@SIZES
async def test_the_header_stays_while_the_list_scrolls(chrome, server, people, conn, viewport):
    await conn.execute(
        "INSERT INTO notification (tag_id, message) "
        "SELECT $1, 'item ' || n FROM generate_series(1, 20) AS n",
        people["news"],
    )
    page = await chrome.open(server, people["alice"], viewport=viewport)
    await expect(items(page)).to_have_count(20)
    await page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    await expect(items(page).last).to_be_in_viewport()
    for control in (page.locator("#bell"), page.locator("#conn"), page.get_by_text("Sign out")):
        await expect(control).to_be_in_viewport()
    header = await page.locator(".topbar").bounding_box()
    assert header and header["y"] == 0 and header["height"] <= viewport["height"] / 6, header


@SIZES
async def test_a_long_message_is_clamped_with_a_way_to_expand(
    chrome, server, people, conn, viewport
):
    page = await chrome.open(server, people["alice"], viewport=viewport)
    height = "document.documentElement.scrollHeight"
    await publish(server, people["staff"], people["news"], "short one")
    await publish(server, people["staff"], people["news"], "long " + "abcdefghi " * 9_999)
    await expect(items(page)).to_have_count(2)
    long, short = item(page, "long abcdefghi"), item(page, "short one")
    await expect(short.get_by_role("button", name="Show more")).to_be_hidden()
    more = long.get_by_role("button", name="Show more")
    await expect(more).to_be_visible()
    await expect(more).to_have_attribute("aria-expanded", "false")
    assert await page.evaluate(height) < 2 * viewport["height"]
    await more.click()
    less = long.get_by_role("button", name="Show less")
    await expect(less).to_have_attribute("aria-expanded", "true")
    assert await page.evaluate(height) > 10 * viewport["height"]
    await less.click()
    await expect(more).to_be_visible()
    assert await page.evaluate(height) < 2 * viewport["height"]
    # The same once the list comes from REST after a reload.
    await page.reload()
    await expect(items(page)).to_have_count(2)
    await expect(
        item(page, "long abcdefghi").get_by_role("button", name="Show more")
    ).to_be_visible()
    assert await page.evaluate(height) < 2 * viewport["height"]


async def test_subscriptions_say_why_there_is_nothing_to_subscribe_to(chrome, server, people, conn):
    alice, staff = people["alice"], people["staff"]
    page = await chrome.open(server, alice)
    subs = await open_section(page, "Subscriptions", "Subscriptions")
    # alice has "news", the only tag.
    await expect(subs.get_by_text("You are subscribed to every tag.")).to_be_visible()
    await expect(subs.get_by_label("Tag")).to_be_hidden()
    await expect(subs.get_by_role("button", name="Subscribe", exact=True)).to_be_hidden()
    await conn.execute("INSERT INTO tag (name) VALUES ('deploys')")
    subs = await open_section(page, "Subscriptions", "Subscriptions")
    await expect(subs.get_by_text("You are subscribed to every tag.")).to_be_hidden()
    await subs.get_by_label("Tag").select_option(label="deploys")
    await subs.get_by_role("button", name="Subscribe", exact=True).click()
    await expect(subs.locator("li .name")).to_have_text(["deploys", "news"])
    await expect(subs.get_by_text("You are subscribed to every tag.")).to_be_visible()
    # Staff are told where to make more.
    admin = await chrome.open(server, staff)
    subs = await open_section(admin, "Subscriptions", "Subscriptions")
    await subs.get_by_label("User").select_option(label="alice")
    await expect(
        subs.get_by_text("alice is subscribed to every tag. Create more in Tags.")
    ).to_be_visible()
    await subs.get_by_label("User").select_option(label="admin")
    await expect(subs.get_by_label("Tag")).to_be_visible()


async def test_bulk_actions_wait_for_something_to_act_on(chrome, server, people):
    page = await chrome.open(server, people["alice"])
    bulk = page.get_by_role("group", name="Everything in this view").get_by_role("button")
    await expect(page.locator("#inbox-empty")).to_be_visible()
    for n in range(await bulk.count()):
        await expect(bulk.nth(n)).to_be_disabled()
    await publish(server, people["staff"], people["news"], "something")
    await expect(page.get_by_role("button", name="Mark all read")).to_be_enabled()
    await page.get_by_role("button", name="Archive all").click()
    await expect(items(page)).to_have_count(0)
    await expect(page.get_by_role("button", name="Mark all read")).to_be_disabled()


async def test_the_audit_log_says_what_happened_and_who_did_it(chrome, server, people, conn):
    alice, staff = people["alice"], people["staff"]
    async with httpx.AsyncClient(base_url=server.http, headers=staff.headers) as http:
        key = (await http.post("/api/keys/", json={"name": "shop"})).json()["key"]
        as_key = {"Authorization": f"Bearer {key}"}
        tag = (await http.post("/api/tags/", json={"name": "orders"}, headers=as_key)).json()
        note = await http.post(
            "/api/notifications/",
            json={"tag": people["news"], "message": "Order 42 shipped"},
            headers=as_key,
        )
        assert note.status_code == 201, note.text
        mine = await http.get("/api/inbox/", headers=alice.headers)
        item_id = mine.json()["results"][0]["id"]
        await http.patch(f"/api/inbox/{item_id}/", json={"is_read": True}, headers=alice.headers)
        r = await http.post(
            "/api/users/external/", json={"external_ids": ["ext:42"]}, headers=as_key
        )
        assert r.status_code == 200, r.text
    await conn.execute("INSERT INTO tag (name) VALUES ('by-sql')")
    page = await chrome.open(server, staff)
    audit = await open_section(page, "Audit log", "Audit log")
    rows = audit.locator("tbody tr")
    await expect(rows.first).to_contain_text('Created tag "by-sql"')
    await expect(rows.first.locator("td").nth(1)).to_have_text("plain SQL")
    read = rows.filter(has_text=f"Read inbox item {item_id}")
    await expect(read.locator("td").nth(1)).to_have_text("alice")
    shipped = rows.filter(has_text='Published "Order 42 shipped" on "news" to 2 recipients')
    await expect(shipped.locator("td").nth(1)).to_have_text('API key "shop"')
    made = rows.filter(has_text=f'Created tag "{tag["name"]}"')
    await expect(made.locator("td").nth(1)).to_have_text('API key "shop"')
    await expect(rows.filter(has_text='Subscribed alice to "news"')).to_have_count(1)
    key_made = rows.filter(has_text='Made API key "shop" (publish)')
    await expect(key_made.locator("td").nth(1)).to_have_text("admin")
    user_made = rows.filter(has_text='Created user "ext.42"')
    await expect(user_made.locator("td").nth(1)).to_have_text('API key "shop"')
    # Users alone: the four made here, by plain SQL (the test's) and the key.
    await audit.get_by_label("Resource").select_option("users")
    await expect(rows).to_have_count(4)
    await expect(rows.filter(has_text='Created staff user "admin"')).to_have_count(1)
    await audit.get_by_label("Resource").select_option("")
    # The row as stored, one click away.
    await expect(read.locator("pre")).to_be_hidden()
    await read.get_by_text("Row").click()
    await expect(read.locator("pre")).to_contain_text('"resource": "user_notification"')
    await expect(read.locator("pre")).to_contain_text('"is_read": [')


async def test_narrow_screen_and_screenshot(chrome, server, people, conn, tmp_path):
    """A phone-width view has no sideways scroll; the desktop view is the docs' picture."""
    alice, staff = people["alice"], people["staff"]
    tags = {name: await subscribe(conn, alice.id, name) for name in ("deploys", "reviews")}
    tags["news"] = people["news"]
    phone = await chrome.open(server, alice, viewport=PHONE)
    desktop = await chrome.open(server, alice, viewport={"width": 1100, "height": 720})
    await publish(server, staff, tags["news"], "Weekly report for week 18 is ready", week=18)
    await publish(server, staff, tags["deploys"], "Build #812 deployed to production", build=812)
    await publish(
        server,
        staff,
        tags["news"],
        "Planned maintenance tonight from 22:00 to 23:00 UTC. "
        "Sign-ins may be refused for a few minutes while the database is upgraded.",
    )
    await publish(
        server,
        staff,
        tags["reviews"],
        "Dana asked for your review on pull request #311",
        url="/reviews/311",
        actions=[
            {"id": "approve", "label": "Approve", "url": "/reviews/311/approve"},
            {"id": "later", "label": "Remind me later"},
        ],
    )
    await expect(items(desktop)).to_have_count(4)
    await item(desktop, "Weekly report").get_by_role("button", name="Mark read").click()
    await expect(desktop.locator("#badge")).to_have_text("3")

    await expect(items(phone)).to_have_count(4)
    await expect(item(phone, "Weekly report").locator(".status")).to_have_text("Read")
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    target = SCREENSHOT if os.environ.get("CITELINK_UPDATE_SCREENSHOT") else tmp_path / "s.png"
    await desktop.mouse.move(0, 0)
    await desktop.screenshot(path=str(target), animations="disabled")
    assert target.stat().st_size > 10_000
    if os.environ.get("CITELINK_UPDATE_SCREENSHOT"):
        await phone.screenshot(path=str(tmp_path / "phone.png"), animations="disabled")
        print("phone view:", tmp_path / "phone.png")
