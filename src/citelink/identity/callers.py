"""Who is calling: `Authorization: Bearer <credential>`, one of

- a citelink access token (citelink.identity.tokens) of a live user;
- a platform token (citelink.identity.platform_tokens): the user of its external id,
  provisioned on first use unless CITELINK_PLATFORM_PROVISIONING is off;
- an API key (citelink.identity.api_keys), checked against the database on every
  request so that a revoked key fails at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from starlette.requests import Request

from citelink.db.connection import BIGINT_MAX
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.identity import api_keys, tokens
from citelink.identity.platform_tokens import TOO_LONG, PlatformTokens, TooLong, is_platform_token
from citelink.settings import Settings

# Why a token of a user is refused (a 401 on REST, a 4401 close on a socket):
# the user was deactivated or deleted, or their tokens revoked (a new
# password, a sign-out everywhere).
REVOKED = "user is inactive or deleted"
TOKENS_REVOKED = "token has been revoked"


@dataclass(frozen=True)
class CurrentUser:
    """A signed-in user, or an API key (`api_key` set, `id` None: a key acts
    for no user; what it may do is its `scopes`)."""

    id: int | None
    username: str
    is_staff: bool
    api_key: int | None = None
    scopes: tuple[str, ...] = ()
    # Set for a caller known from their token alone (`claimed_staff`): the
    # token generation the handler's statement must find the user still at,
    # active and staff, before it does anything (citelink.api.endpoint,
    # `confirms_caller`). None: the caller was read from the database.
    unconfirmed: int | None = None

    @property
    def manages_others(self) -> bool:
        """May act on anyone's subscriptions: staff, and keys (a route a key
        may not use refuses it before that)."""
        return self.is_staff or self.api_key is not None


@dataclass(frozen=True)
class Identity:
    """Whose an access token is, when it expires, and the token generation it
    stands for (a socket is closed when the user's moves on)."""

    user_id: int
    expires: float
    generation: int


def _user(row: asyncpg.Record) -> CurrentUser:
    return CurrentUser(row["id"], row["username"], row["is_staff"])


async def active_user(pool: asyncpg.Pool, user_id: int, generation: int) -> CurrentUser:
    """The user behind a token of `generation`, or a 401 when the user was
    deactivated or deleted, or the token revoked, since it was issued."""
    row = await pool.fetchrow(Q.user_by_id, user_id) if 0 < user_id <= BIGINT_MAX else None
    if row is None or not row["is_active"]:
        raise ApiError(401, REVOKED)
    if row["token_generation"] != generation:
        raise ApiError(401, TOKENS_REVOKED)
    return _user(row)


def decode(settings: Settings, token: str, *token_types: tokens.TokenType) -> dict[str, Any]:
    """The claims of a valid token of one of `token_types`, or a 401."""
    assert settings.secret_key
    for token_type in token_types:
        try:
            return tokens.decode(settings.secret_key, token, token_type)
        except tokens.InvalidToken:
            continue
    raise ApiError(401, "token is invalid or expired")


async def platform_user(pool: asyncpg.Pool, settings: Settings, external_id: str) -> asyncpg.Record:
    """The active user of `external_id`, made now if new and provisioning is on; else a 401."""
    row = await pool.fetchrow(Q.user_by_external_id, external_id)
    if row is None and settings.platform_provisioning:
        await pool.fetch(Q.provision_users, [external_id])
        row = await pool.fetchrow(Q.user_by_external_id, external_id)
    if row is None:
        raise ApiError(401, "no user has this token's external id")
    if not row["is_active"]:
        raise ApiError(401, REVOKED)
    return row


def access_identity(settings: Settings, token: str) -> Identity:
    """Whose a citelink access token is, from the token alone (a 401 when it
    is not valid); that the user is still active with this generation is the
    caller's to check."""
    claims = decode(settings, token, "access")
    return Identity(claims["user_id"], claims["exp"], claims["gen"])


async def identity(
    pool: asyncpg.Pool, settings: Settings, platform: PlatformTokens | None, token: str
) -> tuple[CurrentUser, Identity]:
    """The active user of a citelink access token or a platform token; a 401 otherwise."""
    assert settings.secret_key
    # A token verified before is ours: no need to look inside it again.
    ours = tokens.verified_access(settings.secret_key, token) is not None
    if not ours and is_platform_token(token):
        if platform is None:
            raise ApiError(401, "token is invalid or expired")
        try:
            claims = platform.decode(token)
        except TooLong:
            raise ApiError(401, TOO_LONG) from None
        except tokens.InvalidToken:
            raise ApiError(401, "token is invalid or expired") from None
        row = await platform_user(pool, settings, claims["sub"])
        # Platform tokens carry no generation: one issued before the user's
        # tokens were last revoked is refused by its time (to the second, so
        # one issued in that very second too), and one issued since stands
        # for the current generation, so that the next revocation closes a
        # socket opened with it.
        cutoff = row["tokens_valid_after"]
        if cutoff is not None and claims["iat"] <= cutoff:
            raise ApiError(401, TOKENS_REVOKED)
        return _user(row), Identity(row["id"], claims["exp"], row["token_generation"])
    found = access_identity(settings, token)
    return await active_user(pool, found.user_id, found.generation), found


class CallerUnconfirmed(Exception):
    """The statement that was to confirm a claimed caller (CurrentUser.unconfirmed)
    found no active staff user at that token generation, and did nothing."""


def claimed_staff(request: Request, body_bytes: int) -> CurrentUser | None:
    """The caller as a citelink access token that verifies says, taken to be
    active staff until the handler's statement confirms it; None for any other
    credential or a bad one (`authenticate` then says what it is), and for a
    body that does not say it is at most `body_bytes` long: a token refused
    since it was issued (demoted, deactivated, revoked) must not get a big
    body read before its 401 or 403."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > body_bytes:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    settings: Settings = request.state.settings
    assert settings.secret_key
    if scheme.lower() != "bearer" or not token or api_keys.looks_like_key(token):
        return None
    if tokens.verified_access(settings.secret_key, token) is None and is_platform_token(token):
        return None
    try:
        claims = decode(settings, token, "access")
    except ApiError:
        return None
    if claims.get("staff") is not True:
        return None  # an ordinary user's token: refused as usual, body unread
    return CurrentUser(claims["user_id"], "", True, unconfirmed=claims["gen"])


async def key_caller(pool: asyncpg.Pool, key: str) -> CurrentUser:
    found = await api_keys.find(pool, key)
    if found is None:
        raise ApiError(401, "API key is invalid")
    if found.revoked:
        raise ApiError(401, "API key has been revoked")
    return CurrentUser(None, f"key:{found.prefix}", "admin" in found.scopes, found.id, found.scopes)


async def authenticate(request: Request) -> CurrentUser:
    """The caller, from a Bearer access token, platform token or API key; 401 otherwise."""
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "authentication credentials were not provided")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "expected 'Authorization: Bearer <access token>'")
    state = request.state
    token = token.strip()
    if api_keys.looks_like_key(token):
        return await key_caller(state.pool, token)
    user, _ = await identity(state.pool, state.settings, state.platform, token)
    return user
