"""/openapi.json describes every route of the app, and the answers match it."""

from __future__ import annotations

import re

import httpx
import msgspec
from starlette.routing import Route

from citelink.api.endpoint import ApiRoute
from citelink.server.app import create_app
from citelink.shapes import Error
from tests.support.world import World

DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


def mismatches(value, schema: dict, schemas: dict, where: str = "$") -> list[str]:
    """Where `value` breaks `schema` (the subset of JSON Schema the document uses)."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        if all(mismatches(value, option, schemas, where) for option in schema["anyOf"]):
            return [f"{where}: {value!r} is none of {schema['anyOf']}"]
        return []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        ok = any(
            isinstance(value, TYPES[k]) and not (k == "integer" and isinstance(value, bool))
            for k in kinds
        )
        if not ok:
            return [f"{where}: {value!r} is not {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{where}: {value!r} not in {schema['enum']}"]
    if "minimum" in schema and value < schema["minimum"]:
        return [f"{where}: {value!r} is below {schema['minimum']}"]
    if schema.get("format") == "date-time" and not DATE_TIME.fullmatch(value):
        return [f"{where}: {value!r} is not a date-time"]
    found = []
    if isinstance(value, dict) and "properties" in schema:
        expected = set(schema["properties"])
        if not set(schema.get("required", [])) <= set(value) <= expected:
            found.append(f"{where}: keys {sorted(value)}, documented {sorted(expected)}")
        for key, sub in schema["properties"].items():
            if key in value:
                found += mismatches(value[key], sub, schemas, f"{where}.{key}")
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += mismatches(item, schema["additionalProperties"], schemas, f"{where}.{key}")
    if isinstance(value, list):
        if "minItems" in schema and not schema["minItems"] <= len(value) <= schema["maxItems"]:
            found.append(f"{where}: {len(value)} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                found += mismatches(item, schema["items"], schemas, f"{where}[{i}]")
    return found


async def test_every_route_is_described(client: httpx.AsyncClient, settings):
    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    app = create_app(settings)
    missing = []
    for route in app.routes:
        if not isinstance(route, Route):  # the WebSocket lives in its own protocol
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if method.lower() not in doc["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []
    assert len(doc["paths"]) >= 17


async def test_references_resolve_and_operations_are_complete(client: httpx.AsyncClient):
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    text = (await client.get("/openapi.json")).text
    for ref in set(re.findall(r'"\$ref":"#/components/schemas/(\w+)"', text)):
        assert ref in schemas
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert op["summary"] and op["responses"], f"{method} {path}"
            bodiless = path.endswith(("/read-all/", "/seen-all/", "/revoke-all/"))
            if path.startswith("/api/") and method in ("post", "patch") and not bodiless:
                body = op["requestBody"]["content"]["application/json"]["schema"]
                assert body["properties"] and body["additionalProperties"] is False
            for name in re.findall(r"\{(\w+)\}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"])
    # Limits come from the settings in use.
    publish = doc["paths"]["/api/notifications/"]["post"]["requestBody"]["content"]
    assert publish["application/json"]["schema"]["properties"]["message"]["maxLength"] == 100_000


async def test_every_answer_matches_the_document_and_its_type(
    client: httpx.AsyncClient, world: World, conn, settings
):
    """Every route that answers JSON, called for real: the answer matches its
    schema in /openapi.json and the type its handler declares."""
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    staff, alice = world.staff.headers, world.alice.headers
    pair = (
        await client.post("/api/token/", json={"username": "bob", "password": "secret-pw"})
    ).json()
    scheduled = await conn.fetchval(
        "INSERT INTO notification (tag_id, message, send_at) "
        "VALUES ($1, 'later', now() + interval '1 day') RETURNING id",
        world.news,
    )
    # One failed delivery short of giving up: failed, its retry_at 'infinity' in the database.
    given_up = await conn.fetchval(
        "INSERT INTO notification (tag_id, message, send_at, delivery_attempts) "
        "VALUES ($1, 'failing', now() + interval '1 day', 9) RETURNING id",
        world.news,
    )
    await conn.execute("SELECT citelink_delivery_failed($1, 'it broke')", given_up)
    linked = await conn.fetchval(
        "INSERT INTO notification (tag_id, message, data) VALUES ($1, 'act', "
        """'{"actions": [{"id": "ok", "label": "OK"}]}') RETURNING id""",
        world.private,
    )
    acted = await conn.fetchval(
        "SELECT id FROM user_notification WHERE notification_id = $1", linked
    )
    calls = [
        ("POST", "/api/token/", None, {"username": "alice", "password": "secret-pw"}),
        ("POST", "/api/token/", None, {"username": "alice", "password": "wrong"}),
        ("POST", "/api/token/verify/", None, {"token": world.alice.token}),
        ("POST", "/api/token/refresh/", None, {"refresh": pair["refresh"]}),
        ("POST", "/api/token/refresh/", None, {"refresh": pair["refresh"]}),  # used up
        ("POST", "/api/token/verify/", None, {"token": "x.y.z"}),
        ("GET", "/api/users/me/", alice, None),
        ("GET", "/api/users/me/", None, None),
        ("GET", "/api/users/", staff, None),
        ("GET", "/api/users/", alice, None),
        ("POST", "/api/users/", staff, {"username": "carol", "password": "pw"}),
        ("GET", "/api/tags/", alice, None),
        ("POST", "/api/tags/", staff, {"name": "new"}),
        ("POST", "/api/tags/", staff, {"name": 5}),
        ("GET", f"/api/tags/{world.news}/", alice, None),
        ("GET", f"/api/tags/{world.news}/", alice, None),
        ("PATCH", f"/api/tags/{world.spare}/", staff, {"critical": True}),
        ("DELETE", f"/api/tags/{world.spare}/", staff, None),
        ("GET", "/api/subscriptions/", alice, None),
        ("POST", "/api/subscriptions/", alice, {"tag": world.extra}),
        ("PATCH", f"/api/subscriptions/{world.alice_sub}/", alice, {"mode": "inbox"}),
        ("DELETE", f"/api/subscriptions/{world.bob_sub}/", staff, None),
        ("POST", "/api/notifications/", staff, {"message": "m", "tag": world.news, "data": {}}),
        ("GET", "/api/notifications/", staff, None),
        ("GET", f"/api/notifications/{world.news_note}/", staff, None),
        ("GET", f"/api/notifications/{given_up}/", staff, None),
        ("GET", "/api/notifications/?status=failed", staff, None),
        ("DELETE", f"/api/notifications/{scheduled}/", staff, None),
        ("DELETE", f"/api/notifications/{world.news_note}/", staff, None),
        ("GET", "/api/inbox/?limit=1", alice, None),
        ("GET", "/api/inbox/counts/", alice, None),
        ("GET", f"/api/inbox/{world.alice_item}/", alice, None),
        ("GET", f"/api/inbox/{world.bob_item}/", alice, None),
        ("PATCH", f"/api/inbox/{world.alice_item}/", alice, {"is_read": True}),
        ("POST", f"/api/inbox/{acted}/interact/", alice, {"action": "ok"}),
        ("POST", "/api/inbox/read-all/", alice, None),
        ("POST", "/api/inbox/seen-all/", alice, None),
        ("POST", "/api/inbox/bulk/", alice, {"action": "archive", "filter": {"tag": [world.news]}}),
        ("DELETE", f"/api/inbox/{world.alice_item}/", alice, None),
        ("GET", "/api/audit/", staff, None),
        ("POST", "/api/keys/", staff, {"name": "backend", "scopes": ["publish"]}),
        ("GET", "/api/keys/", staff, None),
        ("DELETE", "/api/keys/1/", staff, None),
        ("DELETE", "/api/keys/1/", staff, None),
        ("POST", "/api/users/external/", staff, {"external_ids": ["ext:42"]}),
        ("POST", "/api/token/blacklist/", None, {"refresh": pair["refresh"]}),
        ("POST", "/api/token/revoke-all/", world.bob.headers, None),
        ("GET", "/openapi.json", None, None),
        ("GET", "/healthz", None, None),
        ("GET", "/readyz", None, None),
    ]
    types = declared_types(create_app(settings).routes)
    wrong, called = [], set()
    for method, url, headers, body in calls:
        r = await client.request(method, url, headers=headers, json=body)
        path = re.sub(r"/\d+/", "/{id}/", url.split("?")[0])
        called.add((path, method.lower()))
        where = f"{method} {url} {r.status_code}"
        documented = doc["paths"][path][method.lower()]["responses"].get(str(r.status_code))
        if documented is None:
            wrong.append(f"{where}: status not documented")
            continue
        if r.status_code == 204:
            assert "content" not in documented and r.content == b"", where
            continue
        schema = documented["content"]["application/json"]["schema"]
        wrong += mismatches(r.json(), schema, schemas, where)
        declared = types.get((path, method.lower())) if r.status_code < 300 else Error
        if declared is not None:
            try:
                msgspec.convert(r.json(), declared)
            except msgspec.ValidationError as exc:
                wrong.append(f"{where}: not a {declared}: {exc}")
    assert wrong == []
    json_routes = {
        (path, method)
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        if any("application/json" in a.get("content", {}) for a in operation["responses"].values())
    }
    assert json_routes - called == {("/metrics", "get")}


def declared_types(routes) -> dict[tuple[str, str], object]:
    """(path, method) → the answer type its handler declares."""
    return {
        (re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path), method.lower()): ep.operation.response
        for r in routes
        if isinstance(r, ApiRoute)
        for method, ep in r.endpoints.items()
    }
