"""Throttles: a socket user's frame budget, and sign-in throttling.

Sign-in throttling: failed sign-ins per username, sign-ins per client
address, each a token bucket refilled evenly over a minute.

A sign-in is refused with 429 and Retry-After, before any password is
hashed, when either bucket is empty: the client's (every attempt takes from
it) or the username's (every failed attempt does). Unknown usernames have
buckets like known ones, so a 429 tells nothing about who exists. A username
may fail its whole minute's worth at once; a client address may burst only
ten seconds' worth, so that one address never queues more than a few hashes
ahead of everyone else's sign-ins.

The state is this process's memory: with several processes behind a proxy,
each throttles the attempts it sees. It is bounded: past MAX_KEYS names or
addresses, the one touched longest ago is forgotten (a bucket left alone for
a minute is full again anyway).
"""

from __future__ import annotations

import math
import time

from citelink.errors import ApiError
from citelink.settings import Settings

MAX_KEYS = 10_000


class Buckets:
    """Token buckets by key: `per_minute` tokens refilled evenly, at most
    `burst` at once; no limit when `per_minute` is 0."""

    def __init__(self, per_minute: int, burst: int):
        self.capacity = float(burst)
        self.per_second = per_minute / 60
        # key -> (tokens, when counted); oldest touched first.
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - stamp) * self.per_second)

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token (0: it has one now)."""
        if not self.per_second:
            return 0.0
        missing = 1 - self._tokens(key, time.monotonic())
        return max(0.0, missing / self.per_second)

    def take(self, key: str) -> None:
        if not self.per_second:
            return
        now = time.monotonic()
        tokens = self._tokens(key, now) - 1
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > MAX_KEYS:
            del self._buckets[next(iter(self._buckets))]


class SignInThrottle:
    """The buckets of POST /api/token/."""

    def __init__(self, settings: Settings):
        per_user = settings.login_failures_per_user
        per_client = settings.login_attempts_per_client
        self.users = Buckets(per_user, burst=per_user)
        self.clients = Buckets(per_client, burst=max(1, math.ceil(per_client / 6)))

    def attempt(self, username: str, client: str) -> None:
        """Count a sign-in attempt, or refuse it with 429."""
        wait = max(self.users.wait(username.lower()), self.clients.wait(client))
        if wait:
            seconds = math.ceil(wait)
            raise ApiError(
                429,
                f"too many sign-in attempts; try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        self.clients.take(client)

    def failed(self, username: str) -> None:
        self.users.take(username.lower())


class FrameBudget:
    """A token bucket shared by all of one user's sockets in this process:
    `rate` frames per second, bursts up to `rate`."""

    def __init__(self, rate: int):
        self.rate = rate
        self.tokens = float(rate)
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
