"""Token routes, shaped like the seed's djangorestframework-simplejwt (with
its rotation and blacklist apps): obtain `{access, refresh}`, refresh →
`{access, refresh}`, verify → `{}` or 401, blacklist → `{}`; and sign out
everywhere.

Every token carries the user's token generation, and is refused once the
generation moved on (sql/triggers.sql bumps it on a new password or a
deactivation; revoke-all here). A sign-in starts a refresh token family
(refresh_token_family): refreshing replaces the family's one valid refresh
token with a new one, and presenting a replaced one (a copy someone else
used first) revokes the family.
"""

from __future__ import annotations

import uuid

from citelink.api.endpoint import Call, endpoint
from citelink.api.validation import Body, String
from citelink.db.queries import Q
from citelink.errors import ApiError
from citelink.identity import tokens
from citelink.identity.callers import active_user, decode
from citelink.identity.throttle import SignInThrottle
from citelink.shapes import Empty, TokenPair

# Long enough for any token we issue, short enough to refuse junk early.
TOKEN = String(max_length=4096)
CREDENTIALS = Body(
    {
        "username": String(max_length=150),
        # Any password a user may have set, blank ones included.
        "password": String(max_length=1024, blank=True),
    }
)
REFRESH = Body({"refresh": TOKEN})
REVOKED = "token has been revoked"
REUSED = "refresh token already used: every token of its sign-in is revoked"


def _pair(
    call: Call, user_id: int, generation: int, family: uuid.UUID | str, jti: str, staff: bool
) -> TokenPair:
    settings = call.settings
    assert settings.secret_key
    return {
        "refresh": tokens.issue(
            settings.secret_key,
            user_id,
            "refresh",
            settings.refresh_token_minutes,
            generation=generation,
            family=str(family),
            jti=jti,
        ),
        "access": tokens.issue(
            settings.secret_key,
            user_id,
            "access",
            settings.access_token_minutes,
            generation=generation,
            staff=staff,
        ),
    }


def _refresh_seconds(call: Call) -> float:
    return call.settings.refresh_token_minutes * 60.0


@endpoint(
    "Obtain an access and a refresh token",
    access="anyone",
    body=CREDENTIALS,
    errors={
        401: "wrong username or password, or a deactivated account",
        429: "too many sign-in attempts for this username or from this client (Retry-After)",
    },
)
async def obtain(call: Call) -> TokenPair:
    username = call.body["username"]
    sign_ins: SignInThrottle = call.request.state.sign_ins
    client = call.request.client.host if call.request.client else ""
    sign_ins.attempt(username, client)
    row = await call.pool.fetchrow(Q.user_by_username, username)
    matched = await call.passwords.verify(
        row["password_hash"] if row else None, call.body["password"], client
    )
    if not matched or row is None:  # no such user never matches
        sign_ins.failed(username)
        raise ApiError(401, "no active account found with the given credentials")
    if not row["is_active"]:
        # Only whoever knows the password learns this, and it is what to fix.
        raise ApiError(401, "this account is deactivated")
    jti = tokens.new_jti()
    family = await call.pool.fetchval(
        Q.start_refresh_family, row["id"], jti, _refresh_seconds(call)
    )
    return _pair(call, row["id"], row["token_generation"], family, jti, row["is_staff"])


@endpoint(
    "Exchange a refresh token for a new pair; the one given is used up",
    access="anyone",
    body=REFRESH,
    errors={401: "invalid, expired, used up or revoked refresh token; deactivated user"},
)
async def refresh(call: Call) -> TokenPair:
    claims = decode(call.settings, call.body["refresh"], "refresh")
    jti = tokens.new_jti()
    async with call.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(Q.lock_refresh_family, claims["family"], claims["user_id"])
        if row is None:
            refused = "token is invalid or expired"
        elif not row["is_active"]:
            refused = "user is inactive or deleted"
        elif row["revoked"] or row["token_generation"] != claims["gen"]:
            refused = REVOKED
        elif row["jti"] != claims["jti"]:
            refused = REUSED
            await conn.execute(Q.revoke_refresh_family, claims["family"], claims["user_id"])
        else:
            refused = None
            await conn.execute(
                Q.rotate_refresh_family, claims["family"], jti, _refresh_seconds(call)
            )
    # Outside the transaction: a reuse's revocation is committed.
    if refused:
        raise ApiError(401, refused)
    assert row is not None
    return _pair(call, claims["user_id"], claims["gen"], claims["family"], jti, row["is_staff"])


@endpoint(
    "Check a token (access or refresh): 200 {} when valid, else 401",
    access="anyone",
    body=Body({"token": TOKEN}),
    errors={401: "invalid, expired or revoked token; deactivated user"},
)
async def verify(call: Call) -> Empty:
    claims = decode(call.settings, call.body["token"], "access", "refresh")
    await active_user(call.pool, claims["user_id"], claims["gen"])
    if claims["token_type"] == "refresh":
        row = await call.pool.fetchrow(Q.refresh_family_state, claims["family"], claims["user_id"])
        if row is None or row["revoked"] or row["jti"] != claims["jti"]:
            raise ApiError(401, REVOKED)
    return {}


@endpoint(
    "Revoke a refresh token and every token refreshed from the same sign-in (sign out)",
    access="anyone",
    body=REFRESH,
    errors={401: "invalid, expired or revoked refresh token; deactivated user"},
)
async def blacklist(call: Call) -> Empty:
    claims = decode(call.settings, call.body["refresh"], "refresh")
    await active_user(call.pool, claims["user_id"], claims["gen"])
    if (
        await call.pool.fetchval(Q.revoke_refresh_family, claims["family"], claims["user_id"])
        is None
    ):
        raise ApiError(401, REVOKED)
    return {}


@endpoint("Revoke every token of the signed-in user (sign out everywhere)", status=204)
async def revoke_all(call: Call) -> None:
    await call.pool.execute(Q.revoke_user_tokens, call.user_id)
