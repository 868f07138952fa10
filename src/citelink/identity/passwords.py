"""Password hashing with argon2id (argon2-cffi).

Parameters are the OWASP minimum for argon2id (19 MiB, 2 passes, 1 lane):
about 15 ms per hash on one core here, so login stays fast while an offline
guess stays expensive. Hashes carry their parameters, so raising them later
only needs `needs_rehash` on login.

The app hashes through `HashSlots`: off the event loop, and only so many at
once. Each hash holds 19 MiB while it runs, and Starlette's thread pool runs
40 at a time: a flood of sign-ins took 900 MB that way, and gained nothing,
since a core does one hash at a time anyway.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
        _hasher.verify(password_hash or _DUMMY_HASH, password)  # True, or it raises
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None


def hash_slots() -> int:
    """Hashes at once by default: one per core this process may run on, but
    one, which is left to the event loop and the database (at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


class HashSlots:
    """Password hashing in worker threads, at most `slots` hashes at once;
    the others wait their turn (in order) without holding memory. A client
    waits for a slot with one hash at a time: its other sign-ins queue behind
    that one, not in front of everyone else's."""

    def __init__(self, slots: int):
        self._free = asyncio.Semaphore(slots)
        # client -> (its turn, how many of its hashes wait or run)
        self._clients: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def _turn(self, client: str) -> AsyncIterator[None]:
        lock, users = self._clients.get(client, (asyncio.Lock(), 0))
        self._clients[client] = (lock, users + 1)
        try:
            async with lock, self._free:
                yield
        finally:
            lock, users = self._clients[client]
            if users == 1:
                del self._clients[client]
            else:
                self._clients[client] = (lock, users - 1)

    async def hash(self, password: str, client: str = "") -> str:
        async with self._turn(client):
            return await asyncio.to_thread(hash_password, password)

    async def verify(self, password_hash: str | None, password: str, client: str = "") -> bool:
        async with self._turn(client):
            return await asyncio.to_thread(verify_password, password_hash, password)
