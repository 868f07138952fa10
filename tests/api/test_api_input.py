"""Bad input for every route with a body or parameters: always a 4xx with a
`detail` (and the offending field in `errors` for a 422), never a 500.

One test per route runs all of its cases against one world; every case is
refused, so none changes what the next one sees.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.world import World

BIG = 2**63  # one past the largest bigint
# (label, request keyword arguments, expected status, field named in `errors`)
Case = tuple[str, dict[str, Any], int, str | None]


def body_cases(
    valid: dict[str, Any],
    *,
    strings: dict[str, int] | None = None,
    ints: tuple[str, ...] = (),
    bools: tuple[str, ...] = (),
    objects: tuple[str, ...] = (),
    required: tuple[str, ...] | None = None,
    more: tuple[Case, ...] = (),
) -> list[Case]:
    """The cases every JSON body must refuse, from a valid body and its fields
    (strings with their maximum length), then the route's own `more`."""
    strings = strings or {}
    cases: list[Case] = [
        ("malformed JSON", {"content": b'{"a": '}, 400, None),
        ("empty body", {"content": b""}, 400, None),
        ("array, not an object", {"json": [valid]}, 400, None),
        ("string, not an object", {"json": "x"}, 400, None),
        ("invalid UTF-8", {"content": b'{"a": "\xff\xfe"}'}, 400, None),
        ("lone surrogate", {"content": b'{"a": "\\ud800"}'}, 400, None),
        ("NaN", {"content": b'{"a": NaN}'}, 400, None),
        ("extra field", {"json": {**valid, "extra": 1}}, 422, "extra"),
    ]
    for name in valid if required is None else required:
        missing = {k: v for k, v in valid.items() if k != name}
        cases.append((f"{name} missing", {"json": missing}, 422, name))
    for name, longest in strings.items():
        for label, value in (
            ("a number", 123),
            ("null", None),
            ("a list", ["x"]),
            ("too long", "x" * (longest + 1)),
            ("with NUL", "a\x00b"),
        ):
            cases.append((f"{name} {label}", {"json": {**valid, name: value}}, 422, name))
    for name in ints:
        for label, value in (
            ("a string", "1"),
            ("a float", 1.5),
            ("a boolean", True),
            ("zero", 0),
            ("negative", -1),
            ("2**63", BIG),
            ("2**64 - 1", 2**64 - 1),
            ("10**30", 10**30),
            ("-2**63 - 1", -(2**63) - 1),
        ):
            cases.append((f"{name} {label}", {"json": {**valid, name: value}}, 422, name))
        raw = f'{{"{name}": 1e400}}'.encode()
        cases.append((f"{name} 1e400", {"content": raw}, 400, None))
    for name in bools:
        for label, value in (("a string", "true"), ("a number", 1), ("null", None)):
            cases.append((f"{name} {label}", {"json": {**valid, name: value}}, 422, name))
    for name in objects:
        for label, value in (
            ("a list", []),
            ("a string", "x"),
            ("NUL in a value", {"k": "a\x00b"}),
            ("NUL in a key", {"a\x00b": 1}),
            ("NUL deep inside", {"k": [{"j": ["ok", "\x00"]}]}),
        ):
            cases.append((f"{name} {label}", {"json": {**valid, name: value}}, 422, name))
    return cases + list(more)


def query_cases(
    ints: dict[str, int], choices: tuple[str, ...] = (), repeatable: tuple[str, ...] = ()
) -> list[Case]:
    """Query parameters: integers with their maximum, choices; `repeatable` ones
    may be given more than once (`?tag=1&tag=2`)."""
    cases: list[Case] = [
        ("unknown parameter", {"params": {"bogus": "1"}}, 422, "bogus"),
    ]
    for name, largest in ints.items():
        for label, value in (
            ("not a number", "abc"),
            ("empty", ""),
            ("a float", "1.5"),
            ("spaces", " 1"),
            ("zero", "0"),
            ("negative", "-1"),
            ("past the maximum", str(largest + 1)),
            ("2**63", str(BIG)),
            ("thirty digits", "9" * 30),
            ("a thousand digits", "9" * 1000),
            ("NUL", "\x00"),
        ):
            cases.append((f"{name} {label}", {"params": {name: value}}, 422, name))
        if name not in repeatable:
            repeated = {"params": [(name, "1"), (name, "2")]}
            cases.append((f"{name} given twice", repeated, 422, name))
    for name in choices:
        for label, value in (("unknown", "bogus"), ("NUL", "read\x00"), ("empty", "")):
            cases.append((f"{name} {label}", {"params": {name: value}}, 422, name))
    return cases


PAGE = {"before": BIG - 1, "limit": 100}


