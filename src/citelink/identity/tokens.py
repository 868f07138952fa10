"""JWT access and refresh tokens (HS256, pyjwt).

Claims: token_type (access | refresh), user_id, exp, iat, jti, as the seed's
djangorestframework-simplejwt issues them, and `gen`, the user's token
generation when it was issued (a token of an older one is revoked). Refresh
tokens also name their `family` (one per sign-in, see
refresh_token_family in sql/schema.sql). Decoding always names the
algorithm, requires every claim and checks the type, so a refresh token is
never accepted where an access token is expected.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any, Literal

import jwt

from citelink.db.connection import BIGINT_MAX

ALGORITHM = "HS256"
TokenType = Literal["access", "refresh"]
_REQUIRED = ["token_type", "user_id", "exp", "iat", "jti", "gen"]

# Access tokens verified before, by (key, token): their expiry and claims. A
# client sends the same token with every request, and checking it again
# (signature, claims, and the unverified read that tells a platform token
# from ours) cost about 80 µs of the ~1.5 ms a publish takes in the server.
# Only the expiry depends on when it is asked: it is compared again on each
# use. Revocation is the database's to check, on every request as before.
_VERIFIED: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
VERIFIED_MAX = 4096


class InvalidToken(Exception):
    """The token is malformed, expired, badly signed or of the wrong type."""


def new_jti() -> str:
    return secrets.token_hex(16)


def issue(
    secret_key: str,
    user_id: int,
    token_type: TokenType,
    lifetime_minutes: float,
    *,
    generation: int = 0,
    family: str | None = None,
    jti: str | None = None,
    staff: bool = False,
) -> str:
    """A signed token; `lifetime_minutes` may be a fraction (0.05 is 3 seconds).
    `generation` is the user's token generation (0 until first revoked); a
    refresh token names its `family` and `jti` as stored in the database. A
    `staff` access token says so: a publish by it checks that in the same
    statement (citelink.identity.callers.claimed_staff); no route trusts it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "token_type": token_type,
        "user_id": user_id,
        "iat": now,
        "exp": now + int(lifetime_minutes * 60),
        "jti": jti or new_jti(),
        "gen": generation,
    }
    if family is not None:
        claims["family"] = family
    if staff:
        claims["staff"] = True
    return jwt.encode(claims, secret_key, algorithm=ALGORITHM)


def verified_access(secret_key: str, token: str) -> dict[str, Any] | None:
    """The claims of an access token `decode` accepted before with this key,
    if it has not expired since; None otherwise (decode it then)."""
    known = _VERIFIED.get((secret_key, token))
    if known is None or known[0] <= time.time():
        return None
    return known[1]


def decode(secret_key: str, token: str, token_type: TokenType) -> dict[str, Any]:
    """The verified claims of `token`, or InvalidToken. Callers read them only."""
    if token_type == "access" and (claims := verified_access(secret_key, token)) is not None:
        return claims
    required = [*_REQUIRED, "family"] if token_type == "refresh" else _REQUIRED
    try:
        claims = jwt.decode(
            token, secret_key, algorithms=[ALGORITHM], options={"require": required}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    if claims["token_type"] != token_type:
        raise InvalidToken(f"expected a {token_type} token")
    user_id = claims["user_id"]
    # A bigint id: anything else would reach PostgreSQL as a query error.
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 0 < user_id <= BIGINT_MAX:
        raise InvalidToken("user_id must be a positive 64-bit integer")
    if type(claims["gen"]) is not int:
        raise InvalidToken("gen must be an integer")
    if token_type == "refresh":
        try:
            uuid.UUID(claims["family"])
        except (TypeError, AttributeError, ValueError):
            raise InvalidToken("family must be a UUID") from None
    else:
        if len(_VERIFIED) >= VERIFIED_MAX:
            del _VERIFIED[next(iter(_VERIFIED))]  # the oldest
        # pyjwt took `exp` as int(exp), and refuses it from that second on.
        _VERIFIED[(secret_key, token)] = (int(claims["exp"]), claims)
    return claims
