"""/openapi.json: an OpenAPI 3.1 document built from the app's own routes.

Every API route declares its operation (endpoint.py), its handler the type
of its answer (shapes.py); this module turns those types into schemas
(msgspec) and adds the few routes that live outside the API package (health
probes), so a route cannot exist without being described.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
from starlette.routing import BaseRoute, Route

from citelink import __version__
from citelink.api.endpoint import ApiRoute, Call, Operation, endpoint
from citelink.api.validation import Schema
from citelink.settings import Settings
from citelink.shapes import Error, Health, OpenAPI

_INT = {"type": "integer", "format": "int64"}
_TEXT = {"type": "string"}
REF = "#/components/schemas/{name}"
# A part of the document (an operation, an answer, ...).
Json = dict[str, Any]


def _components(types: list[Any]) -> tuple[dict[Any, Schema], dict[str, Schema]]:
    """The schema of each type (a reference to a component for the named
    ones), and the components, from the types by msgspec. A generic page
    (`Page[Tag]`, named `Page_Tag_` by msgspec) is named `TagPage`."""
    unique = list(dict.fromkeys(types))
    refs, components = msgspec.json.schema_components(unique, ref_template=REF)
    text = re.sub(r"Page_(\w+?)_\b", r"\1Page", orjson.dumps([refs, components]).decode())
    refs, components = orjson.loads(text)
    return dict(zip(unique, refs, strict=True)), components


def _json(shape: Any, description: str) -> Json:
    """An answer of type `shape` (replaced by its schema in `build`)."""
    return {"description": description, "content": {"application/json": {"schema": shape}}}


def _walk(paths: Json, visit: Callable[[Json], None]) -> None:
    """`visit` the JSON content of every answer of every operation."""
    for operations in paths.values():
        for operation in operations.values():
            for answer in operation["responses"].values():
                if "application/json" in answer.get("content", {}):
                    visit(answer["content"]["application/json"])


def _plain(summary: str, responses: dict[str, Json], **extra: Any) -> Json:
    return {"get": {"summary": summary, "security": [], "responses": responses, **extra}}


# Routes defined outside the API package (probes, the web page), by hand.
_OUTSIDE: dict[str, Json] = {
    "/healthz": _plain("Liveness: the process serves", {"200": _json(Health, "alive")}),
    "/readyz": _plain(
        "Readiness: the database answers and the listener is alive",
        {"200": _json(Health, "ready"), "503": _json(Health, "not ready")},
    ),
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (a staff token, or CITELINK_METRICS_TOKEN)",
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "text exposition format", "content": {"text/plain": {}}},
                "401": _json(Error, "no valid token"),
                "403": _json(Error, "not staff"),
            },
        }
    },
    "/": _plain("The web page", {"200": {"description": "HTML", "content": {"text/html": {}}}}),
    "/embed/citelink-inbox.js": _plain(
        "The drop-in inbox: the <citelink-inbox> element and CitelinkClient (an ES module)",
        {"200": {"description": "JavaScript", "content": {"text/javascript": {}}}},
    ),
    "/embed/demo": _plain(
        "A host page embedding <citelink-inbox> (?token=&server=)",
        {"200": {"description": "HTML", "content": {"text/html": {}}}},
    ),
    "/embed/demo.js": _plain(
        "The demo page's script",
        {"200": {"description": "JavaScript", "content": {"text/javascript": {}}}},
    ),
    "/static/{name}": _plain(
        "A file of the web page (script, stylesheet)",
        {"200": {"description": "the file"}, "404": {"description": "no such file"}},
        parameters=[{"name": "name", "in": "path", "required": True, "schema": _TEXT}],
    ),
}

_ERRORS = {
    400: "malformed request (not JSON, not an object)",
    401: "no valid access token (missing, expired, refresh token, inactive user)",
    403: "not allowed (staff only)",
    404: "not found, or not yours",
    413: "request body too large",
    422: "well-formed but invalid (a field, a query parameter): see `errors`",
    503: "the database is unavailable or too slow; retry later (Retry-After)",
}


def _operation(op: Operation, path_params: list[str], settings: Settings) -> Json:
    responses: dict[str, Any] = {
        str(op.status): _json(op.response, "success") if op.response else {"description": "done"}
    }
    # Any route refuses unknown query parameters, and needs the database.
    errors: dict[int, str] = {422: _ERRORS[422], 503: _ERRORS[503]}
    if op.access != "anyone":
        errors[401] = _ERRORS[401]
    if op.access == "staff":
        errors[403] = _ERRORS[403]
    if path_params:
        errors[404] = _ERRORS[404]
    if op.body is not None:
        errors.update({s: _ERRORS[s] for s in (400, 413)})
    errors.update(op.errors)
    for status, description in sorted(errors.items()):
        responses[str(status)] = _json(Error, description)

    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {**_INT, "minimum": 0}}
        for name in path_params
    ]
    parameters += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": field.description,
            "schema": field.schema(settings),
        }
        for name, field in op.query.fields.items()
    ]
    document: dict[str, Any] = {
        "summary": op.summary,
        "description": f"Who: {op.access}."
        + (f" API keys: with the {op.key_scope} scope." if op.key_scope else " No API keys."),
        "security": [] if op.access == "anyone" else [{"bearer": []}],
        "responses": responses,
    }
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body.schema(settings)}},
        }
    return document


def build(routes: list[BaseRoute], settings: Settings) -> Json:
    """The document for `routes` (an app's), with limits from `settings`."""
    paths: dict[str, Json] = {}
    for r in routes:
        if not isinstance(r, Route):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)
        if isinstance(r, ApiRoute):
            params = list(r.param_convertors)
            paths[path] = {
                method.lower(): _operation(ep.operation, params, settings)
                for method, ep in r.endpoints.items()
            }
        elif r.path in _OUTSIDE:
            paths[path] = copy.deepcopy(_OUTSIDE[r.path])
    # Every answer's schema is a type of citelink.shapes until here
    # (_json): generate them all at once, as references to shared components.
    types: list[Any] = []
    _walk(paths, lambda content: types.append(content["schema"]))
    refs, schemas = _components(types)
    _walk(paths, lambda content: content.update(schema=refs[content["schema"]]))
    return {
        "openapi": "3.1.0",
        "info": {"title": "citelink", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a citelink or platform access token (JWT), or an API key",
                }
            },
        },
    }


@endpoint("This document", access="anyone")
async def document(call: Call) -> OpenAPI:
    return build(call.request.app.routes, call.settings)