def cases_by_route(world: World) -> dict[str, tuple[str | None, list[Case]]]:
    """route → (caller, cases); a caller is a user of World, or None."""
    taken = {"username": "ALICE", "password": "p"}
    return {
        "POST /api/token/": (
            None,
            body_cases(
                {"username": "alice", "password": "secret-pw"},
                strings={"username": 150, "password": 1024},
            ),
        ),
        "POST /api/token/refresh/": (None, body_cases({"refresh": "x"}, strings={"refresh": 4096})),
        "POST /api/token/verify/": (None, body_cases({"token": "x"}, strings={"token": 4096})),
        "POST /api/users/": (
            "staff",
            body_cases(
                {"username": "carol", "password": "pw", "is_staff": False},
                strings={"username": 150, "password": 1024},
                bools=("is_staff",),
                required=("username", "password"),
                more=(
                    (
                        "bad character",
                        {"json": {"username": "a b", "password": "p"}},
                        422,
                        "username",
                    ),
                    ("taken in another case", {"json": taken}, 409, None),
                ),
            ),
        ),
        "POST /api/tags/": (
            "staff",
            body_cases(
                {"name": "fresh"},
                strings={"name": 100},
                more=(
                    ("blank name", {"json": {"name": "   "}}, 422, "name"),
                    ("taken name", {"json": {"name": "news"}}, 409, None),
                ),
            ),
        ),
        "PATCH /api/tags/{news}/": (
            "staff",
            body_cases(
                {"name": "fresh"},
                strings={"name": 100},
                more=(("taken name", {"json": {"name": "private"}}, 409, None),),
            ),
        ),
        "POST /api/subscriptions/": (
            "staff",
            body_cases(
                {"tag": world.extra, "user": world.alice.id},
                ints=("tag", "user"),
                required=("tag",),
                more=(
                    ("unknown tag", {"json": {"tag": 999_999}}, 422, "tag"),
                    ("unknown user", {"json": {"tag": world.extra, "user": 999_999}}, 422, "user"),
                    ("duplicate", {"json": {"tag": world.news, "user": world.bob.id}}, 409, None),
                ),
            ),
        ),
        "POST /api/notifications/": (
            "staff",
            body_cases(
                {"message": "m", "tag": world.news, "data": {}},
                strings={"message": 100_000},
                ints=("tag",),
                objects=("data",),
                required=("message", "tag"),
                more=(
                    (
                        "blank message",
                        {"json": {"message": " \n", "tag": world.news}},
                        422,
                        "message",
                    ),
                    ("unknown tag", {"json": {"message": "m", "tag": 999_999}}, 422, "tag"),
                ),
            ),
        ),
        "PATCH /api/inbox/{alice_item}/": (
            "alice",
            body_cases({"is_read": True}, bools=("is_read",)),
        ),
        "GET /api/inbox/": (
            "alice",
            query_cases({**PAGE, "tag": BIG - 1}, choices=("status",), repeatable=("tag",)),
        ),
        "POST /api/inbox/read-all/": ("alice", query_cases({"tag": BIG - 1}, repeatable=("tag",))),
        "GET /api/subscriptions/": (
            "staff",
            query_cases({**PAGE, "user": BIG - 1, "tag": BIG - 1}),
        ),
        "GET /api/notifications/": ("staff", query_cases({**PAGE, "tag": BIG - 1})),
        "GET /api/tags/": ("alice", query_cases(PAGE)),
        "GET /api/users/": ("staff", query_cases(PAGE)),
        "GET /api/audit/": (
            "staff",
            query_cases({**PAGE, "object_id": BIG - 1, "actor": BIG - 1}, choices=("resource",)),
        ),
        "GET /api/users/me/": ("alice", query_cases({})),
        "GET /api/inbox/counts/": ("alice", query_cases({})),
    }


ROUTES = [
    "POST /api/token/",
    "POST /api/token/refresh/",
    "POST /api/token/verify/",
    "POST /api/users/",
    "POST /api/tags/",
    "PATCH /api/tags/{news}/",
    "POST /api/subscriptions/",
    "POST /api/notifications/",
    "PATCH /api/inbox/{alice_item}/",
    "GET /api/inbox/",
    "POST /api/inbox/read-all/",
    "GET /api/subscriptions/",
    "GET /api/notifications/",
    "GET /api/tags/",
    "GET /api/users/",
    "GET /api/audit/",
    "GET /api/users/me/",
    "GET /api/inbox/counts/",
]


@pytest.mark.parametrize("route", ROUTES)
async def test_bad_input(client: httpx.AsyncClient, world: World, route: str):
    caller, cases = cases_by_route(world)[route]
    method, path = route.split()
    path = path.format(news=world.news, alice_item=world.alice_item)
    headers = getattr(world, caller).headers if caller else {}
    wrong = []
    for label, request, status, field in cases:
        r = await client.request(method, path, headers=headers, **request)
        body = r.json()
        if r.status_code != status or not body.get("detail"):
            wrong.append(f"{label}: {r.status_code} {r.text[:300]}")
        elif field is not None and field not in body.get("errors", {}):
            wrong.append(f"{label}: {field} not in {body}")
    assert wrong == []


async def test_unknown_and_impossible_path_ids(client: httpx.AsyncClient, world: World):
    """Ids that match nothing (missing, zero, past bigint, not digits) are a 404."""
    routes = [
        ("GET", "/api/tags/{}/", None),
        ("PATCH", "/api/tags/{}/", {"name": "x"}),
        ("DELETE", "/api/tags/{}/", None),
        ("DELETE", "/api/subscriptions/{}/", None),
        ("GET", "/api/notifications/{}/", None),
        ("GET", "/api/inbox/{}/", None),
        ("PATCH", "/api/inbox/{}/", {"is_read": True}),
        ("DELETE", "/api/inbox/{}/", None),
    ]
    ids = ("999999", "0", str(BIG - 1), str(BIG), str(2**64), "9" * 100, "-1", "abc", "1.5")
    wrong = []
    for method, path, body in routes:
        for item in ids:
            r = await client.request(
                method, path.format(item), json=body, headers=world.staff.headers
            )
            if r.status_code != 404 or not r.json().get("detail"):
                wrong.append(f"{method} {path.format(item)}: {r.status_code} {r.text[:200]}")
    assert wrong == []
