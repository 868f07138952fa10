"""`citelink listen`: print a user's live events as JSON lines.

A WebSocket client of a running server, so it needs only the server's URL:
it signs in with POST /api/token/ (or takes an access token), opens
/ws/notifications/ and prints every frame the server sends, one per line.
When the connection drops (server restart, 4408, network), it reconnects with
backoff and sends `resume` after the newest item it has seen, so nothing is
missed and nothing printed twice. With a password it signs in again when the
token expires (4401); with `--token` it stops there.

A server it cannot reach (to sign in, or to open the socket: the same with a
token and with a password) is tried `retries` more times, with backoff, and
then given up with a line that says so.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import urllib.error
import urllib.request
from typing import TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
import websockets
from websockets.typing import Subprotocol

from citelink.identity.callers import REVOKED
from citelink.problems import Problem
from citelink.relay.listener import backoff
from citelink.relay.protocol import EXTENDED, REPLACED, SOCKET_PATH, TOKEN_REFUSED

# Close codes after which reconnecting cannot help (4401: once a fresh token
# was refused too, or when there is no password to get one with).
FINAL = {
    TOKEN_REFUSED: "the token is invalid or expired",
    REPLACED: "a newer socket of this user took this one's place",
}
# The server's scheme for each scheme `--url` may be given in.
SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class SignInError(Exception):
    """The server refused the credentials: trying again cannot help."""


class Unreachable(Exception):
    """The server could not be reached, or could not answer now: worth a retry."""


def server_url(url: str) -> str:
    """http(s)://host[:port][/prefix] for what `--url` was given: a scheme-less
    host:port means http, and ws(s):// the server of that socket (the socket's
    own URL, /ws/notifications/ included, names the same server)."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise Problem(f"--url must be http(s)://host:port (or host:port), got {url!r}")
    path = parts.path.rstrip("/").removesuffix(SOCKET_PATH.rstrip("/"))
    return urlunsplit((SCHEMES[parts.scheme], parts.netloc, path, "", ""))


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        return str(orjson.loads(error.read())["detail"])
    except (orjson.JSONDecodeError, KeyError, TypeError, OSError):
        return f"HTTP {error.code}"


def sign_in(url: str, username: str, password: str) -> str:
    """An access token from the server's POST /api/token/."""
    request = urllib.request.Request(
        url + "/api/token/",
        data=orjson.dumps({"username": username, "password": password}),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            token: str = orjson.loads(response.read())["access"]
            return token
    except urllib.error.HTTPError as exc:
        if exc.code >= 500:
            raise Unreachable(f"the server answered {exc.code}: {_detail(exc)}") from None
        raise SignInError(f"sign-in refused: {_detail(exc)}") from None
    except OSError as exc:
        raise Unreachable(str(getattr(exc, "reason", exc))) from None


def socket_url(url: str, token: str) -> str:
    """ws(s)://host/ws/notifications/?token=… for an http(s):// server URL."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}[parts.scheme]
    path = parts.path.rstrip("/") + SOCKET_PATH
    return urlunsplit((scheme, parts.netloc, path, f"token={quote(token)}", ""))


class Credentials:
    """An access token, and the username and password to get a new one with."""

    def __init__(self, url: str, username: str | None, password: str | None, token: str | None):
        self.url, self.username, self.password, self._token = url, username, password, token

    @property
    def renewable(self) -> bool:
        return self.password is not None

    def token(self, renew: bool = False) -> str:
        if self._token is None or renew:
            assert self.username is not None and self.password is not None
            self._token = sign_in(self.url, self.username, self.password)
        return self._token


def _final_reason(code: int, reason: str) -> str:
    if code == TOKEN_REFUSED and reason == REVOKED:
        return "the user is deactivated or deleted"
    return FINAL[code]


async def listen(
    url: str, credentials: Credentials, after: int | None, retries: int, out: TextIO = sys.stdout
) -> int:
    """Print frames until interrupted; 1 once reconnecting cannot help."""
    last = after
    position = 0  # of `last`, once a frame tells it
    renew = False
    attempt = 0
    while True:
        reason = ""
        try:
            ws_url = socket_url(url, credentials.token(renew))
            async with websockets.connect(
                ws_url, max_size=None, subprotocols=[Subprotocol(EXTENDED)]
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
            code, reason = ws.close_code, ws.close_reason or ""
        except websockets.ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (1006, "")
        except (Unreachable, OSError, websockets.InvalidHandshake) as exc:
            status = exc.response.status_code if isinstance(exc, websockets.InvalidStatus) else 0
            if 400 <= status < 500 and status not in (408, 429):
                # No socket at that path, or not for this client: asking again cannot help.
                print(
                    f"citelink listen: {url}{SOCKET_PATH} refused the socket (HTTP {status}); "
                    "--url is the server's address, http(s)://host:port",
                    file=sys.stderr,
                )
                return 1
            code = None
            if attempt >= retries:
                print(
                    f"citelink listen: cannot reach {url} ({exc}), tried {attempt + 1} times; "
                    "is the server running there? (--url)",
                    file=sys.stderr,
                )
                return 1
            print(f"citelink listen: {exc}; retrying", file=sys.stderr)
        if code == TOKEN_REFUSED and not renew and credentials.renewable:
            renew = True  # sign in again, once
            continue
        if code in FINAL:
            why = _final_reason(code, reason)
            print(f"citelink listen: closed ({code}): {why}", file=sys.stderr)
            return 1
        if code is not None:
            print(f"citelink listen: connection closed ({code}); reconnecting", file=sys.stderr)
        await asyncio.sleep(backoff(attempt))
        attempt += 1


def run(
    url: str,
    username: str | None,
    password: str | None,
    token: str | None,
    after: int | None,
    retries: int,
) -> int:
    """The `citelink listen` command."""
    url = server_url(url)
    if token is None:
        username = username or input("Username: ")
        if password is None:
            # A pipe works too: `echo "$PW" | citelink listen --username alice`.
            password = (
                getpass.getpass() if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
            )
    try:
        return asyncio.run(listen(url, Credentials(url, username, password, token), after, retries))
    except SignInError as exc:
        print(f"citelink listen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
