"""Token routes, shaped like the seed's djangorestframework-simplejwt:
obtain `{access, refresh}`, refresh → `{access}`, verify → `{}` or 401."""

from __future__ import annotations

from .. import tokens
from ..errors import ApiError
from ..queries import Q
from ..throttle import SignInThrottle
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
    errors={429: "too many sign-in attempts for this username or from this client (Retry-After)"},
)
async def obtain(call: Call) -> dict:
    username = call.body["username"]
    sign_ins: SignInThrottle = call.request.state.sign_ins
    client = call.request.client
    sign_ins.attempt(username, client.host if client else "")
    row = await call.pool.fetchrow(Q.user_by_username, username)
    matched = await call.passwords.verify(
        row["password_hash"] if row else None, call.body["password"]
    )
    if not matched or not row["is_active"]:
        sign_ins.failed(username)
        raise ApiError(401, "no active account found with the given credentials")
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
