"""JWT access and refresh tokens (HS256, pyjwt).

Claims: token_type (access | refresh), user_id, exp, iat, jti, as the seed's
djangorestframework-simplejwt issues them. Decoding always names the
algorithm, requires every claim and checks the type, so a refresh token is
never accepted where an access token is expected.
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

import jwt

from .database import BIGINT_MAX

ALGORITHM = "HS256"
TokenType = Literal["access", "refresh"]
_REQUIRED = ["token_type", "user_id", "exp", "iat", "jti"]


class InvalidToken(Exception):
    """The token is malformed, expired, badly signed or of the wrong type."""


def issue(secret_key: str, user_id: int, token_type: TokenType, lifetime_minutes: float) -> str:
    """A signed token; `lifetime_minutes` may be a fraction (0.05 is 3 seconds)."""
    now = int(time.time())
    claims = {
        "token_type": token_type,
        "user_id": user_id,
        "iat": now,
        "exp": now + int(lifetime_minutes * 60),
        "jti": secrets.token_hex(16),
    }
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def decode(secret_key: str, token: str, token_type: TokenType) -> dict:
    """The verified claims of `token`, or InvalidToken."""
    try:
        claims = jwt.decode(
            token, secret_key, algorithms=[ALGORITHM], options={"require": _REQUIRED}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if claims["token_type"] != token_type:
        raise InvalidToken(f"expected a {token_type} token")
    user_id = claims["user_id"]
    # A bigint id: anything else would reach PostgreSQL as a query error.
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id <= BIGINT_MAX:
        raise InvalidToken("user_id must be a positive 64-bit integer")
    return claims
