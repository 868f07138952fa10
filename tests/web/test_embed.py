"""The drop-in inbox (`/embed/citelink-inbox.js`) in headless Chromium, inside
the demo host page whose CSS is hostile on purpose: badge, live push, read,
archive, an action, and a server restart with nothing lost or doubled.
Conditions are awaited with Playwright's `expect`, never fixed sleeps."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import expect

from tests.support.attack import LINK_ATTACKS
from tests.support.browser import CHROMIUM, Chrome
from tests.support.data import subscribe
from tests.support.servers import start_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install -y chromium"
)


async def insert(conn, tag: int, message: str, data: dict | None = None) -> None:
    """A notification by plain SQL, as any other service would write one."""
    await conn.execute(
        "INSERT INTO notification (tag_id, message, data) VALUES ($1, $2, $3)",
        tag,
        message,
        data or {},
    )


async def test_module_and_demo_are_served(client):
    r = await client.get("/embed/citelink-inbox.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    # Pages of any origin may load the module (module scripts are fetched with CORS).
    assert r.headers["access-control-allow-origin"] == "*"
    assert "export class CitelinkClient" in r.text and "export class CitelinkInbox" in r.text
    # No outside requests: the only URLs in it are the socket path and examples.
    assert "import " not in r.text.replace("import.meta", "")
    assert ".innerHTML = TEMPLATE" in r.text and r.text.count("innerHTML") == 2
    demo = await client.get("/embed/demo")
    assert demo.status_code == 200 and demo.headers["content-type"].startswith("text/html")
    assert "<citelink-inbox>" in demo.text.replace("&lt;", "<").replace("&gt;", ">")
    assert (await client.get("/embed/nothing.js")).status_code == 404


async def test_the_element_in_a_hostile_host_page(chrome: Chrome, settings, conn, make_user):
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await insert(conn, news, "first <b>not bold</b>")
    await insert(conn, news, "second", {"url": "javascript:alert(1)"})
    server = await start_server(settings)
    port = server.port
    try:
        page = await chrome.new_page()
        await page.goto(f"{server.http}/embed/demo?token={quote(alice.token)}")
        inbox = page.locator("citelink-inbox")
        bell = inbox.locator(".bell")
        badge = inbox.locator(".badge")
        await expect(badge).to_have_text("2")
        # The host's `color: transparent; font-size: 0` did not reach it.
        style = await badge.evaluate(
            "b => [getComputedStyle(b).color, getComputedStyle(b).fontSize]"
        )
        assert style[0] != "rgba(0, 0, 0, 0)" and style[1] != "0px", style
        box = await bell.bounding_box()
        assert box and box["width"] >= 20 and box["height"] >= 20
        await expect(bell).to_have_attribute("aria-label", "Notifications, 2 unseen")

        # Live push of a row inserted by plain SQL.
        await insert(
            conn,
            news,
            "approve me",
            {"actions": [{"id": "approve", "label": "Approve"}], "url": "https://example.com/x"},
        )
        await expect(badge).to_have_text("3")

        # Opening the panel (keyboard) sees everything: the badge goes.
        await bell.focus()
        await page.keyboard.press("Enter")
        panel = inbox.locator(".panel")
        await expect(panel).to_be_visible()
        await expect(bell).to_have_attribute("aria-expanded", "true")
        await expect(badge).to_be_hidden()
        rows = inbox.locator("li")
        await expect(rows).to_have_count(3)
        # Newest first; markup shown as text; a javascript: link is no link.
        await expect(rows.nth(0)).to_contain_text("approve me")
        await expect(rows.nth(2).locator(".message")).to_have_text("first <b>not bold</b>")
        await expect(rows.nth(1).locator("a")).to_have_count(0)
        link = rows.nth(0).locator("a.message")
        await expect(link).to_have_attribute("rel", "noopener noreferrer")
        unseen = "SELECT count(*) FROM user_notification WHERE user_id = $1 AND NOT is_seen"
        assert await conn.fetchval(unseen, alice.id) == 0

        # Read, then an action, then archive: each reaches the database.
        second = rows.filter(has_text="second")
        await second.get_by_role("button", name="Mark read").click()
        await expect(second.get_by_role("button", name="Mark unread")).to_be_visible()
        state = "SELECT is_read, is_archived, action FROM user_notification un JOIN notification n ON n.id = un.notification_id WHERE n.message = $1"  # noqa: E501
        assert (await conn.fetchrow(state, "second"))["is_read"] is True
        approve = rows.filter(has_text="approve me")
        await approve.get_by_role("button", name="Approve", exact=True).click()
        await expect(approve.locator(".taken")).to_have_text("✓ Approve")
        assert (await conn.fetchrow(state, "approve me"))["action"] == "approve"
        first = rows.filter(has_text="first")
        await first.get_by_role("button", name="Archive").click()
        await expect(rows).to_have_count(2)
        assert (await conn.fetchrow(state, "first <b>not bold</b>"))["is_archived"] is True

        # Escape closes and gives focus back to the bell.
        await page.keyboard.press("Escape")
        await expect(panel).to_be_hidden()
        assert await inbox.evaluate("i => i.shadowRoot.activeElement.className") == "bell"

        # A restart: what is published while the server is down, and after,
        # shows once each.
        await server.stop()
        await insert(conn, news, "while down")
        await expect(inbox.locator(".state")).to_have_text("Reconnecting…")
        server = await start_server(settings, port)
        await expect(badge).to_have_text("1")
        await insert(conn, news, "after the restart")
        await expect(badge).to_have_text("2")
        await bell.click()
        await expect(rows).to_have_count(4)
        messages = await rows.locator(".message").all_text_contents()
        assert messages == ["after the restart", "while down", "approve me", "second"]
    finally:
        await server.stop()


async def test_token_provider_renews_and_headless_client(chrome: Chrome, server, make_user, conn):
    """A token refused (expired) is replaced from the provider, and the
    headless client lists, marks and counts on its own."""
    from citelink.identity import tokens
    from tests.support.data import SECRET_KEY

    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    await conn.execute(
        "INSERT INTO notification (tag_id, message) SELECT $1, 'old ' || g "
        "FROM generate_series(1, 21) AS g",
        news,
    )
    await insert(conn, news, "hello")
    expired = tokens.issue(SECRET_KEY, alice.id, "access", -1)
    page = await chrome.new_page()
    await page.goto(f"{server.http}/embed/demo")
    await page.evaluate(
        """([expired, fresh]) => {
            window.calls = 0;
            window.getToken = async () => { window.calls += 1; return fresh; };
            const inbox = document.createElement("citelink-inbox");
            inbox.setAttribute("token", expired);
            inbox.setAttribute("token-provider", "getToken");
            document.getElementById("host").append(inbox);
        }""",
        [expired, alice.token],
    )
    inbox = page.locator("citelink-inbox")
    await expect(inbox.locator(".badge")).to_have_text("22")
    assert await page.evaluate("window.calls") >= 1
    # A page of 20, then the older ones; a new item in the open panel is seen.
    await inbox.locator(".bell").click()
    await expect(inbox.locator("li")).to_have_count(20)
    await inbox.get_by_role("button", name="Load older").click()
    await expect(inbox.locator("li")).to_have_count(22)
    await expect(inbox.get_by_role("button", name="Load older")).to_be_hidden()
    await expect(inbox.locator("li").last).to_contain_text("old 1")
    await insert(conn, news, "while open")
    await expect(inbox.locator("li").first).to_contain_text("while open")
    seen = "SELECT bool_and(is_seen) FROM user_notification WHERE user_id = $1"
    await wait_until(lambda: conn.fetchval(seen, alice.id))
    await expect(inbox.locator(".badge")).to_be_hidden()
    await inbox.locator(".bell").click()
    result = await page.evaluate(
        """async () => {
            const { CitelinkClient } = await import("/embed/citelink-inbox.js");
            const token = await window.getToken();
            const client = new CitelinkClient({ server: location.origin, token });
            const counts = [];
            client.on("counts", (c) => counts.push(c.unread));
            await new Promise((ok) => { client.on("status", (s) => s === "live" && ok()); client.connect(); });
            const page = await client.list({ limit: 1 });
            const read = new Promise((ok) => client.on("read", ok));
            const fewer = new Promise((ok) => client.on("counts", (c) => c.unread === 22 && ok()));
            client.read(page.data[0].id);
            const frame = await read;
            await fewer;
            client.close();
            return { messages: page.data.map((i) => i.message), read: frame.id === page.data[0].id, counts };
        }"""  # noqa: E501
    )
    assert result["messages"] == ["while open"] and result["read"]
    assert result["counts"][-1] == 22
    async with httpx.AsyncClient(base_url=server.http) as http:
        r = await http.get("/api/inbox/counts/", headers=alice.headers)
    assert r.json()["unread"] == 22


async def test_the_element_opens_no_link_to_another_site(chrome: Chrome, server, make_user, conn):
    """The API's rule, for what plain SQL wrote: `/\\host`, `/<tab>/host` and
    the like are neither an item's link nor opened by its action button."""
    alice = await make_user("alice")
    news = await subscribe(conn, alice.id, "news")
    page = await chrome.new_page()
    opened: list[str] = []
    page.context.on("page", lambda popup: opened.append(popup.url))
    await page.goto(f"{server.http}/embed/demo?token={quote(alice.token)}")
    inbox = page.locator("citelink-inbox")
    await expect(inbox.locator(".bell")).to_have_attribute("aria-label", "Notifications")
    for n, link in enumerate(LINK_ATTACKS):
        data = {"url": link, "actions": [{"id": "go", "label": f"Go {n}", "url": link}]}
        await insert(conn, news, f"attack {n}", data)
    safe = {
        "url": "/healthz?safe",
        "actions": [{"id": "go", "label": "Go safe", "url": "/healthz"}],
    }
    await insert(conn, news, "a safe one", safe)
    await expect(inbox.locator(".badge")).to_have_text(str(len(LINK_ATTACKS) + 1))
    await inbox.locator(".bell").click()
    await expect(inbox.locator("li")).to_have_count(len(LINK_ATTACKS) + 1)
    # The safe item's message is the only link.
    await expect(inbox.locator("li a")).to_have_count(1)
    await expect(inbox.locator("li a")).to_have_attribute("href", "/healthz?safe")
    for n in range(len(LINK_ATTACKS)):
        await inbox.get_by_role("button", name=f"Go {n}", exact=True).click()
    taken = "SELECT count(*) = $2 FROM user_notification WHERE user_id = $1 AND action = 'go'"
    await wait_until(lambda: conn.fetchval(taken, alice.id, len(LINK_ATTACKS)))
    assert opened == []
    # The safe action does open its link: what is above could have shown one.
    async with page.context.expect_page() as popup:
        await inbox.get_by_role("button", name="Go safe", exact=True).click()
    await (await popup.value).wait_for_load_state()
    assert opened == [f"{server.http}/healthz"]


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def luminance(rgb: str) -> float:
    """WCAG relative luminance of a computed `rgb(r, g, b)` colour."""
    channels = [int(c) / 255 for c in rgb[rgb.index("(") + 1 : -1].split(",")[:3]]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: str, other: str) -> float:
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
async def test_the_demo_explains_itself_and_its_bell_stands_out(
    chrome: Chrome, server, make_user, viewport
):
    """The hostile CSS is the host page's: it hits the host's content, not the
    demo's own explanation, labels and button."""
    alice = await make_user("alice")
    page = await chrome.new_page(viewport=viewport)
    await page.goto(f"{server.http}/embed/demo")
    explanation = page.get_by_text("hostile on purpose")
    await expect(explanation).to_be_visible()
    style = "e => [getComputedStyle(e).color, getComputedStyle(e).fontSize]"
    color, size = await explanation.evaluate(style)
    assert color != "rgba(0, 0, 0, 0)" and float(size[:-2]) >= 12, (color, size)
    token = page.get_by_label("Token")
    await expect(token).to_be_visible()
    assert (await page.get_by_text("Token", exact=True).evaluate(style))[0] != "rgba(0, 0, 0, 0)"
    await expect(page.get_by_label("Server")).to_have_count(0)
    # The host page's own content still gets the hostile CSS.
    host = page.get_by_text("The host page's own content.")
    assert (await host.evaluate(style))[0] == "rgba(0, 0, 0, 0)"
    assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]

    await token.fill(alice.token)
    await page.get_by_role("button", name="Show the inbox").click()
    bell = page.locator("citelink-inbox").locator(".bell")
    await expect(bell).to_have_attribute("aria-label", "Notifications")
    await expect(page.locator("citelink-inbox").locator(".state")).to_have_text("")
    icon, background = await bell.evaluate(
        "b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]"
    )
    # An opaque face whatever is behind it (stripes here), and an icon that shows on it.
    assert background.startswith("rgb("), background
    assert contrast(icon, background) >= 4.5, (icon, background)


async def test_the_demo_connects_only_to_its_own_origin(chrome: Chrome, server, make_user):
    """A link to the demo with ?server= must not send the token elsewhere."""
    alice = await make_user("alice")
    page = await chrome.new_page()
    sockets: list[str] = []
    requests: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.on("request", lambda request: requests.append(request.url))
    elsewhere = "http://127.0.0.2:9"
    await page.goto(f"{server.http}/embed/demo?server={quote(elsewhere)}&token={alice.token}")
    await expect(page.locator("citelink-inbox").locator(".bell")).to_be_visible()
    await expect(page.locator("citelink-inbox").locator(".state")).to_have_text("")
    assert sockets and all(url.startswith(f"{server.ws}/ws/notifications/") for url in sockets)
    assert not [url for url in requests if not url.startswith(server.http)]
