"""Declaring a REST operation: who may call it, what it takes, what it answers.

    @endpoint("Create a tag", access="staff", body=TAG, status=201)
    async def create_tag(call: Call) -> Tag: ...

The declaration is enforced around the handler: authentication, staff
check, path id, query and body validation before it, in that order (so an
anonymous caller learns nothing about ids or bodies), and the declared
status after it, with the handler's value as the JSON body (none when it
returns None). The handler's return annotation, a type of
citelink.shapes, is the answer's schema. The declaration is also what
/openapi.json describes, so the document and the behaviour cannot disagree.
"""

from __future__ import annotations

import logging
import re
import typing
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from citelink.api.validation import NO_QUERY, Body, Query, read_body
from citelink.db.budget import Busy, WorkBudget
from citelink.db.connection import (
    BIGINT_MAX,
    CONNECTION_LOST,
    UNAVAILABLE,
    statement_seconds,
    transaction,
)
from citelink.errors import ApiError
from citelink.identity.callers import CallerUnconfirmed, CurrentUser, authenticate, claimed_staff
from citelink.identity.passwords import HashSlots
from citelink.responses import json_response
from citelink.settings import Settings

Access = Literal["anyone", "user", "staff"]
# The scope an API key needs for an operation (citelink.identity.api_keys); None: keys
# are refused (the route acts as a signed-in user: their inbox, their tokens).
KeyScope = Literal["publish", "admin"] | None

log = logging.getLogger("citelink.api")

# The largest body of a route that is not staff's (CITELINK_MAX_BODY_BYTES
# bounds staff routes): 413 past it.
USER_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Operation:
    """What /openapi.json says about one method of one path."""

    summary: str
    access: Access
    body: Body | None
    query: Query
    status: int
    # The answer's type (citelink.shapes), None when it has no body.
    response: Any
    # Statuses beyond those the declaration implies (401, 403, 404, 400, 413, 422).
    errors: dict[int, str] = field(default_factory=dict)
    key_scope: KeyScope = None
    # Changes every item a filter selects: the bulk statement timeout.
    bulk: bool = False
    # A staff operation whose handler, for a caller known from an access token
    # alone (CurrentUser.unconfirmed), checks in its own statement that the
    # caller is still active staff at that token generation, or raises
    # CallerUnconfirmed having done nothing: one round trip less.
    confirms_caller: bool = False


@dataclass(frozen=True)
class Call:
    """One validated request, as a handler sees it."""

    request: Request
    user: CurrentUser | None
    path_id: int | None
    query: dict[str, Any]
    body: dict[str, Any]

    @property
    def id(self) -> int:
        """The `{id}` of the path (routes that have one)."""
        assert self.path_id is not None
        return self.path_id

    # The app's state (citelink.server.app.State), which Starlette types as Any.
    @property
    def pool(self) -> asyncpg.Pool:
        pool: asyncpg.Pool = self.request.state.pool
        return pool

    @property
    def settings(self) -> Settings:
        settings: Settings = self.request.state.settings
        return settings

    @property
    def passwords(self) -> HashSlots:
        passwords: HashSlots = self.request.state.passwords
        return passwords

    @property
    def me(self) -> CurrentUser:
        """The authenticated caller (routes that are not `anyone`)."""
        assert self.user is not None
        return self.user

    @property
    def user_id(self) -> int:
        """The signed-in user's id (routes that refuse API keys: a key is no user)."""
        assert self.me.id is not None
        return self.me.id

    def transaction(self) -> AbstractAsyncContextManager[PoolConnectionProxy]:
        """A transaction whose writes are audited as the caller's (user or key)."""
        return transaction(self.pool, self.me.id, self.me.api_key)


# A handler returns the JSON body of its answer (None when it has none).
Handler = Callable[[Call], Awaitable[Any]]


