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


async def active_user(pool: asyncpg.Pool, user_id: int, generation: int) -> CurrentUser:
    """The user behind a token of `generation`, or a 401 when the user was
    deactivated or deleted, or the token revoked, since it was issued."""
    row = await pool.fetchrow(Q.user_by_id, user_id) if 0 < user_id <= BIGINT_MAX else None
    if row is None or not row["is_active"]:
        raise ApiError(401, "user is inactive or deleted")
    if row["token_generation"] != generation:
        raise ApiError(401, "token has been revoked")
    return CurrentUser(row["id"], row["username"], row["is_staff"])


def decode(settings: Settings, token: str, *token_types: tokens.TokenType) -> dict:
    """The claims of a valid token of one of `token_types`, or a 401."""
    assert settings.secret_key
    for token_type in token_types:
        try:
            return tokens.decode(settings.secret_key, token, token_type)
        except tokens.InvalidToken:
            continue
    raise ApiError(401, "token is invalid or expired")


async def user_of_token(
    pool: asyncpg.Pool, settings: Settings, token: str, *token_types: tokens.TokenType
) -> CurrentUser:
    """The active user a valid, unrevoked token of one of `token_types` belongs to, or a 401."""
    claims = decode(settings, token, *token_types)
    return await active_user(pool, claims["user_id"], claims["gen"])


async def authenticate(request: Request) -> CurrentUser:
    """The caller, from a Bearer access token; 401 otherwise."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "authentication credentials were not provided")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "expected 'Authorization: Bearer <access token>'")
    return await user_of_token(request.state.pool, request.state.settings, token.strip(), "access")
