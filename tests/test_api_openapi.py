"""/openapi.json describes every route of the app, and the answers match it."""

from __future__ import annotations

import re

import httpx
from starlette.routing import Route

from citelink.app import create_app

from .api_support import World

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
    found = []
    if isinstance(value, dict) and "properties" in schema:
        expected = set(schema["properties"])
        if not set(schema.get("required", [])) <= set(value) <= expected:
            found.append(f"{where}: keys {sorted(value)}, documented {sorted(expected)}")
        for key, sub in schema["properties"].items():
            if key in value:
                found += mismatches(value[key], sub, schemas, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
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


async def test_answers_match_the_document(client: httpx.AsyncClient, world: World):
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    staff, alice = world.staff.headers, world.alice.headers
    login = {"username": "alice", "password": "secret-pw"}
    calls = [
        ("POST", "/api/token/", None, login),
        ("GET", "/api/users/me/", alice, None),
        ("GET", "/api/users/", staff, None),
        ("POST", "/api/users/", staff, {"username": "carol", "password": "pw"}),
        ("GET", "/api/tags/", alice, None),
        ("POST", "/api/tags/", staff, {"name": "new"}),
        ("GET", f"/api/tags/{world.news}/", alice, None),
        ("GET", "/api/subscriptions/", alice, None),
        ("POST", "/api/subscriptions/", alice, {"tag": world.extra}),
        ("POST", "/api/notifications/", staff, {"message": "m", "tag": world.news, "data": {}}),
        ("GET", "/api/notifications/", staff, None),
        ("GET", f"/api/notifications/{world.news_note}/", staff, None),
        ("GET", "/api/inbox/?limit=1", alice, None),
        ("GET", "/api/inbox/counts/", alice, None),
        ("PATCH", f"/api/inbox/{world.alice_item}/", alice, {"is_read": True}),
        ("GET", f"/api/inbox/{world.alice_item}/", alice, None),
        ("POST", "/api/inbox/read-all/", alice, None),
        ("GET", "/api/audit/", staff, None),
        ("GET", "/api/users/me/", None, None),  # an error
        ("GET", "/healthz", None, None),
    ]
    wrong = []
    for method, url, headers, body in calls:
        r = await client.request(method, url, headers=headers, json=body)
        path = re.sub(r"/\d+/", "/{id}/", url.split("?")[0])
        documented = doc["paths"][path][method.lower()]["responses"][str(r.status_code)]
        schema = documented["content"]["application/json"]["schema"]
        wrong += mismatches(r.json(), schema, schemas, f"{method} {url} {r.status_code}")
    assert wrong == []
