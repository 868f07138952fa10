"""Access tokens minted by the platform citelink is embedded in.

The platform's backend signs short-lived tokens for its own users: `sub` is
the user's external id (users.external_id), `exp` and `iat` are required and
at most CITELINK_PLATFORM_TOKEN_MAX_MINUTES apart, `aud` and `iss` are
checked when configured. HS256 with a shared secret
(CITELINK_PLATFORM_TOKEN_SECRET), or RS256 / ES256 (P-256) with public keys
read once at start-up from a PEM or JWKS file (CITELINK_PLATFORM_PUBLIC_KEYS),
never fetched from the network.

Which kind a token is: every token citelink issues carries a `token_type`
claim (citelink.identity.tokens) and is checked only with CITELINK_SECRET_KEY; a token
without one is a platform token and is checked only with the platform's
keys. So neither can pass for the other, even with equal secrets (refused at
start-up all the same).

Each algorithm is verified only with keys of its own type, so a token signed
HS256 with a public key's PEM as the secret fails (key-type confusion), and
`none` or any other algorithm is refused before a key is tried.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from citelink.identity.tokens import InvalidToken
from citelink.problems import Problem
from citelink.settings import Settings

if TYPE_CHECKING:
    from jwt.types import Options

# What users.external_id holds (its CHECK in sql/schema.sql).
EXTERNAL_ID = re.compile(r"[^\x00-\x1f\x7f]{1,255}")
_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)

_SETTING = "CITELINK_PLATFORM_PUBLIC_KEYS"
# Why a well-signed token is refused for its lifetime: said as it is, so that
# the platform's developers learn what to change.
TOO_LONG = "platform token lives longer than CITELINK_PLATFORM_TOKEN_MAX_MINUTES allows (exp - iat)"
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
# The key type each asymmetric algorithm is verified with.
_KEY_TYPES: dict[str, type[rsa.RSAPublicKey] | type[ec.EllipticCurvePublicKey]] = {
    "RS256": rsa.RSAPublicKey,
    "ES256": ec.EllipticCurvePublicKey,
}


def is_platform_token(token: str) -> bool:
    """True for a JWT without citelink's `token_type` claim. Only the shape is
    read here; the signature is checked by whoever decodes it next."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return False
    return "token_type" not in claims


@dataclass(frozen=True)
class _Key:
    kid: str | None
    key: PublicKey


def _load_keys(path: Path) -> list[_Key]:
    """The RSA and P-256 public keys of a PEM file (one key or several) or of a
    JWKS file ({"keys": [...]})."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Problem(f"{_SETTING}: cannot read {path}: {exc.strerror}") from None
    keys: list[_Key] = []
    try:
        if raw.lstrip().startswith(b"{"):
            for jwk in jwt.PyJWKSet.from_dict(json.loads(raw)).keys:
                key = jwk.key
                if not isinstance(key, PublicKey):
                    raise Problem(f"{_SETTING}: {path} holds a private key; give only public keys")
                keys.append(_Key(jwk.key_id, key))
        else:
            loaded = [load_pem_public_key(block) for block in _PEM.findall(raw)]
            keys = [_Key(None, key) for key in loaded if isinstance(key, PublicKey)]
            if len(keys) < len(loaded):
                raise Problem(f"{_SETTING}: {path}: only RSA and P-256 (ES256) keys are taken")
    except (ValueError, jwt.PyJWTError) as exc:
        raise Problem(f"{_SETTING}: {path} is no PEM or JWKS file: {exc}") from None
    for found in keys:
        is_p256 = isinstance(found.key, ec.EllipticCurvePublicKey) and isinstance(
            found.key.curve, ec.SECP256R1
        )
        if not (isinstance(found.key, rsa.RSAPublicKey) or is_p256):
            raise Problem(f"{_SETTING}: {path}: only RSA and P-256 (ES256) keys are taken")
    if not keys:
        raise Problem(f"{_SETTING}: {path} holds no public key")
    return keys


def _is_time(value: object) -> bool:
    """A NumericDate: seconds since the epoch, a JSON number (not a boolean);
    an integer of any size (10**400 is no float: math.isfinite would raise)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


class TooLong(InvalidToken):
    """A valid token that lives longer than the setting allows."""


class PlatformTokens:
    """Verifies platform tokens with the configured secret and keys."""

    def __init__(
        self,
        secret: str | None,
        keys: list[_Key],
        audience: str | None = None,
        issuer: str | None = None,
        max_seconds: float = 3600,
    ):
        self.secret, self.keys = secret, keys
        self.audience, self.issuer = audience, issuer
        self.max_seconds = max_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformTokens | None:
        """None when no platform is configured (platform tokens are then refused)."""
        secret = settings.platform_token_secret
        if secret is not None and secret == settings.secret_key:
            raise Problem(
                "CITELINK_PLATFORM_TOKEN_SECRET must differ from CITELINK_SECRET_KEY: "
                "the platform must not be able to sign citelink's own tokens"
            )
        keys = _load_keys(settings.platform_public_keys) if settings.platform_public_keys else []
        if secret is None and not keys:
            return None
        return cls(
            secret,
            keys,
            settings.platform_audience,
            settings.platform_issuer,
            settings.platform_token_max_minutes * 60,
        )

    def _candidates(self, header: dict[str, Any]) -> list[Any]:
        alg = header.get("alg")
        if alg == "HS256":
            return [self.secret] if self.secret else []
        # A header may hold any JSON: an `alg` that is no string names no key.
        kind = _KEY_TYPES.get(alg) if isinstance(alg, str) else None
        if kind is None:
            return []
        kid = header.get("kid")
        return [
            k.key
            for k in self.keys
            if isinstance(k.key, kind) and (kid is None or k.kid in (None, kid))
        ]

    def decode(self, token: str) -> dict[str, Any]:
        """The verified claims of a platform token, or InvalidToken."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        candidates = self._candidates(header)
        if not candidates:
            raise InvalidToken("no key for this token's algorithm")
        required = ["sub", "exp", "iat"]
        required += ["aud"] if self.audience else []
        required += ["iss"] if self.issuer else []
        options: Options = {"require": required, "verify_aud": self.audience is not None}
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[header["alg"]],
                    audience=self.audience,
                    issuer=self.issuer,
                    options=options,
                )
            except jwt.InvalidSignatureError:
                continue  # another key of the set may have signed it
            except jwt.PyJWTError as exc:
                raise InvalidToken(str(exc)) from None
            # pyjwt takes any value int() takes ("1700000000", true): times
            # are compared and scheduled as numbers from here on.
            if any(not _is_time(claims[c]) for c in ("iat", "exp", "nbf") if c in claims):
                raise InvalidToken("iat, exp and nbf must be numbers")
            if claims["exp"] - claims["iat"] > self.max_seconds:
                raise TooLong(TOO_LONG)
            if not isinstance(claims["sub"], str) or not EXTERNAL_ID.fullmatch(claims["sub"]):
                raise InvalidToken("sub must be an external id: 1 to 255 characters")
            if "token_type" in claims:
                raise InvalidToken("a platform token carries no token_type")
            return claims
        raise InvalidToken("signature verification failed")
