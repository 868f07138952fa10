"""Token routes, shaped like the seed's djangorestframework-simplejwt:
obtain `{access, refresh}`, refresh → `{access}`, verify → `{}` or 401."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from .. import passwords, tokens
from ..errors import ApiError
from ..queries import Q
from .auth import user_of_token
from .endpoint import Call, endpoint
from .validation import Body, String

# Long enough for any token we issue, short enough to refuse junk early.
TOKEN = String(max_length=4096)
CREDENTIALS = Body(
    {
        "username": String(max_length=150),
        # Any password a user may have set, blank ones included.
        "password": String(max_length=1024, blank=True),
    }
)


def _issue(call: Call, user_id: int, token_type: tokens.TokenType) -> str:
    settings = call.settings
    assert settings.secret_key
    minutes = {
        "access": settings.access_token_minutes,
        "refresh": settings.refresh_token_minutes,
    }[token_type]
    return tokens.issue(settings.secret_key, user_id, token_type, minutes)


@endpoint(
    "Obtain an access and a refresh token",
    access="anyone",
    body=CREDENTIALS,
    response="TokenPair",
)
async def obtain(call: Call) -> dict:
    row = await call.pool.fetchrow(Q.user_by_username, call.body["username"])
    # argon2 takes milliseconds of CPU: off the event loop, so sockets keep flowing.
    matched = await run_in_threadpool(
        passwords.verify_password, row["password_hash"] if row else None, call.body["password"]
    )
    if not matched:
        raise ApiError(401, "no active account found with the given credentials")
    if not row["is_active"]:
        # Only whoever knows the password learns this, and it is what to fix.
        raise ApiError(401, "this account is deactivated")
    return {
        "refresh": _issue(call, row["id"], "refresh"),
        "access": _issue(call, row["id"], "access"),
    }


@endpoint(
    "Exchange a refresh token for a new access token",
    access="anyone",
    body=Body({"refresh": TOKEN}),
    response="AccessToken",
)
async def refresh(call: Call) -> dict:
    user = await user_of_token(call.pool, call.settings, call.body["refresh"], "refresh")
    return {"access": _issue(call, user.id, "access")}


@endpoint(
    "Check a token (access or refresh): 200 {} when valid, else 401",
    access="anyone",
    body=Body({"token": TOKEN}),
    response="Empty",
)
async def verify(call: Call) -> dict:
    await user_of_token(call.pool, call.settings, call.body["token"], "access", "refresh")
    return {}
