"""Password hashing with argon2id (argon2-cffi).

Parameters are the OWASP minimum for argon2id (19 MiB, 2 passes, 1 lane):
about 15 ms per hash on one core here, so login stays fast while an offline
guess stays expensive. Hashes carry their parameters, so raising them later
only needs `needs_rehash` on login.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# Verified against when the username is unknown, so both paths cost the same
# and response time does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("citelink-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; an unknown user (None) costs the same and fails."""
    try:
        matched = _hasher.verify(password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None
