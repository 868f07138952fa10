"""WebSocket frame fuzzing: random JSON, known frame types with fields of every
wrong type, binary and non-JSON text, frames at and past the size limit, and
floods. Every frame gets an answer of the protocol (or none), the socket stays
open (unless the frame was over the size limit: 1009), nothing is logged as an
error, and another user's socket sees nothing of it.

The default run is a derandomized slice; `pytest -m slow` runs the long one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import websockets
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st

from tests.support.data import publish, subscribe
from tests.support.wsclient import Socket, messages, open_socket, serving

BIGINT = 2**63 - 1
# No `ping`: its pong is what marks the end of the answers to a frame.
TYPES = [
    "notifications_list",
    "read",
    "unread",
    "deleted",
    "delete",
    "read_all",
    "resume",
    "counts",
    "auth",
    "subscribe",
    "",
    "PING",
]
FIELDS = ["id", "after", "page", "page_size", "before", "limit", "status", "tag", "token"]
# What a server may send in answer to anything a client sends.
ANSWERS = {
    "error",
    "notifications_list",
    "notification",
    "resumed",
    "read",
    "unread",
    "delete",
    "counts",
    "read_all",
    "auth",
    "pong",
}
ERROR_CODES = {
    "invalid_json",
    "invalid",
    "unknown_type",
    "unsupported",
    "not_found",
    "invalid_token",
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, 1, -1, BIGINT, BIGINT + 1, 2**64, -(2**63), 10**30]),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["all", "unread", "read", "1", "", "\x00", "' OR 1=1 --"]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
protocol_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={name: json_values for name in FIELDS},
)
FRAMES = st.one_of(
    protocol_frames.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
)


@dataclass
class Fuzz:
    ws: Socket
    frames: int = 0


@contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """Records at ERROR and above from citelink and uvicorn (which does not
    propagate to pytest's capture)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.ERROR)
    loggers = [logging.getLogger(name) for name in ("citelink", "uvicorn.error", "uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
async def fuzz(settings, conn, make_user, figure) -> AsyncIterator[Fuzz]:
    """Alice's socket takes the frames; bob's, on the same tag, must see nothing
    of them; both must still work after."""
    alice = await make_user("alice")
    bob = await make_user("bob")
    news = await subscribe(conn, alice.id, "news")
    await subscribe(conn, bob.id, "news")
    for i in range(3):
        await publish(conn, news, f"before {i}")
    with errors_logged() as errors:
        async with (
            serving(settings, ws_frames_per_second=100_000) as server,
            open_socket(server, alice.token) as ws,
            open_socket(server, bob.token) as bystander,
        ):
            fuzz = Fuzz(ws)
            yield fuzz
            assert await ws.request("ping") == {"type": "pong"}
            await publish(conn, news, "after")
            assert messages(await bystander.recv_until("counts")) == ["after"]
            bob_items = await conn.fetch(
                "SELECT is_read, is_deleted FROM user_notification WHERE user_id = $1", bob.id
            )
            assert {tuple(r) for r in bob_items} == {(False, False)}
    assert [r.getMessage() for r in errors] == []
    figure(f"{fuzz.frames} fuzzed frames, 0 errors logged, socket open")


async def check_frame(fuzz: Fuzz, frame: str | bytes) -> None:
    await fuzz.ws.send_raw(frame)
    await fuzz.ws.send(type="ping")
    fuzz.frames += 1
    for answer in await fuzz.ws.recv_until("pong"):
        assert answer["type"] in ANSWERS, answer
        if answer["type"] == "error":
            assert answer["code"] in ERROR_CODES, (frame, answer)


FUZZ = fuzz_settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@fuzz_settings(FUZZ, max_examples=300)
@given(frame=FRAMES)
async def test_fuzzed_frames(fuzz: Fuzz, frame: str | bytes):
    await check_frame(fuzz, frame)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@fuzz_settings(FUZZ, max_examples=20_000)
@given(frame=FRAMES)
async def test_fuzzed_frames_long_run(fuzz: Fuzz, frame: str | bytes):
    await check_frame(fuzz, frame)


async def test_huge_frames_close_only_their_socket(settings, make_user):
    alice = await make_user("alice")
    bob = await make_user("bob")
    async with serving(settings) as server, open_socket(server, bob.token) as bystander:
        limit = server.server.config.ws_max_size
        for size in (limit + 1, 4 * limit, 64 * limit):
            for payload in ("x" * size, b"\x00" * size):
                async with open_socket(server, alice.token) as ws:
                    # The server may close while a large frame is still going out.
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await ws.send_raw(payload)
                    assert await ws.close_code() == 1009
                    assert await bystander.request("ping") == {"type": "pong"}


async def test_a_flood_is_dropped_and_slows_nobody_else(settings, make_user, figure):
    """10,000 frames sent without a pause, at 50 a second: the bucket's worth
    are answered, then `rate_limited` once per run, the rest dropped; another
    socket's pings keep coming back."""
    alice = await make_user("alice")
    bob = await make_user("bob")
    clock = asyncio.get_running_loop().time
    async with (
        serving(settings) as server,
        open_socket(server, alice.token) as ws,
        open_socket(server, bob.token) as bystander,
    ):

        async def send_flood() -> None:
            for i in range(10_000):
                await ws.send_raw('{"type": "ping"}' if i % 2 else b"\x00binary")

        started = clock()
        flooding = asyncio.create_task(send_flood())
        slowest = 0.0
        while not flooding.done():
            asked = clock()
            assert await bystander.request("ping") == {"type": "pong"}
            slowest = max(slowest, clock() - asked)
        await flooding
        took = clock() - started
        # Once the bucket has room again a `counts` frame is answered; every
        # frame before its answer is the flood's.
        answers: list[dict] = []
        while not answers or answers[-1]["type"] != "counts":
            await ws.send(type="counts")
            with contextlib.suppress(TimeoutError):
                while True:
                    answers.append(await ws.recv(within=0.1))
        flood = [a.get("code", a["type"]) for a in answers[:-1]]
        assert set(flood) <= {"pong", "unsupported", "rate_limited"}
        assert "rate_limited" in flood
        answered = len(flood) - flood.count("rate_limited")
        assert 50 <= answered <= 50 + 50 * (took + 1)
        figure(
            f"flood of 10,000 frames in {took:.2f} s: {answered} answered, the rest dropped; "
            f"bystander ping at most {slowest * 1000:.0f} ms"
        )
