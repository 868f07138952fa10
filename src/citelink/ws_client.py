"""`citelink listen`: print a user's live events as JSON lines.

A WebSocket client of a running server, so it needs only the server's URL:
it signs in with POST /api/token/ (or takes an access token), opens
/ws/notifications/ and prints every frame the server sends, one per line.
When the connection drops (server restart, 4408, network), it reconnects with
backoff and sends `resume` after the newest item it has seen, so nothing is
missed and nothing printed twice. With a password it signs in again when the
token expires (4401); with `--token` it stops there.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import websockets

from .listener import backoff
from .protocol import EXTENDED, REPLACED, SOCKET_PATH, TOKEN_REFUSED

# Close codes after which reconnecting cannot help (4401: once a fresh token
# was refused too).
FINAL = {
    TOKEN_REFUSED: "the token is invalid or expired",
    REPLACED: "a newer socket of this user took this one's place",
}


class SignInError(Exception):
    """The server refused the credentials, or could not be reached."""


def sign_in(url: str, username: str, password: str) -> str:
    """An access token from the server's POST /api/token/."""
    request = urllib.request.Request(
        url.rstrip("/") + "/api/token/",
        data=orjson.dumps({"username": username, "password": password}),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())["access"]
    except urllib.error.HTTPError as exc:
        raise SignInError(f"sign-in refused ({exc.code}): wrong username or password?") from None
    except OSError as exc:
        raise SignInError(f"cannot reach {url}: {exc}") from None


def socket_url(url: str, token: str) -> str:
    """ws(s)://host/ws/notifications/?token=… for an http(s):// server URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + SOCKET_PATH
    return urlunsplit((scheme, parts.netloc, path, f"token={quote(token)}", ""))


async def listen(
    url: str, token: Callable[[bool], str], after: int | None, out: TextIO = sys.stdout
) -> int:
    """Print frames until interrupted; `token(renew)` gives an access token
    (a new one when `renew`, or raises SignInError)."""
    last = after
    position = 0  # of `last`, once a frame tells it
    renew = False
    attempt = 0
    while True:
        try:
            async with websockets.connect(
                socket_url(url, token(renew)), max_size=None, subprotocols=[EXTENDED]
            ) as ws:
                renew, attempt = False, 0
                learning = last is None
                if learning:
                    # Learn the newest item first: a reconnect resumes after it.
                    await ws.send('{"type":"notifications_list","before":null,"limit":1}')
                else:
                    await ws.send(orjson.dumps({"type": "resume", "after": last}).decode())
                    print(f"citelink listen: connected, resuming after {last}", file=sys.stderr)
                async for message in ws:
                    frame = orjson.loads(message)
                    if learning and frame.get("type") == "notifications_list":
                        learning = False
                        newest = frame["data"][0] if frame["data"] else {"id": 0, "position": 0}
                        last, position = newest["id"], newest["position"]
                        print(f"citelink listen: connected, newest item {last}", file=sys.stderr)
                        continue
                    print(message, file=out, flush=True)
                    # The newest item in the user's order (a restored one is older).
                    if frame.get("type") == "notification" and frame["position"] > position:
                        last, position = frame["id"], frame["position"]
            code = ws.close_code
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
        except (OSError, websockets.InvalidHandshake) as exc:
            code = None
            print(f"citelink listen: {exc}; retrying", file=sys.stderr)
        if code == TOKEN_REFUSED and not renew:
            renew = True  # sign in again, once
            continue
        if code in FINAL:
            print(f"citelink listen: closed ({code}): {FINAL[code]}", file=sys.stderr)
            return 1
        if code is not None:
            print(f"citelink listen: connection closed ({code}); reconnecting", file=sys.stderr)
        await asyncio.sleep(backoff(attempt))
        attempt += 1


def run(
    url: str, username: str | None, password: str | None, token: str | None, after: int | None
) -> int:
    """The `citelink listen` command."""
    if token is None:
        username = username or input("Username: ")
        if password is None:
            # A pipe works too: `echo "$PW" | citelink listen --username alice`.
            password = (
                getpass.getpass() if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
            )

    def access(renew: bool) -> str:
        nonlocal token
        if token is None or renew:
            if password is None:
                raise SignInError("the token is invalid or expired")
            assert username is not None
            token = sign_in(url, username, password)
        return token

    try:
        return asyncio.run(listen(url, access, after))
    except SignInError as exc:
        print(f"citelink listen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
