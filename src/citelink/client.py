"""A Python client for publishers: citelink's REST API over httpx, sync and async.

    from citelink.client import Client

    with Client("https://citelink.example", api_key="cl_...") as citelink:
        citelink.publish("Your order shipped", users=["ext:42"], data={"url": "/orders/7"})

`AsyncClient` has the same methods, as coroutines. Users are named by
citelink id (42) or by the platform's external id ("ext:42"). Errors are
typed: every failure is a CitelinkError, and its subclasses say what to do
about it (AuthenticationError: a new key or token; InvalidRequest: fix the
request, see `.errors`; RateLimited: wait `.retry_after` seconds;
Unavailable: try again later).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from citelink.shapes import Notification, Page, Subscription, Tag, User, Users

DEFAULT_TIMEOUT = 10.0


class CitelinkError(Exception):
    """A request citelink did not carry out: `status` (None when no answer
    came), `detail` (citelink's reason) and `errors` (field -> problem)."""

    def __init__(
        self, detail: str, status: int | None = None, errors: dict[str, str] | None = None
    ):
        super().__init__(f"{status}: {detail}" if status else detail)
        self.detail, self.status, self.errors = detail, status, errors or {}


class AuthenticationError(CitelinkError):
    """401: no credentials, or an invalid, expired or revoked key or token."""


class PermissionDenied(CitelinkError):
    """403: the key's scopes (or the user) do not allow this."""


class NotFound(CitelinkError):
    """404."""


class Conflict(CitelinkError):
    """409: a duplicate (a tag's name, a subscription)."""


class InvalidRequest(CitelinkError):
    """400, 413 or 422: the request itself is wrong; `errors` names the fields."""


class RateLimited(CitelinkError):
    """429: wait `retry_after` seconds."""

    def __init__(
        self, detail: str, status: int, errors: dict[str, str] | None, retry_after: float | None
    ):
        super().__init__(detail, status, errors)
        self.retry_after = retry_after


class Unavailable(CitelinkError):
    """503, another 5xx, or no answer at all (connection refused, timeout): try again later."""


_BY_STATUS: dict[int, type[CitelinkError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
}


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _answer(response: httpx.Response) -> Any:
    """The JSON of a successful answer (None for a 204); the typed error otherwise."""
    if response.is_success:
        return None if response.status_code == 204 else response.json()
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail") or response.reason_phrase or "error")
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else None
    status = response.status_code
    if status == 429:
        raise RateLimited(detail, status, errors, _retry_after(response))
    if status >= 500:
        raise Unavailable(detail, status, errors)
    raise _BY_STATUS.get(status, CitelinkError)(detail, status, errors)


def _headers(api_key: str | None, token: str | None) -> dict[str, str]:
    if api_key and token:
        raise ValueError("give an api_key or a token, not both")
    credential = api_key or token
    headers = {"Accept": "application/json"}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    return headers


UserRef = int | str  # a citelink user id, or "ext:<external id>"


def _notification(
    message: str,
    tag: int | None,
    users: Iterable[UserRef] | None,
    data: dict[str, Any] | None,
    fields: dict[str, Any],
) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message, **fields}
    if tag is not None:
        body["tag"] = tag
    if users is not None:
        body["users"] = list(users)
    if data is not None:
        body["data"] = data
    return body


def _external(external_ids: Iterable[str]) -> dict[str, list[str]]:
    return {"external_ids": [e if e.startswith("ext:") else f"ext:{e}" for e in external_ids]}


class Client:
    """citelink's REST API, synchronous. `base_url` is the service
    (https://citelink.example); `api_key` (a service) or `token` (a user's
    access token) authenticates."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ):
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key, token),
            timeout=timeout,
            transport=transport,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"citelink cannot be reached: {exc!r}") from exc
        return _answer(response)

    def publish(
        self,
        message: str,
        tag: int | None = None,
        users: Iterable[UserRef] | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Notification:
        """Post a notification to a tag's subscribers and/or listed users; the
        notification with its `recipients`. `fields`: priority, group_key,
        group_window, send_at, expires_at (see /openapi.json)."""
        body = _notification(message, tag, users, data, fields)
        notification: Notification = self._call("POST", "/api/notifications/", json=body)
        return notification

    def tags(self) -> list[Tag]:
        """Every tag (all pages)."""
        found: list[Tag] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page: Page[Tag] = self._call("GET", "/api/tags/", params=params)
            found += page["results"]
            if page["next"] is None:
                return found
            params["before"] = page["next"]

    def create_tag(self, name: str, critical: bool = False) -> Tag:
        tag: Tag = self._call("POST", "/api/tags/", json={"name": name, "critical": critical})
        return tag

    def delete_tag(self, tag: int) -> None:
        self._call("DELETE", f"/api/tags/{tag}/")

    def subscribe(self, user: UserRef, tag: int, mode: str = "live") -> Subscription:
        """Subscribe a user (id or "ext:<id>") to a tag; the subscription."""
        subscription: Subscription = self._call(
            "POST", "/api/subscriptions/", json={"user": user, "tag": tag, "mode": mode}
        )
        return subscription

    def unsubscribe(self, user: UserRef, tag: int) -> None:
        """End a user's subscription to a tag; NotFound when there is none."""
        user_id = self.user(user)["id"] if isinstance(user, str) else user
        page: Page[Subscription] = self._call(
            "GET", "/api/subscriptions/", params={"user": user_id, "tag": tag}
        )
        if not page["results"]:
            raise NotFound("no such subscription", 404)
        self._call("DELETE", f"/api/subscriptions/{page['results'][0]['id']}/")

    def users(self, *external_ids: str) -> list[User]:
        """The users of these external ids ("42" or "ext:42"), made for those
        citelink has not seen yet (InvalidRequest naming them instead when
        the server's CITELINK_PLATFORM_PROVISIONING is off)."""
        answer: Users = self._call("POST", "/api/users/external/", json=_external(external_ids))
        return answer["users"]

    def user(self, external_id: str) -> User:
        """The user of one external id (made if new, when provisioning is on)."""
        return self.users(external_id)[0]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """Client's methods as coroutines, over httpx.AsyncClient."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=_headers(api_key, token),
            timeout=timeout,
            transport=transport,
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(f"citelink cannot be reached: {exc!r}") from exc
        return _answer(response)

    async def publish(
        self,
        message: str,
        tag: int | None = None,
        users: Iterable[UserRef] | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Notification:
        body = _notification(message, tag, users, data, fields)
        notification: Notification = await self._call("POST", "/api/notifications/", json=body)
        return notification

    async def tags(self) -> list[Tag]:
        found: list[Tag] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page: Page[Tag] = await self._call("GET", "/api/tags/", params=params)
            found += page["results"]
            if page["next"] is None:
                return found
            params["before"] = page["next"]

    async def create_tag(self, name: str, critical: bool = False) -> Tag:
        body = {"name": name, "critical": critical}
        tag: Tag = await self._call("POST", "/api/tags/", json=body)
        return tag

    async def delete_tag(self, tag: int) -> None:
        await self._call("DELETE", f"/api/tags/{tag}/")

    async def subscribe(self, user: UserRef, tag: int, mode: str = "live") -> Subscription:
        subscription: Subscription = await self._call(
            "POST", "/api/subscriptions/", json={"user": user, "tag": tag, "mode": mode}
        )
        return subscription

    async def unsubscribe(self, user: UserRef, tag: int) -> None:
        user_id = (await self.user(user))["id"] if isinstance(user, str) else user
        page: Page[Subscription] = await self._call(
            "GET", "/api/subscriptions/", params={"user": user_id, "tag": tag}
        )
        if not page["results"]:
            raise NotFound("no such subscription", 404)
        await self._call("DELETE", f"/api/subscriptions/{page['results'][0]['id']}/")

    async def users(self, *external_ids: str) -> list[User]:
        answer: Users = await self._call(
            "POST", "/api/users/external/", json=_external(external_ids)
        )
        return answer["users"]

    async def user(self, external_id: str) -> User:
        return (await self.users(external_id))[0]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
