"""/openapi.json: an OpenAPI 3.1 document built from the app's own routes.

Every API route declares its operation (endpoint.py); this module only adds
the response schemas and the few routes that live outside the API package
(health probes), so a route cannot exist without being described.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Route

from .. import __version__
from ..settings import Settings
from .endpoint import ApiRoute, Call, Operation, endpoint

_INT = {"type": "integer", "format": "int64"}
_TEXT = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_BOOL = {"type": "boolean"}
_WHEN = {"type": ["string", "null"], "format": "date-time"}


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


SCHEMAS: dict[str, dict] = {
    "Error": _object(
        {
            "detail": _TEXT,
            "errors": {
                "type": "object",
                "additionalProperties": _TEXT,
                "description": "field or parameter → what is wrong with it",
            },
        },
        optional=("errors",),
    ),
    "TokenPair": _object({"access": _TEXT, "refresh": _TEXT}),
    "Empty": {"type": "object", "maxProperties": 0},
    "Me": _object({"id": _INT, "username": _TEXT, "is_staff": _BOOL}),
    "User": _object(
        {
            "id": _INT,
            "username": _TEXT,
            "is_staff": _BOOL,
            "is_active": _BOOL,
            "created_at": _TIME,
            "external_id": {"type": ["string", "null"], "description": "the platform's user id"},
        }
    ),
    "Users": _object({"users": {"type": "array", "items": {"$ref": "#/components/schemas/User"}}}),
    "ApiKey": _object(
        {
            "id": _INT,
            "name": _TEXT,
            "prefix": {**_TEXT, "description": "names the key: cl_<prefix>_..."},
            "scopes": {"type": "array", "items": {"type": "string", "enum": ["publish", "admin"]}},
            "created_at": _TIME,
            "revoked_at": _WHEN,
            "created_by": {"type": ["integer", "null"], "description": "user id"},
            "key": {**_TEXT, "description": "the whole key: only in the answer that made it"},
        },
        optional=("key",),
    ),
    "Tag": _object(
        {"id": _INT, "name": _TEXT, "critical": {**_BOOL, "description": "ignores mutes"}}
    ),
    "Subscription": _object(
        {
            "id": _INT,
            "user": {**_INT, "description": "user id"},
            "tag": {**_INT, "description": "tag id"},
            "mode": {"type": "string", "enum": ["live", "inbox", "muted"]},
        }
    ),
    "Notification": _object(
        {
            "id": _INT,
            "tag": {"type": ["integer", "null"], "description": "tag id"},
            "users": {
                "type": ["array", "null"],
                "items": _INT,
                "description": "the users it was addressed to, besides the tag's",
            },
            "message": _TEXT,
            "data": {"type": "object"},
            "priority": {"type": "string", "enum": ["low", "normal", "high"]},
            "group_key": {"type": ["string", "null"]},
            "group_window": {**_INT, "description": "seconds"},
            "send_at": _WHEN,
            "delivered_at": {**_WHEN, "description": "null while it waits for send_at"},
            "expires_at": _WHEN,
            "expired_at": {**_WHEN, "description": "when its items were marked expired"},
            "timestamp": _TIME,
            "recipients": {**_INT, "description": "inbox rows created (or updated, grouped)"},
        }
    ),
    "InboxItem": _object(
        {
            "id": {**_INT, "description": "inbox item id (not the notification's)"},
            "notification_id": _INT,
            "tag": {**_INT, "description": "tag id"},
            "tag_name": _TEXT,
            "message": _TEXT,
            "data": {"type": "object"},
            "timestamp": _TIME,
            "position": {
                **_INT,
                "description": "place in my order: 1, 2, 3, ... as items are committed",
            },
            "is_seen": _BOOL,
            "seen_at": _WHEN,
            "is_read": _BOOL,
            "read_at": _WHEN,
            "is_archived": _BOOL,
            "archived_at": _WHEN,
            "interacted_at": _WHEN,
            "action": {"type": ["string", "null"], "description": "the action clicked"},
            "priority": {"type": "string", "enum": ["low", "normal", "high"]},
            "group_key": {"type": ["string", "null"]},
            "count": {**_INT, "description": "notifications the item collects (grouping)"},
            "notification_ids": {
                "type": ["array", "null"],
                "items": _INT,
                "description": "the notifications a grouped item collects, oldest first",
            },
            "expires_at": _WHEN,
        }
    ),
    "InboxCounts": _object(
        {
            "unseen": {**_INT, "description": "in the default list (neither deleted nor archived)"},
            "unread": {**_INT, "description": "in the default list"},
            "total": {**_INT, "description": "the default list"},
            "archived": _INT,
        }
    ),
    "Updated": _object({"updated": {**_INT, "description": "items changed"}}),
    "AuditEntry": _object(
        {
            "id": _INT,
            "timestamp": _TIME,
            "resource": _TEXT,
            "object_id": _INT,
            "action": {"type": "string", "enum": ["create", "update", "delete"]},
            "changes": {
                "type": "object",
                "additionalProperties": {"type": "array", "minItems": 2, "maxItems": 2},
                "description": "field → [old, new]",
            },
            "actor": {"type": ["integer", "null"], "description": "user id; null for plain SQL"},
            "actor_key": {
                "type": ["integer", "null"],
                "description": "API key id, when the change was made with a key",
            },
        }
    ),
    "Health": _object(
        {"status": {"type": "string", "enum": ["ok", "unavailable"]}, "database": _BOOL},
        optional=("database",),
    ),
    "OpenAPI": {"type": "object", "description": "this document"},
}


_PAGE = re.compile(r"Page\[(\w+)\]")


def _ref(name: str) -> dict:
    """A reference to SCHEMAS[name], or to the page schema of `Page[<name>]`."""
    match = _PAGE.fullmatch(name)
    return {"$ref": f"#/components/schemas/{match[1] + 'Page' if match else name}"}


def _page(name: str) -> dict:
    fields: dict[str, Any] = {
        "results": {"type": "array", "items": _ref(name)},
        "next": {
            "type": ["integer", "null"],
            "description": "pass as ?before= for the next page; null on the last",
        },
    }
    if name == "InboxItem":
        fields["pinned"] = {
            "type": "array",
            "items": _ref(name),
            "description": "first page of the default list: high-priority unread items, "
            "shown above the rest (and left out of `results`)",
        }
        return _object(fields, optional=("pinned",))
    return _object(fields)


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _plain(summary: str, responses: dict[str, dict], **extra: Any) -> dict:
    return {"get": {"summary": summary, "security": [], "responses": responses, **extra}}


# Routes defined outside the API package (probes, the web page), by hand.
_OUTSIDE: dict[str, dict] = {
    "/healthz": _plain("Liveness: the process serves", {"200": _json(_ref("Health"), "alive")}),
    "/readyz": _plain(
        "Readiness: the database answers and the listener is alive",
        {"200": _json(_ref("Health"), "ready"), "503": _json(_ref("Health"), "not ready")},
    ),
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (a staff token, or CITELINK_METRICS_TOKEN)",
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "text exposition format", "content": {"text/plain": {}}},
                "401": _json(_ref("Error"), "no valid token"),
                "403": _json(_ref("Error"), "not staff"),
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


def _operation(op: Operation, path_params: list[str], settings: Settings) -> dict:
    responses: dict[str, Any] = {
        str(op.status): _json(_ref(op.response), "success")
        if op.response
        else {"description": "done"}
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
        responses[str(status)] = _json(_ref("Error"), description)

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


def build(routes: list[BaseRoute], settings: Settings) -> dict:
    """The document for `routes` (an app's), with limits from `settings`."""
    paths: dict[str, dict] = {}
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
            paths[path] = _OUTSIDE[r.path]
    schemas = dict(SCHEMAS)
    for r in routes:
        for ep in getattr(r, "endpoints", {}).values():
            if ep.operation.response and (match := _PAGE.fullmatch(ep.operation.response)):
                schemas[f"{match[1]}Page"] = _page(match[1])
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


@endpoint("This document", access="anyone", response="OpenAPI")
async def document(call: Call) -> dict:
    return build(call.request.app.routes, call.settings)
