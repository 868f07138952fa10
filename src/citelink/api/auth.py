"""Who is calling: the `Authorization: Bearer <access token>` of a live user."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from starlette.requests import Request

from .. import tokens
from ..database import BIGINT_MAX
from ..errors import ApiError
from ..queries import Q
from ..settings import Settings


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    is_staff: bool


async def active_user(pool: asyncpg.Pool, user_id: int) -> CurrentUser | None:
    """The user behind a token, unless deactivated or deleted since it was issued."""
    if not 0 < user_id <= BIGINT_MAX:
        return None
    row = await pool.fetchrow(Q.user_by_id, user_id)
    if row is None or not row["is_active"]:
        return None
    return CurrentUser(row["id"], row["username"], row["is_staff"])


async def user_of_token(
    pool: asyncpg.Pool, settings: Settings, token: str, *token_types: tokens.TokenType
) -> CurrentUser:
    """The active user a valid token of one of `token_types` belongs to, or a 401."""
    assert settings.secret_key
    for token_type in token_types:
        try:
            claims = tokens.decode(settings.secret_key, token, token_type)
            break
        except tokens.InvalidToken:
            continue
    else:
        raise ApiError(401, "token is invalid or expired")
    user = await active_user(pool, claims["user_id"])
    if user is None:
        raise ApiError(401, "user is inactive or deleted")
    return user


async def authenticate(request: Request) -> CurrentUser:
    """The caller, from a Bearer access token; 401 otherwise."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "authentication credentials were not provided")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "expected 'Authorization: Bearer <access token>'")
    return await user_of_token(request.state.pool, request.state.settings, token.strip(), "access")