@dataclass
class Input:
    """A request's query and body once read and validated (None: not yet);
    kept for a second run of the handler (Endpoint._as_claimed)."""

    query: dict[str, Any] | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Endpoint:
    handler: Handler
    operation: Operation

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._respond(request)
        except UNAVAILABLE as exc:
            log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
            raise ApiError(503, "database unavailable, try again later") from exc

    async def _respond(self, request: Request) -> Response:
        claimed = None
        if self.operation.confirms_caller:
            claimed = claimed_staff(request, USER_BODY_BYTES)
        if claimed is not None:
            return await self._as_claimed(request, claimed)
        return await self._answer(request, await self._caller(request), Input())

    async def _as_claimed(self, request: Request, claimed: CurrentUser) -> Response:
        """Answer as the caller the token claims (CurrentUser.unconfirmed),
        whom the handler's statement confirms; on any refusal the caller is
        checked first, so that answers come in the usual order."""
        read = Input()
        try:
            return await self._answer(request, claimed, read)
        except CallerUnconfirmed:
            # Nothing was done: the caller is refused (a 401 or 403), or has
            # become staff since and is answered as usual.
            return await self._answer(request, await self._caller(request), read)
        except UNAVAILABLE:
            raise  # a 503, as the authentication query would have met
        except Exception:
            await self._caller(request)
            raise

    async def _caller(self, request: Request) -> CurrentUser | None:
        """The authenticated caller (None for `anyone`), or a 401 or 403."""
        op = self.operation
        if op.access == "anyone":
            return None
        # Reading who the caller is may always be done again.
        user: CurrentUser = await _repeatable(request.state.pool, True, authenticate, request)
        if user.api_key is not None:
            if op.key_scope is None:
                raise ApiError(403, "API keys may not use this route: it acts as a signed-in user")
            if op.key_scope not in user.scopes and "admin" not in user.scopes:
                raise ApiError(403, f"this API key lacks the {op.key_scope!r} scope")
        elif op.access == "staff" and not user.is_staff:
            raise ApiError(403, "only staff may do this")
        return user

    async def _answer(self, request: Request, user: CurrentUser | None, read: Input) -> Response:
        op = self.operation
        item_id = request.path_params.get("id")
        # The int convertor takes any digits; beyond bigint nothing can exist.
        if item_id is not None and item_id > BIGINT_MAX:
            raise ApiError(404, "not found")
        if user is None:
            result = await self._handle(request, user, item_id, read)
        else:
            result = await self._within_budget(request, user, item_id, read)
        if op.response is None:
            return Response(status_code=op.status)
        return json_response(result, status=op.status)

    async def _handle(
        self, request: Request, user: CurrentUser | None, item_id: int | None, read: Input
    ) -> Any:
        """Read the query and body (once: `read` keeps them), then run the handler."""
        op = self.operation
        settings: Settings = request.state.settings
        if read.query is None or read.body is None:
            query = op.query.parse(request.query_params, settings)
            body = {}
            if op.body is not None:
                # Only a publisher's body may be big (a message, its data); a
                # user's is a few fields, and parsing a big one holds the loop.
                limit = settings.max_body_bytes if op.access == "staff" else USER_BODY_BYTES
                body = op.body.parse(await read_body(request, limit), settings)
            read.query, read.body = query, body
        call = Call(request, user, item_id, read.query, read.body)
        is_read = request.method in ("GET", "HEAD")
        return await _repeatable(request.state.pool, is_read, self.handler, call)

    async def _within_budget(
        self, request: Request, user: CurrentUser, item_id: int | None, read: Input
    ) -> Any:
        """Reading the body and the handler, within the caller's budget of
        database work (a user's or an API key's, citelink.db.budget: a body
        is parsed in its slot, so one user's flood of big bodies is never
        parsed at once) and its class's statement timeout."""
        settings: Settings = request.state.settings
        work: WorkBudget = request.state.work
        publisher = user.is_staff or user.api_key is not None
        if self.operation.access == "staff":
            seconds = None  # staff work: CITELINK_DB_QUERY_SECONDS
        elif self.operation.bulk:
            seconds = settings.bulk_query_seconds
        else:
            seconds = settings.user_query_seconds
        key = ("key", user.api_key) if user.api_key is not None else user.id
        try:
            async with work.claim(key, publisher=publisher):
                token = statement_seconds.set(seconds)
                try:
                    return await self._handle(request, user, item_id, read)
                finally:
                    statement_seconds.reset(token)
        except Busy:
            raise ApiError(
                429,
                "too many of your requests are running at once; try again in a moment",
                headers={"Retry-After": "1"},
            ) from None


async def _repeatable(
    pool: asyncpg.Pool, read: bool, work: Callable[[Any], Awaitable[Any]], arg: Any
) -> Any:
    """`work(arg)`, run once more on a fresh connection when its database
    connection was lost, if that is safe: for a `read`, or when the statement
    was never sent (see citelink.db.connection.CONNECTION_LOST)."""
    try:
        return await work(arg)
    except CONNECTION_LOST as exc:
        # What killed one connection (a restart, a failover, an operator)
        # most likely killed the idle ones too: all are replaced on next use.
        await pool.expire_connections()
        if not read and not isinstance(exc, asyncpg.InternalClientError):
            raise
        log.info("database connection lost: %r; once more on a fresh one", exc)
        return await work(arg)


def endpoint(
    summary: str,
    *,
    access: Access = "user",
    body: Body | None = None,
    query: Query = NO_QUERY,
    status: int = 200,
    errors: dict[int, str] | None = None,
    key_scope: KeyScope | Literal["default"] = "default",
    bulk: bool = False,
    confirms_caller: bool = False,
) -> Callable[[Handler], Endpoint]:
    """Declare a handler's operation (see the module docstring). By default a
    staff operation takes an `admin` key and others take no key."""
    if key_scope == "default":
        key_scope = "admin" if access == "staff" else None

    def declare(handler: Handler) -> Endpoint:
        response = typing.get_type_hints(handler, include_extras=True)["return"]
        response = None if response is type(None) else response
        assert not confirms_caller or access == "staff", "only staff callers are claimed"
        operation = Operation(
            summary,
            access,
            body,
            query,
            status,
            response,
            errors or {},
            key_scope,
            bulk,
            confirms_caller,
        )
        return Endpoint(handler, operation)

    return declare


class ApiRoute(Route):
    """One route for a path, its endpoints by lower-case method name
    (`ApiRoute("/api/tags/", get=..., post=...)`), so a wrong method answers
    405 with the complete Allow header."""

    def __init__(self, path: str, **methods: Endpoint) -> None:
        self.endpoints = {name.upper(): ep for name, ep in methods.items()}
        by_method = dict(self.endpoints)
        if "GET" in by_method:
            by_method["HEAD"] = by_method["GET"]

        async def dispatch(request: Request) -> Response:
            return await by_method[request.method](request)

        name = re.sub(r"\W+", "_", path).strip("_")
        super().__init__(path, dispatch, methods=list(by_method), name=name)
